"""Test helpers for apps that use tornsession, and a pytest plugin with fixtures.

Installed as a pytest plugin (entry point ``pytest11``), so after ``pip install tornsession``
every test suite has the fixtures below, with no ``conftest.py`` line:

- ``tornsession_secret``: a random session secret, new for every test.
- ``tornsession_manager``: a ``TornadoSessionManager`` on a fresh ``MemoryStore`` with that secret.

The helpers work with or without pytest (``tornado.testing.AsyncHTTPTestCase`` included):

- :func:`make_manager`: what the ``tornsession_manager`` fixture returns, for unittest classes.
- :func:`session_cookies`: store a session holding ``data`` and return a ``Cookie:`` header
  value that opens it, signed as Tornado signs cookies.
- :func:`session_headers` / :func:`logged_in`: the same as a ``{"Cookie": ...}`` headers dict
  for ``AsyncHTTPTestCase.fetch(url, headers=...)``.
- :func:`read_session`: the stored data of the session a response's (or a header's) cookies name.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, Union

import pytest
import tornado.httpclient
import tornado.httputil
import tornado.web

from tornsession import MemoryStore, SessionManager, TornadoSessionManager

__all__ = [
    "CookieSecret",
    "logged_in",
    "make_manager",
    "new_secret",
    "read_session",
    "session_cookies",
    "session_headers",
    "tornsession_manager",
    "tornsession_secret",
]

#: An ``Application``, or its ``cookie_secret`` setting (a str/bytes, or a dict of versioned keys).
CookieSecret = Union[tornado.web.Application, str, bytes, dict[int, str], dict[int, bytes]]

_Secret = Union[str, bytes, dict[int, str], dict[int, bytes]]

#: Everything :func:`read_session` reads cookies from.
CookieSource = Union[
    str,
    Mapping[str, str],
    tornado.httputil.HTTPHeaders,
    tornado.httpclient.HTTPResponse,
]

DEFAULT_COOKIE_NAME = "session_id"
DEFAULT_DIGEST_COOKIE_NAME = "hmac_digest"


def new_secret() -> str:
    """A random session secret (64 hex digits from the OS CSPRNG)."""
    return secrets.token_hex(32)


def make_manager(secret: str | None = None, **options: Any) -> TornadoSessionManager:
    """A ``TornadoSessionManager`` on a new, empty ``MemoryStore``.

    ``secret`` defaults to a random one; ``options`` are the manager's keyword options
    (``cookie_name``, ``idle_timeout`` ...). ``store`` may be given to use another store.
    """
    options.setdefault("store", MemoryStore())
    return TornadoSessionManager(secret if secret is not None else new_secret(), **options)


def _cookie_secret(app_or_cookie_secret: CookieSecret) -> _Secret:
    """The application's ``cookie_secret`` setting, or the secret itself."""
    if not isinstance(app_or_cookie_secret, tornado.web.Application):
        return app_or_cookie_secret
    secret: _Secret | None = app_or_cookie_secret.settings.get("cookie_secret")
    if not secret:
        raise ValueError("the application has no cookie_secret setting: signed cookies need one")
    return secret


def _signing_key(
    app_or_cookie_secret: CookieSecret,
) -> tuple[_Secret, int | None]:
    """The cookie secret and, for a dict of versioned secrets, the key version to sign with."""
    secret = _cookie_secret(app_or_cookie_secret)
    key_version: int | None = None
    if isinstance(app_or_cookie_secret, tornado.web.Application):
        key_version = app_or_cookie_secret.settings.get("key_version")
    if isinstance(secret, dict) and key_version is None:
        raise ValueError(
            "a dict of cookie secrets needs the key_version to sign with: pass the Application "
            "(with its key_version setting)"
        )
    return secret, key_version


def session_cookies(
    app_or_cookie_secret: CookieSecret,
    manager: SessionManager,
    data: Mapping[str, Any],
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    digest_cookie_name: str = DEFAULT_DIGEST_COOKIE_NAME,
) -> str:
    """Stores a new session holding ``data`` and returns a ``Cookie:`` header value naming it.

    The session is made and stored through the manager's public API (``manager.get()``, item
    assignment, ``SessionManager.set``); both cookies are signed exactly as Tornado's
    ``set_signed_cookie`` signs them, with the application's ``cookie_secret`` (pass the
    ``Application`` or the secret itself). Pass ``cookie_name`` / ``digest_cookie_name`` when
    the manager was built with other cookie names.
    """
    secret, key_version = _signing_key(app_or_cookie_secret)
    session = manager.get()
    for key, value in data.items():
        session[key] = value
    SessionManager.set(manager, session)
    pairs = []
    for name, value in (
        (cookie_name, session.session_id),
        (digest_cookie_name, session.hmac_digest),
    ):
        signed = tornado.web.create_signed_value(secret, name, value, key_version=key_version)
        pairs.append(f"{name}={signed.decode('ascii')}")
    return "; ".join(pairs)


def session_headers(
    app_or_cookie_secret: CookieSecret,
    manager: SessionManager,
    data: Mapping[str, Any],
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    digest_cookie_name: str = DEFAULT_DIGEST_COOKIE_NAME,
) -> dict[str, str]:
    """``{"Cookie": session_cookies(...)}``: headers for a request in a session holding ``data``."""
    return {
        "Cookie": session_cookies(
            app_or_cookie_secret,
            manager,
            data,
            cookie_name=cookie_name,
            digest_cookie_name=digest_cookie_name,
        )
    }


def logged_in(
    app_or_cookie_secret: CookieSecret,
    manager: SessionManager,
    user: Any,
    *,
    key: str = "user",
    extra: Mapping[str, Any] | None = None,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    digest_cookie_name: str = DEFAULT_DIGEST_COOKIE_NAME,
) -> dict[str, str]:
    """Headers for a request by a logged-in visitor: a session holding ``{key: user, **extra}``.

    For ``AsyncHTTPTestCase``: ``self.fetch("/profile", headers=logged_in(app, manager, "ann"))``.
    """
    data = {key: user, **(extra or {})}
    return session_headers(
        app_or_cookie_secret,
        manager,
        data,
        cookie_name=cookie_name,
        digest_cookie_name=digest_cookie_name,
    )


def _cookie_values(cookies: CookieSource) -> dict[str, str]:
    """Cookie name to raw value: Set-Cookie headers of a response, or a Cookie header."""
    jar: SimpleCookie = SimpleCookie()
    if isinstance(cookies, tornado.httpclient.HTTPResponse):
        # The cookies the request carried, overridden by any the response set: tornsession
        # sends cookies only when they change (a new or regenerated session).
        sent = cookies.request.headers.get("Cookie", "")
        received = _cookie_values(cookies.headers)
        return {**(_cookie_values(sent) if sent else {}), **received}
    try:
        if isinstance(cookies, tornado.httputil.HTTPHeaders):
            for header in cookies.get_list("Set-Cookie"):
                jar.load(header)
        elif isinstance(cookies, str):
            jar.load(cookies)
        else:
            jar.load(cookies.get("Cookie", ""))
    except CookieError as error:
        raise ValueError(f"cannot parse the cookies: {error}") from None
    return {name: morsel.value for name, morsel in jar.items()}


def read_session(
    app_or_cookie_secret: CookieSecret,
    manager: SessionManager,
    cookies: CookieSource,
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    digest_cookie_name: str = DEFAULT_DIGEST_COOKIE_NAME,
) -> dict[str, Any]:
    """The stored data of the session that ``cookies`` name, as a plain dict.

    ``cookies`` is a response (``HTTPResponse``: the cookies its request sent, updated by its
    ``Set-Cookie`` headers), its ``HTTPHeaders`` (``Set-Cookie`` only), a ``Cookie:`` header
    value (what :func:`session_cookies` returns) or a headers dict with a ``"Cookie"`` entry (what
    :func:`logged_in` returns). Raises ``LookupError`` when the cookies are missing (the handler
    did not save the session) or do not verify.
    """
    values = _cookie_values(cookies)
    secret = _cookie_secret(app_or_cookie_secret)
    found: dict[str, str] = {}
    for name in (cookie_name, digest_cookie_name):
        raw = values.get(name)
        if not raw:
            raise LookupError(
                f"no {name!r} cookie in {type(cookies).__name__}: was the session saved?"
            )
        decoded = tornado.web.decode_signed_value(secret, name, raw)
        if decoded is None:
            raise LookupError(f"the {name!r} cookie is not signed with this cookie_secret")
        found[name] = decoded.decode("utf-8")
    session = SessionManager.get(manager, found[cookie_name], found[digest_cookie_name])
    return dict(session)


@pytest.fixture
def tornsession_secret() -> str:
    """A random session secret, new for every test."""
    return new_secret()


@pytest.fixture
def tornsession_manager(tornsession_secret: str) -> TornadoSessionManager:
    """A ``TornadoSessionManager`` on a fresh ``MemoryStore``, keyed with ``tornsession_secret``."""
    return make_manager(tornsession_secret)
