"""``python -m tornsession COMMAND ...``: the operating commands, one per store chore.

- ``cleanup SESSION_DIR --idle-timeout S``: delete a FileStore's expired files
  (``tornsession.cleanup``).
- ``migrate [options] SESSION_DIR``: convert the original session.py's pickled files
  (``tornsession.migrate``); ``migrate [options] --from memcached://...``: the pickles an app's
  copy kept in memcached.
- ``end-user URL USER_ID``: end every session of a user.
- ``end-session URL HASHED_ID``: end one session by the id ``user_sessions()`` lists; the app's
  secret comes from ``$TORNSESSION_SECRET`` (a JSON list of secrets for a rotation, newest
  first), never from the command line.
- ``stats URL``: count the live sessions, their bytes, ages and owners.
- ``copy --from URL --to URL``: move the live sessions to another store without logging anybody
  out; safe to run while the app serves, resumable, verified.

URLs are ``store_from_url``'s (README, "Store URLs"). Exit status: 0 done, 1 something failed
(a store error, a session not copied), 2 a usage error (a bad URL, a store that cannot do it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tornsession import _cli_copy, _cli_sessions, _cli_stats, cleanup, migrate

#: Commands that are whole programs of their own, handed their arguments untouched.
DELEGATED: dict[str, Callable[[list[str], str], int]] = {
    "cleanup": cleanup.main,
    "migrate": migrate.main,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m tornsession",
        description="Operate on the sessions of a tornsession store.",
        epilog="Run 'python -m tornsession COMMAND --help' for a command's options.",
    )
    commands = top.add_subparsers(title="commands", metavar="COMMAND")
    # Listed for --help only: main() hands their arguments to their own parsers.
    commands.add_parser("cleanup", help="delete a FileStore's expired session files")
    commands.add_parser("migrate", help="convert the original session.py's pickled files")
    _cli_sessions.add_parsers(commands)
    _cli_stats.add_parser(commands)
    _cli_copy.add_parser(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in DELEGATED:
        command = arguments[0]
        return DELEGATED[command](arguments[1:], f"python -m tornsession {command}")
    args = parser().parse_args(arguments)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser().print_help(sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
