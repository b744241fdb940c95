"""The id cookie of a `CookieStore` (and of `cookie_format="compact"`) is put in the handler's
cookie jar without Tornado's `set_cookie` (see `put_morsel` in `tornado_cookies.rs`): the line
written must be the one Tornado's own `set_cookie` writes for the same value and options, and an
app's own `set_cookie` must still be the one called."""

from __future__ import annotations

import asyncio
import email.utils
import re
from typing import Any, ClassVar, Literal

import pytest
import tornado.httputil
import tornado.web
import tornsession
from support.calls import _Connection, _serve, set_cookies

SECRET = "cookie-line-secret-" + "x" * 32

OPTIONS = [
    {},
    {"cookie_secure": True, "cookie_samesite": "Strict", "cookie_domain": "example.com"},
    {"cookie_httponly": False, "cookie_samesite": None, "cookie_path": "/app"},
    {"cookie_expires_days": None},
    {"cookie_expires_days": 1.5},
    {"cookie_domain": ""},
]


class Write(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1


class OwnSetCookie(Write):
    calls: ClassVar[list[str]] = []

    def set_cookie(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        type(self).calls.append(name)
        super().set_cookie(name, value, *args, **kwargs)


def id_cookie_line(connection: Any, name: str = "session_id") -> str:
    lines = [line for line in connection.headers.get_list("Set-Cookie") if line.startswith(name)]
    assert len(lines) == 1, connection.headers.get_list("Set-Cookie")
    return str(lines[0])


def tornados_line(name: str, value: str, manager_options: dict[str, Any]) -> str:
    """The line Tornado's own set_cookie writes for the manager's options."""
    app = tornado.web.Application()
    request = tornado.httputil.HTTPServerRequest(
        connection=_Connection(),
        start_line=tornado.httputil.RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"}),
    )
    handler = tornado.web.RequestHandler(app, request)
    kwargs: dict[str, Any] = {
        "path": manager_options.get("cookie_path", "/"),
        "expires_days": manager_options.get("cookie_expires_days", 30.0),
    }
    if manager_options.get("cookie_domain"):
        kwargs["domain"] = manager_options["cookie_domain"]
    if manager_options.get("cookie_httponly", True):
        kwargs["httponly"] = True
    if manager_options.get("cookie_secure"):
        kwargs["secure"] = True
    samesite = manager_options.get("cookie_samesite", "Lax")
    if samesite:
        kwargs["samesite"] = samesite
    handler.set_cookie(name, value, **kwargs)
    return str(handler._new_cookie[name].OutputString(None))


def without_expires(line: str) -> tuple[str, float | None]:
    """The line with its expiry taken out, and that expiry as a timestamp."""
    match = re.search(r"; expires=([^;]+)", line)
    if match is None:
        return line, None
    parsed = email.utils.parsedate_to_datetime(match.group(1))
    return line.replace(match.group(0), ""), parsed.timestamp()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_the_id_cookie_line_is_the_one_tornado_writes(store: str, options: dict[str, Any]) -> None:
    extra: dict[str, Any] = (
        {"store": tornsession.CookieStore()}
        if store == "cookie"
        else {"store": tornsession.MemoryStore(), "cookie_format": "compact"}
    )
    manager = tornsession.TornadoSessionManager(SECRET, **extra, **options)
    app = tornado.web.Application([("/", Write)], session_manager=manager)
    connection = asyncio.run(_serve(app, "/", "", None))
    ours = id_cookie_line(connection)
    value = ours.split(";", 1)[0].split("=", 1)[1]
    theirs = tornados_line("session_id", value, options)
    ours_rest, ours_expiry = without_expires(ours)
    theirs_rest, theirs_expiry = without_expires(theirs)
    assert ours_rest == theirs_rest
    assert (ours_expiry is None) == (theirs_expiry is None)
    if ours_expiry is not None and theirs_expiry is not None:
        assert abs(ours_expiry - theirs_expiry) <= 2


def test_an_apps_own_set_cookie_is_called() -> None:
    manager = tornsession.TornadoSessionManager(SECRET, store=tornsession.CookieStore())
    app = tornado.web.Application([("/", OwnSetCookie)], session_manager=manager)
    OwnSetCookie.calls.clear()
    connection = asyncio.run(_serve(app, "/", "", None))
    assert OwnSetCookie.calls == ["session_id"]
    assert id_cookie_line(connection).startswith("session_id=v1.")


class Count(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.write(str(self.session["n"]))


@pytest.mark.parametrize("server_format", ["compact", "pair"])
def test_switching_between_a_server_store_and_a_cookie_store_starts_new_sessions(
    server_format: Literal["compact", "pair"],
) -> None:
    """The README: only the sealed cookie is read by a CookieStore (and never by a server
    store), so a switch either way gives every visitor a new session, not an error."""
    server = tornado.web.Application(
        [("/", Count)],
        cookie_secret="switch-cookie-secret",
        session_manager=tornsession.TornadoSessionManager(
            SECRET, store=tornsession.MemoryStore(), cookie_format=server_format
        ),
    )
    sealed = tornado.web.Application(
        [("/", Count)],
        session_manager=tornsession.TornadoSessionManager(SECRET, store=tornsession.CookieStore()),
    )

    def visit(app: tornado.web.Application, cookie: str) -> tuple[bytes, str]:
        connection = asyncio.run(_serve(app, "/", cookie, None))
        assert connection.start_line.code == 200
        return connection.body, set_cookies(connection)

    body, server_cookie = visit(server, "")
    assert visit(server, server_cookie)[0] == b"2", "the server store's session counts on"
    body, sealed_cookie = visit(sealed, server_cookie)
    assert body == b"1", "a server store's cookie opens nothing on a CookieStore"
    assert sealed_cookie.startswith("session_id=v1.")
    assert visit(sealed, sealed_cookie)[0] == b"2", "the sealed session counts on"
    assert visit(server, sealed_cookie)[0] == b"1", (
        "a sealed cookie opens nothing on a server store"
    )
