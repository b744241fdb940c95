"""``python -m tornsession end-user URL USER_ID`` and ``end-session URL HASHED_ID``: end a user's
sessions, or one session, in the store a URL names, from outside the app (a stolen laptop, an
account closed by support)."""

from __future__ import annotations

import argparse
import secrets

from tornsession._cli_common import (
    FAILED,
    SECRET_ENV,
    USAGE,
    UsageError,
    fail,
    open_store,
    secrets_from_env,
)
from tornsession._core import CookieStore, MemcachedStore, SessionManager, SessionStoreError


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    end_user = commands.add_parser(
        "end-user",
        help="end every session of a user",
        description="End every session USER_ID owns (set_user) in the store URL names. No "
        "secret is needed: the user index is not keyed.",
    )
    end_user.add_argument("url", metavar="URL", help="the store URL your app uses")
    end_user.add_argument("user_id", metavar="USER_ID", help="the id given to set_user()")
    end_user.set_defaults(run=end_user_main)

    end_session = commands.add_parser(
        "end-session",
        help="end one session by its hashed id",
        description="End the session a hashed id (SessionInfo.id, as user_sessions() lists "
        f"it) names. The id is keyed by your app's secret, read from ${SECRET_ENV} (or the "
        "variable --secret-env names), never from the command line, where ps shows it. For a "
        'rotation give a JSON list, newest first: ["new", "old"].',
    )
    end_session.add_argument("url", metavar="URL", help="the store URL your app uses")
    end_session.add_argument("hashed_id", metavar="HASHED_ID", help="a SessionInfo.id")
    end_session.add_argument(
        "--secret-env",
        default=SECRET_ENV,
        metavar="NAME",
        help=f"the environment variable holding the secret (default {SECRET_ENV})",
    )
    end_session.set_defaults(run=end_session_main)


def end_user_main(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.url, "end-user", revocation=True)
    except UsageError as error:
        return fail(error, USAGE)
    # The user index key is not keyed by the secret: any secret finds the user's sessions.
    manager = SessionManager(secrets.token_hex(32), store=store)
    try:
        ended = manager.destroy_user_sessions(args.user_id)
    except NotImplementedError as error:
        return fail(error, USAGE)
    except SessionStoreError as error:
        return fail(error, FAILED)
    if isinstance(store, (MemcachedStore, CookieStore)):
        # Neither can list a user's sessions: the user's generation moved on instead.
        kind = "memcached" if isinstance(store, MemcachedStore) else "a cookie: store"
        print(
            f"ended the sessions of user {args.user_id!r}: {kind} cannot count them; each "
            "one ends as it is next loaded"
        )
    else:
        print(f"ended {ended} session{'' if ended == 1 else 's'} of user {args.user_id!r}")
    return 0


def end_session_main(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.url, "end-session")
        secret = secrets_from_env(args.secret_env)
        manager = SessionManager(secret, store=store)
    except UsageError as error:
        return fail(error, USAGE)
    except (ValueError, TypeError) as error:
        return fail(f"the secret in {args.secret_env}: {error}", USAGE)
    try:
        ended = manager.destroy_session(args.hashed_id)
    except NotImplementedError as error:
        return fail(f"end-session: {error}; end-user ends all of a user's sessions", USAGE)
    except SessionStoreError as error:
        return fail(error, FAILED)
    if ended:
        print(f"ended session {args.hashed_id}")
        return 0
    print(
        f"no session has the hashed id {args.hashed_id!r} (ended already, expired, or "
        f"hashed with another secret than the one in {args.secret_env})"
    )
    return FAILED
