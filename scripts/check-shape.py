"""Checks the shape the code keeps (README, Layout): no source file over 700 lines (a Rust file
counted up to its `#[cfg(test)]` module; the compiled module's stub, 800), and no import cycle
between the top-level modules of either crate or of the Python package. The crates' own arrow
(crates/py uses crates/core, never the other way) the compiler holds; this holds the arrows
inside each.

    python scripts/check-shape.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 700
# The compiled module's stub is one file by necessity: stubtest checks it against the module as a
# whole, so it cannot be split by concept as a source file can.
MAX_STUB_LINES = 800


def max_lines(path: Path) -> int:
    return MAX_STUB_LINES if path.name == "_core.pyi" else MAX_LINES


SOURCES = ["crates", "python", "tests", "bench", "scripts", "examples"]


def counted_lines(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").split("\n")
    if path.suffix == ".rs":
        for number, line in enumerate(lines):
            if line.startswith("#[cfg(test)]"):
                return number
    return len(lines)


def source_files() -> Iterable[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in sorted(tracked):
        path = ROOT / name
        if path.suffix in {".rs", ".py", ".pyi"} and path.is_file():
            yield path


def rust_module_of(src: Path, path: Path) -> str:
    """The top-level module a file of a crate belongs to (`stores` for src/stores/redis/x.rs)."""
    first = path.relative_to(src).parts[0]
    return first.removesuffix(".rs")


def rust_edges(src: Path) -> dict[str, set[str]]:
    modules = {rust_module_of(src, p) for p in src.rglob("*.rs")} - {"lib"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for path in src.rglob("*.rs"):
        here = rust_module_of(src, path)
        if here == "lib":
            continue
        text = path.read_text(encoding="utf-8").split("\n#[cfg(test)]")[0]
        # `crate::x`, and `crate::{x, y::z}` groups.
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names |= {part.strip().split("::")[0] for part in group.split(",")}
        edges[here] |= (names & modules) - {here}
    return edges


def python_edges(package: Path) -> dict[str, set[str]]:
    modules = {p.stem for p in package.glob("*.py")} | {"_core"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    name = package.name
    for path in package.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = set(re.findall(rf"^\s*from {name}\.(\w+) import", text, re.M))
        found |= set(re.findall(rf"^\s*import {name}\.(\w+)", text, re.M))
        found |= set(re.findall(r"^\s*from \.(\w+) import", text, re.M))
        # `from tornsession import (a, b)`: the names that are modules; `import tornsession`:
        # the package itself, that is `__init__`.
        for group in re.findall(
            rf"^\s*from {name} import (?:\(([\w\s,]*)\)|([\w ,]*)$)", text, re.M
        ):
            names = {part.strip() for part in "".join(group).split(",")} - {""}
            found |= names & modules
            if names - modules:
                found.add("__init__")
        if re.search(rf"^\s*import {name}\s*$", text, re.M):
            found.add("__init__")
        edges[path.stem] |= (found & modules) - {path.stem}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in trail:
                loop = trail[trail.index(nxt) :]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append([*loop, nxt])
            else:
                walk(nxt, [*trail, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def main() -> int:
    problems = [
        f"{path.relative_to(ROOT)}: {n} lines (at most {max_lines(path)})"
        for path in source_files()
        if (n := counted_lines(path)) > max_lines(path)
    ]
    graphs = {
        "crates/core": rust_edges(ROOT / "crates/core/src"),
        "crates/py": rust_edges(ROOT / "crates/py/src"),
        "python/tornsession": python_edges(ROOT / "python/tornsession"),
    }
    for where, edges in graphs.items():
        problems += [f"{where}: import cycle {' -> '.join(loop)}" for loop in cycles(edges)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"shape: no file over {MAX_LINES} lines, no import cycle in {', '.join(graphs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
