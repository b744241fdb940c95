"""Test helpers for apps that use tornsession, and a pytest plugin with fixtures.

Everything here works without pytest (``unittest``, ``tornado.testing.AsyncHTTPTestCase``); only
the fixtures need it. The test client:

- :class:`AppServer`: serves a Tornado ``Application`` on 127.0.0.1 in a background thread (its
  own IOLoop), so plain synchronous tests can talk HTTP to it.
- :class:`SessionTestClient`: a client with a cookie jar that follows the app across requests
  (redirects included), like a browser. ``client.session`` reads the stored session the cookies
  name, ``with client.session_transaction() as session:`` edits it (Flask style),
  ``client.login(user)`` puts a user in it (Django's ``force_login``), and
  ``client.assert_session_destroyed()`` tells a destroyed session from an empty one.

The helpers for ``AsyncHTTPTestCase`` (the app served by the test case itself):

- :func:`make_manager`: what the ``tornsession_manager`` fixture returns, for unittest classes.
- :func:`session_cookies`: store a session holding ``data`` and return a ``Cookie:`` header
  value that opens it, signed as Tornado signs cookies.
- :func:`session_headers` / :func:`logged_in`: the same as a ``{"Cookie": ...}`` headers dict
  for ``AsyncHTTPTestCase.fetch(url, headers=...)``.
- :func:`read_session`: the stored data of the session a response's (or a header's) cookies name.
- :func:`session_manager_of`: an application's manager, typed (``mypy --strict``).

Installed as a pytest plugin (entry point ``pytest11``, ``tornsession._pytest_plugin``, which
registers the fixtures defined here), so after ``pip install tornsession`` every test suite has
these fixtures, with no ``conftest.py`` line:

- ``tornsession_secret``: a random session secret, new for every test.
- ``tornsession_manager``: a ``TornadoSessionManager`` on a fresh ``MemoryStore`` with that secret.
- ``tornsession_serve``: ``client = tornsession_serve(app)`` serves ``app`` for the test and
  returns a :class:`SessionTestClient` for it.
- ``tornsession_client``: the same for the ``app`` fixture the test suite defines.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json as jsonlib
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import Message
from http.cookies import CookieError, SimpleCookie
from types import TracebackType
from typing import Any, TypeAlias

import tornado.httpclient
import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from tornsession import (
    InvalidSessionException,
    MemoryStore,
    Session,
    SessionManager,
    TornadoSessionManager,
)
from tornsession.application import session_manager_of

__all__ = [
    "AppServer",
    "CookieSecret",
    "Response",
    "SessionNotFound",
    "SessionTestClient",
    "logged_in",
    "make_manager",
    "new_secret",
    "read_session",
    "session_cookies",
    "session_headers",
    "session_manager_of",
    "tornsession_client",
    "tornsession_manager",
    "tornsession_secret",
    "tornsession_serve",
]

CookieSecret: TypeAlias = tornado.web.Application | str | bytes | dict[int, str] | dict[int, bytes]
"""An ``Application``, or its ``cookie_secret`` setting (a str/bytes, or a dict of versioned
keys)."""

_Secret: TypeAlias = str | bytes | dict[int, str] | dict[int, bytes]

CookieSource: TypeAlias = (
    str | Mapping[str, str] | tornado.httputil.HTTPHeaders | tornado.httpclient.HTTPResponse
)
"""Everything :func:`read_session` reads cookies from: a ``Cookie`` header, a dict of cookies,
a request's or a response's headers, or a response."""

DEFAULT_COOKIE_NAME = "session_id"
"""The manager's default ``cookie_name``."""
DEFAULT_DIGEST_COOKIE_NAME = "hmac_digest"
"""The manager's default ``digest_cookie_name``."""


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


class AppServer:
    """Serves a Tornado ``Application`` on 127.0.0.1 (a free port) from a background thread with
    its own IOLoop, until :meth:`stop`; a context manager too."""

    def __init__(self, app: tornado.web.Application, *, host: str = "127.0.0.1") -> None:
        self.app = app
        """The application served."""
        self.host = host
        """The address it listens on."""
        self.port = 0
        """The port it listens on (0 until :meth:`start`)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AppServer:
        """Binds a free port and serves; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already serving")
        sockets = tornado.netutil.bind_sockets(0, self.host)
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def listen() -> tornado.httpserver.HTTPServer:
                server = tornado.httpserver.HTTPServer(self.app)
                server.add_sockets(sockets)
                return server

            try:
                server = loop.run_until_complete(listen())
            except BaseException as error:
                failed.append(error)
                loop.close()
                ready.set()
                return
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.stop()
                loop.run_until_complete(server.close_all_connections())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"AppServer:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread = None
            raise failed[0]
        return self

    def stop(self) -> None:
        """Stops serving and closes the port; waits for the thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = None
        self._thread = None

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:PORT`` + ``path``."""
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Response:
    """What the app answered (after redirects, when followed)."""

    status: int
    """The HTTP status code."""
    headers: Message
    """The response's headers (``headers.get_all("Set-Cookie")`` for every cookie line)."""
    body: bytes
    """The body, as bytes."""
    url: str
    """The URL that answered (the last one, when redirects were followed)."""

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)


class SessionNotFound(LookupError):
    """The client's cookies name no stored session: none was saved, or it was destroyed."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class SessionTestClient:
    """An HTTP client for one app, with a cookie jar that follows the app across requests.

    ``SessionTestClient(app)`` serves the app itself (stop it with :meth:`close`, or use the
    client as a context manager); ``base_url=`` talks to an app served elsewhere. The app's
    ``cookie_secret`` signs and reads the cookies; the manager is the app's (see
    :func:`session_manager_of`) unless ``manager=`` is given. Pass ``cookie_name`` /
    ``digest_cookie_name`` when the manager was built with other cookie names.

    Reading the session goes through the manager (as a request would), so it moves an idle
    timeout's expiry like a request does.
    """

    def __init__(
        self,
        app: tornado.web.Application,
        *,
        manager: SessionManager | None = None,
        base_url: str | None = None,
        cookie_name: str = DEFAULT_COOKIE_NAME,
        digest_cookie_name: str = DEFAULT_DIGEST_COOKIE_NAME,
    ) -> None:
        self.app = app
        """The application the client talks to."""
        self.manager: SessionManager = manager if manager is not None else session_manager_of(app)
        """The manager that reads the client's session (the app's, unless given)."""
        self.cookie_name = cookie_name
        """The name of the id cookie (or of the compact cookie)."""
        self.digest_cookie_name = digest_cookie_name
        """The name of the digest cookie."""
        self._server: AppServer | None = None
        if base_url is None:
            self._server = AppServer(app).start()
            base_url = self._server.url("")
        self.base_url = base_url.rstrip("/")
        """Where requests go: ``http://127.0.0.1:PORT`` of the app it serves, or ``base_url``."""
        self.host = urllib.parse.urlsplit(self.base_url).hostname or "127.0.0.1"
        """The host of ``base_url``, which the cookies are set for."""
        self.jar = http.cookiejar.CookieJar()
        """The client's cookies, as the app set them."""
        # Never through a proxy: the app is on loopback.
        self._follow = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )
        self._stay = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirects(),
        )
        self._last_seen: tuple[str, str] | None = None
        # The session the last request replaced with another (a logout that then wrote a
        # flash message), if it did.
        self._replaced: tuple[str, str] | None = None

    # HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        timeout: float = 30.0,
    ) -> Response:
        """Sends one request (cookies from the jar, ``Set-Cookie`` answers into it)."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=dict(headers or {}), method=method
        )
        opener = self._follow if follow_redirects else self._stay
        before = self._cookie_session()
        try:
            with opener.open(request, timeout=timeout) as answer:
                response = Response(answer.status, answer.headers, answer.read(), answer.url)
        except urllib.error.HTTPError as error:
            response = Response(error.code, error.headers, error.read(), error.url)
            error.close()
        self._remember_session()
        after = self._cookie_session()
        self._replaced = before if before is not None and after not in (None, before) else None
        return response

    def get(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """``GET path``."""
        return self.request("GET", path, headers=headers, follow_redirects=follow_redirects)

    def post(
        self,
        path: str,
        data: Mapping[str, str] | bytes | str | None = None,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """``POST path`` with a form (``data`` as a mapping), raw ``data``, or ``json``."""
        sent = dict(headers or {})
        body: bytes | str | None
        if json is not None:
            body = jsonlib.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        elif isinstance(data, Mapping):
            body = urllib.parse.urlencode(data)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = data if data is not None else b""
        return self.request(
            "POST", path, body=body, headers=sent, follow_redirects=follow_redirects
        )

    @property
    def cookies(self) -> dict[str, str]:
        """The jar's cookies for the app's host, name to raw value."""
        return {c.name: c.value or "" for c in self.jar if c.domain.lstrip(".") == self.host}

    # The session

    def _cookie_session(self) -> tuple[str, str] | None:
        """(id, digest) from the jar's signed session cookies, when both are there and verify."""
        values = self.cookies
        secret = _cookie_secret(self.app)
        found: list[str] = []
        for name in (self.cookie_name, self.digest_cookie_name):
            raw = values.get(name)
            if not raw:
                return None
            decoded = tornado.web.decode_signed_value(secret, name, raw.strip('"'))
            if decoded is None:
                return None
            found.append(decoded.decode("utf-8"))
        return found[0], found[1]

    def _remember_session(self) -> None:
        named = self._cookie_session()
        if named is not None:
            self._last_seen = named

    def _stored(self, named: tuple[str, str]) -> Session | None:
        session_id, digest = named
        try:
            session = SessionManager.get(self.manager, session_id, digest)
        except InvalidSessionException:
            return None
        # A missing record (never saved, destroyed, expired) comes back as a new session.
        return session if session.session_id == session_id else None

    @property
    def has_session(self) -> bool:
        """Whether the jar's cookies name a session that is stored (empty or not)."""
        named = self._cookie_session()
        return named is not None and self._stored(named) is not None

    @property
    def session(self) -> dict[str, Any]:
        """A copy of the stored data of the session the jar's cookies name (``{}`` for a stored
        empty session). Raises :class:`SessionNotFound` when there is none: no cookies yet, or
        the session was destroyed or expired."""
        named = self._cookie_session()
        if named is None:
            raise SessionNotFound("no signed session cookies in the jar: was a session saved?")
        stored = self._stored(named)
        if stored is None:
            raise SessionNotFound("the cookies name a session that is not stored (destroyed?)")
        return dict(stored)

    @contextmanager
    def session_transaction(self) -> Iterator[dict[str, Any]]:
        """Edits the stored session: ``with client.session_transaction() as session:
        session["user"] = "ann"``. The dict holds the stored data (a new session when the jar
        names none: its cookies are put in the jar); it is stored when the block ends without
        an exception."""
        named = self._cookie_session()
        stored = self._stored(named) if named is not None else None
        session = stored if stored is not None else SessionManager.get(self.manager)
        data = dict(session)
        yield data
        session.clear()
        session.update(data)
        SessionManager.set(self.manager, session)
        if stored is None:
            self._put_cookies(session)
        self._remember_session()

    def login(self, user: Any, *, key: str = "user", **extra: Any) -> None:
        """Puts ``user`` (and ``extra`` items) in the session, as the app's log-in would:
        the next request is by a logged-in visitor."""
        with self.session_transaction() as session:
            session[key] = user
            session.update(extra)

    def logout(self) -> None:
        """Forgets every cookie (the stored session stays as it is)."""
        self.jar.clear()

    def assert_session_destroyed(self) -> None:
        """Fails unless the last session the client saw is gone from the store (destroyed, not
        merely emptied) and the jar no longer names it."""
        if self._last_seen is None:
            raise AssertionError("the client never had a session")
        # The last request may have replaced the session with a new one (a logout that then
        # wrote a flash message): the destroyed one is the one it replaced.
        target = self._replaced or self._last_seen
        named = self._cookie_session()
        stored = self._stored(target)
        if stored is not None:
            raise AssertionError(f"session {target[0][:8]}... is still stored: {dict(stored)!r}")
        if named is not None and named[0] == target[0]:
            raise AssertionError("the cookies still name the destroyed session")

    def _put_cookies(self, session: Session) -> None:
        secret, key_version = _signing_key(self.app)
        for name, value in (
            (self.cookie_name, session.session_id),
            (self.digest_cookie_name, session.hmac_digest),
        ):
            signed = tornado.web.create_signed_value(secret, name, value, key_version=key_version)
            self.jar.set_cookie(_cookie(self.host, name, signed.decode("ascii")))

    def close(self) -> None:
        """Stops the server this client started, if it did."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> SessionTestClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _cookie(host: str, name: str, value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(
        version=0,
        name=name,
        value=value,
        port=None,
        port_specified=False,
        domain=host,
        domain_specified=False,
        domain_initial_dot=False,
        path="/",
        path_specified=True,
        secure=False,
        expires=None,
        discard=True,
        comment=None,
        comment_url=None,
        rest={},
    )


# The fixtures need pytest; everything above does not. The pytest11 entry point is
# tornsession._pytest_plugin, which registers these (this module never imports it).
try:
    import pytest
except ModuleNotFoundError as missing:  # pragma: no cover - exercised without pytest
    if missing.name != "pytest":
        raise
else:

    @pytest.fixture
    def tornsession_secret() -> str:
        """A random session secret, new for every test."""
        return new_secret()

    @pytest.fixture
    def tornsession_manager(tornsession_secret: str) -> TornadoSessionManager:
        """A ``TornadoSessionManager`` on a fresh ``MemoryStore``, keyed with
        ``tornsession_secret``."""
        return make_manager(tornsession_secret)

    @pytest.fixture
    def tornsession_serve() -> Iterator[Callable[..., SessionTestClient]]:
        """``tornsession_serve(app, **client_options)``: serves ``app`` on 127.0.0.1 for this
        test and returns a ``SessionTestClient`` for it; every server stops when the test ends."""
        with ExitStack() as clients:  # closes every client the test made, in the end
            yield lambda app, **options: clients.enter_context(SessionTestClient(app, **options))

    @pytest.fixture
    def tornsession_client(
        app: tornado.web.Application,
        tornsession_serve: Callable[..., SessionTestClient],
    ) -> SessionTestClient:
        """A ``SessionTestClient`` serving the ``app`` fixture your test suite defines."""
        return tornsession_serve(app)
