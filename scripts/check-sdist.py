"""Checks that an sdist holds what building tornsession from it needs (no build: seconds)."""

from __future__ import annotations

import sys
import tarfile

REQUIRED = [
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "crates/core/Cargo.toml",
    "crates/core/src/lib.rs",
    "crates/py/Cargo.toml",
    "crates/py/src/lib.rs",
    "python/tornsession/__init__.py",
    "python/tornsession/_core.pyi",
    "python/tornsession/py.typed",
    "PKG-INFO",
]


def main(path: str) -> int:
    with tarfile.open(path) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        print(f"{path} lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{path}: {len(names)} files, all of {len(REQUIRED)} required ones present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
