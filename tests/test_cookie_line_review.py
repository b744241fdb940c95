"""Review of the id cookie line tornsession writes without Tornado's `set_cookie` (`CookieLine`,
`cookie_jar.rs`): for every option combination, and whatever the app does with its cookies
after the session is saved, the response must be the one the same app gets when Tornado's own
`set_cookie` is called (a handler whose `set_cookie` override only calls `super()`). On the
first build 16 failed (the morsel read empty, changes to it were dropped, copies lost the line,
a `set_cookie` patched on the instance was bypassed); all fixed."""

from __future__ import annotations

import asyncio
import copy
import email.utils
import http.client
import re
import socket
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import tornado.httpserver
import tornado.httputil
import tornado.web
import tornsession
from support.calls import _Connection

SECRET = "cookie-line-review-secret-" + "x" * 32


def store_options(store: str) -> dict[str, Any]:
    if store == "cookie":
        return {"store": tornsession.CookieStore()}
    return {"store": tornsession.MemoryStore(), "cookie_format": "compact"}


async def serve(
    app: tornado.web.Application, path: str = "/", cookie: str = "", protocol: str = "http"
) -> _Connection:
    """`support.calls._serve`, with the request's protocol chosen (HTTPS as Tornado sees it)."""
    headers = tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"})
    if cookie:
        headers.add("Cookie", cookie)
    connection = _Connection()
    request = tornado.httputil.HTTPServerRequest(
        headers=headers,
        connection=connection,
        start_line=tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1"),
    )
    request.protocol = protocol
    app.find_handler(request).execute()
    while not connection.finished:
        await asyncio.sleep(0)
    return connection


def normalized(lines: list[str]) -> tuple[list[str], list[float | None]]:
    """The lines with each value and expiry taken out, and the expiries as timestamps."""
    rest, expiries = [], []
    for line in lines:
        name, _, attributes = line.partition(";")
        name, _, value = name.partition("=")
        match = re.search(r"; expires=([^;]+)", ";" + attributes)
        expiry = None
        if match is not None:
            expiry = email.utils.parsedate_to_datetime(match.group(1)).timestamp()
            attributes = (";" + attributes).replace(match.group(0), "", 1)[1:]
        rest.append(f"{name}={'<v>' if value else ''};{attributes}")
        expiries.append(expiry)
    return rest, expiries


def assert_same_cookies(ours: list[str], theirs: list[str]) -> None:
    ours_rest, ours_expiries = normalized(ours)
    theirs_rest, theirs_expiries = normalized(theirs)
    assert ours_rest == theirs_rest, (ours, theirs)
    for a, b in zip(ours_expiries, theirs_expiries, strict=True):
        assert (a is None) == (b is None), (ours, theirs)
        if a is not None and b is not None:
            assert abs(a - b) <= 2, (ours, theirs)


def through_tornado(handler: type[tornado.web.RequestHandler]) -> type[tornado.web.RequestHandler]:
    """The same handler, with a `set_cookie` override that only calls Tornado's."""

    class Overridden(handler):  # type: ignore[valid-type,misc]
        def set_cookie(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
            super().set_cookie(name, value, *args, **kwargs)

    return Overridden


def both_ways(
    handler: type[tornado.web.RequestHandler],
    options: dict[str, Any],
    cookie: str = "",
    protocol: str = "http",
) -> tuple[_Connection, _Connection]:
    """The response without and with Tornado's set_cookie, for one manager."""
    results = []
    for cls in (handler, through_tornado(handler)):
        manager = tornsession.TornadoSessionManager(SECRET, **options)
        app = tornado.web.Application([("/", cls)], session_manager=manager)
        results.append(asyncio.run(serve(app, "/", cookie, protocol)))
    return results[0], results[1]


def set_cookie_lines(connection: _Connection) -> list[str]:
    assert connection.headers is not None
    return [str(line) for line in connection.headers.get_list("Set-Cookie")]


class Write(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1


OPTION_SETS: list[dict[str, Any]] = [
    {"cookie_name": "__Host-x", "cookie_secure": True},
    {"cookie_name": "__Host-x"},
    {"cookie_domain": ".example.com", "cookie_path": "/app/sub"},
    {"cookie_domain": "example.com", "cookie_secure": False},
    {"cookie_secure": True, "cookie_samesite": "None"},
    {"cookie_samesite": "Strict", "cookie_httponly": False},
    {"cookie_samesite": None, "cookie_httponly": False, "cookie_secure": True},
    {"cookie_expires_days": None},
    {"cookie_expires_days": 0.25},
    {"cookie_expires_days": 1e-6},
    {"cookie_expires_days": 3650},
    {"cookie_expires_days": 36500},
]


@pytest.mark.parametrize("protocol", ["http", "https"])
@pytest.mark.parametrize(
    "options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_the_line_is_tornados_for_every_option(
    store: str, options: dict[str, Any], protocol: str
) -> None:
    ours, theirs = both_ways(Write, {**store_options(store), **options}, protocol=protocol)
    assert_same_cookies(set_cookie_lines(ours), set_cookie_lines(theirs))


class Persistent(tornsession.SessionMixin, tornado.web.RequestHandler):
    persistent: bool = True

    def get(self) -> None:
        self.session["n"] = 1
        self.session.set_expiry(persistent=type(self).persistent)


@pytest.mark.parametrize("expires_days", [None, 2.5, 3650])
@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_set_expiry_persistent_gives_tornados_line(
    store: str, persistent: bool, expires_days: float | None
) -> None:
    handler = type("P", (Persistent,), {"persistent": persistent})
    ours, theirs = both_ways(handler, {**store_options(store), "cookie_expires_days": expires_days})
    lines = set_cookie_lines(ours)
    assert_same_cookies(lines, set_cookie_lines(theirs))
    assert ("expires=" in lines[0]) == persistent


# What an app does after the session is saved: the same whichever way the cookie was set.


class AfterSave(tornsession.SessionMixin, tornado.web.RequestHandler):
    def after(self) -> None:
        raise NotImplementedError

    def get(self) -> None:
        self.session["n"] = 1
        self.session.save()
        self.after()


class SetsItAgain(AfterSave):
    def after(self) -> None:
        self.set_cookie("session_id", "mine", path="/x")


class ClearsIt(AfterSave):
    def after(self) -> None:
        self.clear_cookie("session_id")


class ClearsAll(AfterSave):
    def after(self) -> None:
        self.clear_all_cookies()


class Clear(AfterSave):
    def after(self) -> None:
        self.clear()
        self.write("cleared")


class SendsError(AfterSave):
    def after(self) -> None:
        self.send_error(418)


class Redirects(AfterSave):
    def after(self) -> None:
        self.redirect("/elsewhere")


class SetsAnother(AfterSave):
    def after(self) -> None:
        self.set_cookie("other", "1", expires_days=1)


@pytest.mark.parametrize(
    "handler", [SetsItAgain, ClearsIt, ClearsAll, Clear, SendsError, Redirects, SetsAnother]
)
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_what_the_app_does_after_the_save_comes_out_as_with_tornados_set_cookie(
    store: str, handler: type[tornado.web.RequestHandler]
) -> None:
    ours, theirs = both_ways(handler, store_options(store), cookie="session_id=old; other=2")
    assert ours.start_line.code == theirs.start_line.code
    assert_same_cookies(set_cookie_lines(ours), set_cookie_lines(theirs))


class ReadsAttributes(AfterSave):
    seen: ClassVar[dict[str, Any]] = {}

    def after(self) -> None:
        morsel = self._new_cookie["session_id"]
        type(self).seen[self.set_cookie.__qualname__] = {
            "path": morsel.get("path"),
            "httponly": morsel.get("httponly"),
            "samesite": morsel.get("samesite"),
            "expires_set": bool(morsel.get("expires")),
            "keys": sorted(morsel.keys()),
            "value": morsel.value,
        }


@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_the_morsel_in_the_jar_reads_as_tornados(store: str) -> None:
    """An app (or a library, a test) reading ``handler._new_cookie[name]["path"]`` after the
    save gets what Tornado's own morsel holds."""
    ReadsAttributes.seen.clear()
    both_ways(ReadsAttributes, store_options(store))
    ours, theirs = sorted(ReadsAttributes.seen.items(), key=lambda kv: "Overridden" in kv[0])
    ours_seen, theirs_seen = ours[1], theirs[1]
    assert theirs_seen["path"] == "/"
    assert {k: v for k, v in ours_seen.items() if k != "value"} == {
        k: v for k, v in theirs_seen.items() if k != "value"
    }


class ChangesAttribute(AfterSave):
    def after(self) -> None:
        self._new_cookie["session_id"]["samesite"] = "Strict"
        self._new_cookie["session_id"]["path"] = "/changed"


@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_changing_the_morsel_after_the_save_is_written_as_with_tornados(store: str) -> None:
    ours, theirs = both_ways(ChangesAttribute, store_options(store))
    assert "Path=/changed" in set_cookie_lines(theirs)[0]
    assert_same_cookies(set_cookie_lines(ours), set_cookie_lines(theirs))


@pytest.mark.parametrize("how", ["Morsel.copy", "copy.copy", "copy.deepcopy", "pickle"])
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_a_copied_morsel_keeps_its_line(store: str, how: str) -> None:
    """A copy of the jar's morsel (``Morsel.copy()``, ``copy``, ``pickle``) writes the same
    line, as a copy of Tornado's own morsel does."""
    import pickle

    manager = tornsession.TornadoSessionManager(SECRET, **store_options(store))
    jar: list[Any] = []

    class Keeps(AfterSave):
        def after(self) -> None:
            jar.append(self._new_cookie["session_id"])

    app = tornado.web.Application([("/", Keeps)], session_manager=manager)
    asyncio.run(serve(app))
    morsel = jar[0]
    line = morsel.OutputString()
    assert "Path=/" in line
    copiers: dict[str, Callable[[Any], Any]] = {
        "Morsel.copy": lambda m: m.copy(),
        "copy.copy": copy.copy,
        "copy.deepcopy": copy.deepcopy,
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    }
    copier = copiers[how]
    assert copier(morsel).OutputString() == line


class PatchedOnTheInstance(Write):
    calls: ClassVar[list[str]] = []

    def prepare(self) -> Any:
        tornados = self.set_cookie

        def set_cookie(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
            type(self).calls.append(name)
            tornados(name, value, *args, **kwargs)

        self.set_cookie = set_cookie  # type: ignore[method-assign]
        return super().prepare()


@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_a_set_cookie_patched_on_the_instance_is_called(store: str) -> None:
    """An app (or a test's ``mock.patch.object(handler, "set_cookie")``) that replaces
    ``set_cookie`` on the handler instance, not its class, still sees the id cookie set."""
    PatchedOnTheInstance.calls.clear()
    manager = tornsession.TornadoSessionManager(SECRET, **store_options(store))
    app = tornado.web.Application([("/", PatchedOnTheInstance)], session_manager=manager)
    connection = asyncio.run(serve(app))
    assert set_cookie_lines(connection)
    assert PatchedOnTheInstance.calls == ["session_id"]


@pytest.mark.parametrize("proto", ["http", "https"])
@pytest.mark.parametrize("store", ["cookie", "compact"])
def test_secure_auto_behind_a_tls_proxy_over_real_http(store: str, proto: str) -> None:
    """A real server with ``xheaders=True``: ``X-Forwarded-Proto`` decides Secure, as with
    Tornado's own set_cookie."""

    async def run() -> list[list[str]]:
        results = []
        for cls in (Write, through_tornado(Write)):
            manager = tornsession.TornadoSessionManager(SECRET, **store_options(store))
            app = tornado.web.Application([("/", cls)], session_manager=manager)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            sock.setblocking(False)
            server = tornado.httpserver.HTTPServer(app, xheaders=True)
            server.add_sockets([sock])
            port = sock.getsockname()[1]

            def fetch(port: int = port) -> list[str]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/", headers={"X-Forwarded-Proto": proto})
                response = conn.getresponse()
                response.read()
                conn.close()
                return response.headers.get_all("Set-Cookie") or []

            results.append(await asyncio.to_thread(fetch))
            server.stop()
        return results

    ours, theirs = asyncio.run(run())
    assert_same_cookies(ours, theirs)
    assert ("; Secure" in ours[0]) == (proto == "https")
