"""What the ``python -m tornsession`` subcommands share: opening a store from its URL with a
usage error (exit 2) that says what to do, the secrets from the environment, and error text
with every password masked."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from tornsession._core import CookieStore, FileStore, MemoryStore
from tornsession.store_url import _masked, store_from_url

#: The exit status of a usage error: a bad URL, a store that cannot do what was asked, a
#: missing secret. 1 is kept for what went wrong while working (a store error, a mismatch).
USAGE = 2
FAILED = 1

#: The variable end-session reads the app's secret from unless --secret-env names another.
SECRET_ENV = "TORNSESSION_SECRET"

LISTING_STORES = "file:, sqlite:, redis:, redis+cluster:, redis+sentinel: and memcached:"


class UsageError(Exception):
    """A command cannot start: the message says what to change (exit 2)."""


def masked(text: str) -> str:
    """``text`` with every password of a URL in it replaced (errors reach terminals and logs)."""
    return _masked(text)


def missing_path(url: str) -> Path | None:
    """The folder or database a ``file:`` or ``sqlite:`` URL names when it does not exist
    (opening the store would make it), else None."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("file", "sqlite") or parts.netloc:
        return None  # not a local store, or a URL store_from_url refuses with its own message
    path = Path(urllib.parse.unquote(parts.path))
    # A relative path is store_from_url's to refuse, with its own message.
    return path if path.is_absolute() and not path.exists() else None


def open_store(url: str, what: str, revocation: bool = False, existing: bool = True) -> Any:
    """The store ``url`` names, for the command ``what``; UsageError for a URL that is wrong or
    names a store whose records live only in one process or in cookies (``revocation``: a
    ``cookie:`` store with a revocation store is taken, which can end a user's sessions). With
    ``existing``, a ``file:`` or ``sqlite:`` store must exist already: a mistyped path would
    otherwise be a new, empty store, and "0 sessions" the answer."""
    missing = missing_path(url) if existing else None
    if missing is not None:
        raise UsageError(
            f"{what}: {missing} does not exist (a mistyped path?); a command reads an existing "
            "store, it never makes one"
        )
    try:
        store = store_from_url(url)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if isinstance(store, MemoryStore):
        raise UsageError(
            f"{what}: memory: holds the sessions of the process that made it, and this command "
            f"runs in a process of its own; name the store your app uses ({LISTING_STORES})"
        )
    if isinstance(store, CookieStore):
        if revocation and store.revocation is not None:
            return store
        if revocation:
            raise UsageError(
                f"{what}: a cookie: store ends a user's sessions through its revocation store: "
                "give the app's whole URL, cookie:?revocation=<the revocation store's URL>"
            )
        raise UsageError(
            f"{what}: cookie: keeps sessions in the visitors' browsers, where no command can "
            f"reach them; it works on stores that keep records ({LISTING_STORES})"
        )
    return store


def check_idle_timeout(value: float | None, stores: list[Any], what: str) -> None:
    """A FileStore keeps no expiry of its own (a file's modification time is its last use and
    the app's idle_timeout decides), so a command that moves or counts its live sessions needs
    the app's idle timeout."""
    if value is not None:
        if not 0 < value < float("inf"):
            raise UsageError(f"{what}: --idle-timeout must be a positive number of seconds")
        return
    if any(isinstance(store, FileStore) for store in stores):
        raise UsageError(
            f"{what}: a file: store keeps no expiry of its own (a session file's modification "
            "time is its last use): give --idle-timeout SECONDS, the idle_timeout your app's "
            "manager uses"
        )


def secrets_from_env(name: str) -> str | list[str | bytes]:
    """The app's secret(s) from the environment variable ``name``: one secret as it is, or, for
    a rotation, a JSON list of secrets, newest first (``["new", "old"]``), as
    ``SessionManager(secret=[new, old])`` takes them."""
    value = os.environ.get(name)
    if value is None or value == "":
        raise UsageError(
            f"the app's secret is read from the environment variable {name}, which is not set "
            f"(export {name}=... first; a rotation's secrets as a JSON list, newest first: "
            f'{name}=\'["new", "old"]\'); it is never taken from the command line, where '
            "other users see it in ps"
        )
    if not value.lstrip().startswith("["):
        return value
    try:
        listed = json.loads(value)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{name} starts with '[' but is not a JSON list of secrets ({error.msg}); write "
            f'it as \'["new", "old"]\''
        ) from None
    if not (isinstance(listed, list) and listed and all(isinstance(s, str) and s for s in listed)):
        raise UsageError(f"{name} must list one or more non-empty secrets as JSON strings")
    return list(listed)


def fail(error: BaseException | str, status: int) -> int:
    """Prints ``error: ...`` (passwords masked) to stderr; the exit status."""
    print(f"error: {masked(str(error))}", file=sys.stderr)
    return status
