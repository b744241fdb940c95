"""Odd ways to end a request, finish()/redirect() in prepare(), long polls, client disconnects, cut
uploads and WebSockets: every one releases its turn.

From issue 20's review: each test names what must hold; where the review found it broken,
its docstring says what was found and where (all fixed since)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
import tornado.websocket
import tornsession
from support.browser import Browser
from support.engine_app import (
    Mixin,
    connect,
    peek,
)
from support.request_path import (
    DEFERRING_KINDS,
    STORE_KINDS,
    base_routes,
    raw_request,
    read_response,
    table_empties,
)
from support.threads import run_concurrently

# The request-path tests' fixtures (tests/support/request_path.py): a fresh table baseline, and
# no log record keeping a failed request's handler (and its turn) alive.
pytestmark = pytest.mark.usefixtures("_table_baseline", "_no_log_capture")

# ---------------------------------------------------------------- edge handlers


EDGE_PATHS = [
    "/finish-twice",
    "/finish-twice-async",
    "/flush",
    "/redirect",
    "/send-error",
    "/send-error-500",
    "/raise-finish",
    "/http-error",
    "/raise-prepare",
    "/raise-before-super",
    "/finish-in-prepare",
    "/finish-no-await",
]


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize("path", EDGE_PATHS)
def test_edge_handlers_leave_no_turn_and_next_request_runs(
    servers: Any, store_of: Callable[[str], Any], kind: str, path: str
) -> None:
    """Every odd way to end a request releases its turn: the table is empty afterwards and the
    session's next requests (in parallel too) answer at once, never 503."""
    server = servers(base_routes(), store_of(kind), order_timeout=2)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        for _ in range(3):
            status, _body = browser.get(path)
            assert status in (200, 302, 401, 403, 404, 500), (path, status)
        assert table_empties() == (0, 0)
        started = time.monotonic()
        status, body = browser.get("/inc")
        assert status == 200, body
        assert time.monotonic() - started < 1.0
        cookies = dict(browser.cookies)

    def visitor(_: int) -> None:
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            for _ in range(5):
                assert b.get(path)[0] != 503
                assert b.get("/inc")[0] == 200

    run_concurrently(visitor, 4)
    assert table_empties() == (0, 0)
    data = peek(server.port, cookies)
    assert data["n"] == int(body) + 20, data


# ---------------------------------------------------------------- finish()/redirect() in prepare()

SIDE_EFFECTS: list[str] = []


class LoginRequired(Mixin):
    """The usual guard: an anonymous visitor is sent to the login page from prepare(), with
    where to come back to kept in the session."""

    async def prepare(self) -> None:
        await super().prepare()
        if not self.session.get("user"):
            self.session["next"] = self.request.uri
            self.redirect("/login")

    def get(self) -> None:
        SIDE_EFFECTS.append(self.request.uri)
        self.session["ran"] = True
        self.write("members-only secret")


@pytest.mark.parametrize("kind", DEFERRING_KINDS)
def test_redirect_in_prepare_stops_the_handler_method(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """Tornado: a prepare() that calls finish() or redirect() ends the request, the method is
    not called. With SessionMixin on Redis/memcached/FileStore (any save that is not inline)
    a changed session makes finish() defer
    (the save is awaited before RequestHandler.finish()), so `_finished` is still False when
    Tornado checks it after prepare(): get() runs for the anonymous visitor, its side effects
    happen and its body ("members-only secret") goes out with the 302.
    Suspect: python/tornsession/mixin.py SessionMixin.finish() (the _SAVING branch) with
    tornado.web.RequestHandler._execute's `if self._finished: return` after prepare()."""
    SIDE_EFFECTS.clear()
    server = servers([*base_routes(), (r"/members", LoginRequired)], store_of(kind))
    with Browser(server.port) as browser:
        status, body = browser.get("/members")
        assert status == 302
        assert "secret" not in body, body
        assert SIDE_EFFECTS == [], "get() ran after prepare() redirected"
        data = browser.get_json("/peek")
        assert data.get("next") == "/members"
        assert "ran" not in data
    assert table_empties() == (0, 0)


# ---------------------------------------------------------------- long polls, leases, disconnects


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_long_poll_that_changed_nothing_does_not_block_its_visitor(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """A long poll reads its session and waits 1.5 s: the visitor's other requests wait at most
    the 300 ms lease, never 503, and are all counted; the poll itself answers 200."""
    server = servers(base_routes(), store_of(kind), order_timeout=1.0)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    poll = raw_request(server.port, cookies, "/hold?sleep=1.5")
    try:
        time.sleep(0.05)  # the poll takes its turn first (not an assertion)
        started = time.monotonic()

        def visitor(_: int) -> None:
            with Browser(server.port) as b:
                b.cookies = dict(cookies)
                for _ in range(5):
                    status, body = b.get("/inc")
                    assert status == 200, body

        run_concurrently(visitor, 3)
        assert time.monotonic() - started < 1.2, "the others waited for the long poll"
        answer = read_response(poll)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        poll.close()
    assert peek(server.port, cookies)["n"] == 16
    assert table_empties() == (0, 0)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_client_gone_during_a_held_turn_frees_it(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """A request that changed its session (so keeps its turn past the lease) and whose client
    went away passes the turn on at once: the next request does not wait for it nor 503; the
    abandoned request's late write is fenced (the counter is not rolled back)."""
    server = servers(base_routes(), store_of(kind), order_timeout=1.0)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
        gone = raw_request(server.port, cookies, "/hold-changed?sleep=0.8")
        time.sleep(0.1)  # the held request is running (not an assertion)
        gone.close()
        time.sleep(0.05)
        started = time.monotonic()
        assert browser.get("/inc") == (200, "2")
        assert time.monotonic() - started < 0.5
        time.sleep(0.9)  # the abandoned request ends and tries its write
        data = browser.get_json("/peek")
        assert data["n"] == 2, data
    assert table_empties() == (0, 0)


class Upload(Mixin):
    def data_received(self, chunk: bytes) -> None:
        self.session["received"] = self.session.get("received", 0) + len(chunk)

    def put(self) -> None:
        self.write("done")


StreamingUpload = tornado.web.stream_request_body(Upload)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_cut_upload_on_a_network_store_frees_its_turn(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """A streamed body cut short: the next request of the session is served at once."""
    server = servers(
        [*base_routes(), (r"/upload", StreamingUpload)], store_of(kind), order_timeout=2
    )
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as cut:
            cut.sendall(
                f"PUT /upload HTTP/1.1\r\nHost: x\r\nCookie: {header}\r\n"
                "Content-Length: 1000000\r\n\r\n".encode()
                + b"x" * 1000
            )
            time.sleep(0.1)
    with Browser(server.port) as browser:
        browser.cookies = dict(cookies)
        started = time.monotonic()
        assert browser.get("/inc") == (200, "2")
        assert time.monotonic() - started < 1.0
    assert table_empties() == (0, 0)


class Socket(tornsession.SessionMixin, tornado.websocket.WebSocketHandler):
    async def prepare(self) -> None:
        await super().prepare()
        self.session["sockets"] = self.session.get("sockets", 0) + 1

    def open(self) -> None:
        self.write_message(str(self.session["sockets"]))

    async def on_message(self, message: str | bytes) -> None:
        self.session["msg"] = message
        try:
            await self.session.asave()
        except tornsession.SessionConflict:
            self.write_message("conflict")
        else:
            self.write_message("saved")


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_websocket_with_the_mixin_saves_and_frees_its_turn(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """The handshake saves and ends the turn (HTTP requests of the visitor do not wait for the
    open socket); a later asave() over the socket, after an HTTP request saved, is refused with
    detect_conflicts=True (README: saves over a socket do not take turns) rather than writing
    its stale copy over the newer record."""
    server = servers(
        [*base_routes(), (r"/ws", Socket)], store_of(kind), order_timeout=1, detect_conflicts=True
    )
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    from support.engine_app import on_loop

    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "1"
        with Browser(server.port) as browser:
            browser.cookies = dict(cookies)
            started = time.monotonic()
            assert browser.get("/inc") == (200, "2")
            assert time.monotonic() - started < 0.5
        server.loop.call_soon_threadsafe(connection.write_message, "hello")
        assert on_loop(server, connection.read_message) == "conflict"
        data = peek(server.port, cookies)
        assert data["sockets"] == 1 and "msg" not in data and data["n"] == 2, data
    finally:
        server.loop.call_soon_threadsafe(connection.close)
    assert table_empties() == (0, 0)


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize("path", ["/flush", "/finish-twice-async", "/redirect", "/finish-no-await"])
def test_new_visitors_on_edge_handlers(
    servers: Any, store_of: Callable[[str], Any], kind: str, path: str
) -> None:
    """A new visitor (no cookie) on handlers that flush, finish twice, redirect or finish
    without awaiting: no 500 and no hang, the table empties, and 8 of them at once too."""
    server = servers(base_routes(), store_of(kind), order_timeout=2)

    def visitor(_: int) -> None:
        with Browser(server.port) as b:
            for _ in range(3):
                status, body = b.get(path)
                assert status in (200, 302), (status, body)

    run_concurrently(visitor, 8)
    assert table_empties() == (0, 0)
