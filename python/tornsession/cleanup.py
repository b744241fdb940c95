"""``python -m tornsession cleanup SESSION_DIR --idle-timeout SECONDS`` (or, as before,
``python -m tornsession.cleanup``)

Deletes the FileStore session files in SESSION_DIR unused for longer than the idle timeout (a
file's modification time is its last use) and temporary files a crash left behind. Run it from
cron; the app itself never reads an expired file either way.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from tornsession._core import FileStore, SessionStoreError


def main(argv: list[str] | None = None, prog: str = "python -m tornsession.cleanup") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Delete expired tornsession FileStore sessions.",
    )
    parser.add_argument("session_dir", type=Path, help="the FileStore folder (session_dir)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        required=True,
        metavar="SECONDS",
        help="the idle_timeout your app's manager uses",
    )
    args = parser.parse_args(argv)
    if not args.session_dir.is_dir():
        print(f"error: {args.session_dir} is not a folder", file=sys.stderr)
        return 2
    if not (args.idle_timeout > 0 and math.isfinite(args.idle_timeout)):
        print("error: --idle-timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        expired, stale = FileStore(args.session_dir).cleanup(args.idle_timeout)
    except ValueError as error:
        print(f"error: --idle-timeout: {error}", file=sys.stderr)
        return 2
    except SessionStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"deleted {expired} expired sessions and {stale} stale temporary files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
