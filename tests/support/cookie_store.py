"""What the ``CookieStore`` tests share: the in-process app (both API styles) on its own IOLoop,
a real ``RequestHandler`` without a socket for the manager API, and reading the sealed cookie
out of responses."""

from __future__ import annotations

import asyncio
import http.client
import re
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import tornado.web
import tornsession
from tornado.httputil import HTTPConnection, HTTPHeaders, HTTPServerRequest, RequestStartLine

from support.browser import Browser
from support.engine_app import STYLES, Server

SECRET = "cookie-store-test-secret-of-32-bytes-or-more"
OLD_SECRET = "cookie-store-old-secret-of-32-bytes-or-more"
#: The sealed value: ``v1.`` and base64url without padding.
SEALED = re.compile(r"^v1\.[A-Za-z0-9_-]+$")
#: The longest ``Set-Cookie: name=value; attributes`` line a browser keeps.
MAX_LINE = 4096


def cookie_store(revocation: Any = None) -> Any:
    """``tornsession.CookieStore(revocation=...)``."""
    store: Any = tornsession.CookieStore(revocation=revocation)  # type: ignore[attr-defined,unused-ignore]
    return store


def routes(base: type) -> list[tuple[str, type]]:
    """The handlers of the cookie store tests on ``base`` (``STYLES``: drop-in or mixin)."""

    class Inc(base):  # type: ignore[misc]
        def get(self) -> None:
            self.session["n"] = self.session.get("n", 0) + 1
            self.commit()
            self.write({"n": self.session["n"], "id": self.session.session_id})

    class Peek(base):  # type: ignore[misc]
        def get(self) -> None:
            self.write(
                {
                    "id": self.session.session_id,
                    "n": self.session.get("n"),
                    "user": self.session.user_id,
                    "data": dict(self.session),
                }
            )

    class Touch(Peek):
        """Reads, and saves with nothing changed (the drop-in's explicit save())."""

        def get(self) -> None:
            super().get()
            self.commit()

    class Put(base):  # type: ignore[misc]
        def post(self) -> None:
            self.session[self.get_argument("key")] = self.get_argument("value")
            self.commit()

    class Fill(base):  # type: ignore[misc]
        def post(self) -> None:
            self.session["blob"] = "x" * int(self.get_argument("size"))
            try:
                self.commit()
            except ValueError as error:  # the drop-in's save() raises it in the handler
                self.set_status(413)
                self.write({"error": str(error)})

    class Logout(base):  # type: ignore[misc]
        async def post(self) -> None:
            await self.logout()

    class Regenerate(base):  # type: ignore[misc]
        async def post(self) -> None:
            await self.regenerate()
            self.commit()

    class Login(base):  # type: ignore[misc]
        async def post(self) -> None:
            await self.regenerate()
            self.session.set_user(self.get_argument("user"))
            self.session["n"] = self.session.get("n", 0)
            self.commit()

    class Others(base):  # type: ignore[misc]
        def post(self) -> None:
            user, manager = self.session.user_id, self.application.session_manager
            if user is None:  # ended meanwhile (the racing tests)
                raise tornado.web.HTTPError(403)
            ended = manager.destroy_user_sessions(user, keep=self.session)
            self.commit()
            self.write({"ended": ended})

    class Everywhere(base):  # type: ignore[misc]
        def post(self) -> None:
            user, manager = self.session.user_id, self.application.session_manager
            if user is None:  # ended meanwhile (the racing tests)
                raise tornado.web.HTTPError(403)
            self.write({"ended": manager.destroy_user_sessions(user)})

    class Slow(base):  # type: ignore[misc]
        async def get(self) -> None:
            n = self.session.get("n", 0)
            await asyncio.sleep(0.005)
            self.session["n"] = n + 1
            self.commit()
            self.write({"n": n + 1})

    return [
        (r"/inc", Inc),
        (r"/peek", Peek),
        (r"/touch", Touch),
        (r"/put", Put),
        (r"/fill", Fill),
        (r"/logout", Logout),
        (r"/regenerate", Regenerate),
        (r"/login", Login),
        (r"/others", Others),
        (r"/everywhere", Everywhere),
        (r"/slow", Slow),
    ]


def serve_cookie_store() -> Iterator[Callable[..., Server]]:
    """A fixture's body: ``start(style, secret=SECRET, revocation=None, **options)`` serves the
    routes above on a CookieStore manager (no ``cookie_secret``: the sealed cookie needs none)."""
    servers: list[Server] = []

    def start(style: str, secret: Any = SECRET, revocation: Any = None, **options: Any) -> Server:
        store = cookie_store(revocation)
        manager = tornsession.TornadoSessionManager(secret, store=store, **options)
        app = tornado.web.Application(routes(STYLES[style]))
        app.session_manager = manager  # type: ignore[attr-defined]
        server = Server(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def sent(browser: Browser, name: str = "session_id") -> str | None:
    """The value the last response set for cookie ``name`` ('' when it cleared it), or None."""
    for header in browser.last_set_cookie:
        for cookie_name, morsel in SimpleCookie(header).items():
            if cookie_name == name:
                expired = bool(morsel["expires"]) and "1970" in morsel["expires"]
                return "" if expired or morsel.value in ("", '""') else morsel.value
    return None


def set_cookie_line(browser: Browser, name: str = "session_id") -> str:
    """The whole ``Set-Cookie: ...`` line the last response sent for cookie ``name``."""
    lines = [h for h in browser.last_set_cookie if h.startswith(f"{name}=")]
    assert len(lines) == 1, browser.last_set_cookie
    return f"Set-Cookie: {lines[0]}"


def peek(browser: Browser) -> dict[str, Any]:
    return browser.get_json("/peek")


class FakeConnection(HTTPConnection):
    """What RequestHandler.__init__ needs of a connection: nothing is ever sent."""

    def set_close_callback(self, callback: Any) -> None:
        pass


class Plain(tornado.web.RequestHandler):
    pass


APP = tornado.web.Application([])


def handler(cookies: dict[str, str] | None = None) -> tornado.web.RequestHandler:
    """Tornado's real RequestHandler for a GET carrying ``cookies``, without a socket: what
    ``manager.get(handler)`` and ``manager.set(handler, session)`` are given in a request."""
    headers = HTTPHeaders({"Host": "127.0.0.1"})
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    start_line = RequestStartLine("GET", "/", "HTTP/1.1")
    request = HTTPServerRequest(start_line=start_line, headers=headers, connection=FakeConnection())
    return Plain(APP, request)


def new_cookie(made: tornado.web.RequestHandler, name: str = "session_id") -> str | None:
    """The value ``made`` set for cookie ``name`` (its response's), or None."""
    jar: SimpleCookie | None = getattr(made, "_new_cookie", None)
    if jar is None or name not in jar:
        return None
    return jar[name].value


def sealed_session(
    manager: tornsession.TornadoSessionManager, name: str = "session_id", **items: Any
) -> tuple[str, str]:
    """A new session of ``manager`` holding ``items``, saved: (its cookie value, its id)."""
    made = handler()
    session = manager.get(made)
    session.update(items)
    manager.set(made, session)
    value = new_cookie(made, name)
    assert value is not None and SEALED.match(value), value
    return value, session.session_id


def fits(manager: tornsession.TornadoSessionManager, size: int) -> bool:
    """Whether a new session of ``manager`` holding ``"x" * size`` under "blob" can be saved."""
    made = handler()
    session = manager.get(made)
    session["blob"] = "x" * size
    try:
        manager.set(made, session)
    except ValueError:
        return False
    return True


def largest_blob_size(manager: tornsession.TornadoSessionManager) -> int:
    """The longest ``"x" * size`` under "blob" a session of ``manager`` can hold."""
    low, high = 0, MAX_LINE
    assert fits(manager, low) and not fits(manager, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(manager, middle) else (low, middle)
    return low


def raw_get(
    port: int, path: str, cookie: str | None, **headers: str
) -> tuple[int, bytes, list[str]]:
    """One GET on a new connection: status, body and every Set-Cookie header."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        if cookie is not None:
            headers["Cookie"] = cookie
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.headers.get_all("Set-Cookie") or []
    finally:
        connection.close()


def login(browser: Browser, user: str) -> dict[str, Any]:
    status, text = browser.request("POST", f"/login?user={user}", "")
    assert status == 200, text
    return peek(browser)
