"""The session engine over real HTTP, for both API styles (the drop-in ``TornadoSession`` and
``SessionMixin``) on the Memory, File, SQLite, Redis and memcached stores: requests of one
session take turns, a save never brings back a destroyed or regenerated record, a failed save
answers at once, a failed request is not saved, and cookies are renewed on the original API
too.

A real Tornado server runs on its own IOLoop in a thread; clients are keep-alive connections
(``Browser``) with their own cookie jars.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornsession
from support.browser import Browser, hammer_one_session
from support.engine_app import (
    COOKIE_SECRET,
    STYLES,
    DropIn,
    Mixin,
    Server,
    connect,
    digest_of,
    every_store_and_style,
    on_loop,
    peek,
    record_exists,
    start_session,
)
from tornado.web import create_signed_value
from tornsession import _core, _ordering

CONNECTIONS = 8
INCREMENTS = 40


def increment_concurrently(port: int, path: str) -> int:
    cookies = hammer_one_session(port, path, CONNECTIONS, INCREMENTS)
    final: int = peek(port, cookies)["n"]
    return final


@every_store_and_style()
@pytest.mark.parametrize("path", ["/inc", "/inc-await"])
def test_concurrent_increments_of_one_session_are_all_kept(
    serve: Callable[..., Server], style: str, kind: str, path: str
) -> None:
    server = serve(style, kind)
    final = increment_concurrently(server.port, path)
    assert final == 1 + CONNECTIONS * INCREMENTS, f"{CONNECTIONS * INCREMENTS + 1 - final} lost"
    with Browser(server.port) as browser:
        assert browser.get("/in-flight") == (200, "0"), "the turn table holds finished requests"


def test_without_ordering_an_awaiting_handler_loses_updates(
    serve: Callable[..., Server],
) -> None:
    # Proves the test above can fail: the same requests with order_requests=False.
    server = serve("mixin", "memory", order_requests=False)
    final = increment_concurrently(server.port, "/inc-await")
    assert final < 1 + CONNECTIONS * INCREMENTS


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
@pytest.mark.parametrize("action", ["/logout", "/regenerate"])
@every_store_and_style()
def test_logout_or_regenerate_during_a_slow_write_is_not_undone(
    serve: Callable[..., Server], style: str, kind: str, action: str, ordered: bool
) -> None:
    server = serve(style, kind, order_requests=ordered, order_timeout=5)
    with Browser(server.port) as victim:
        assert victim.get("/inc") == (200, "1")
        old_cookies = dict(victim.cookies)
        old_id = peek(server.port, old_cookies)["id"]
        slow_status: list[int] = []

        def slow_request() -> None:  # an attacker's request, with the stolen cookie
            with Browser(server.port) as attacker:
                attacker.cookies = dict(old_cookies)
                slow_status.append(attacker.get("/slow?sleep=0.6")[0])

        slow = threading.Thread(target=slow_request)
        slow.start()
        time.sleep(0.2)  # the slow request has loaded the session
        status, _ = victim.request("POST", action, body="")
        assert status == 200
        new_cookies = dict(victim.cookies)
        slow.join()
    if ordered and action == "/regenerate":
        # The slow request held its turn unchanged past the lease and passed it on; the
        # regeneration saved meanwhile, so its late write is refused (SessionConflict: 409
        # through the mixin, raised by the drop-in save()).
        assert slow_status == [409 if style == "mixin" else 500]
    else:
        assert slow_status == [200]
    assert not record_exists(server, old_id), "the old id's record came back"
    after = peek(server.port, old_cookies)
    assert after["id"] != old_id and after["n"] is None, "the old cookie opens the session again"
    if action == "/regenerate":
        kept = peek(server.port, new_cookies)
        assert kept["id"] != old_id
        # Ordered, the slow request's write was refused; unordered, it was dropped.
        assert kept["n"] == 1


@every_store_and_style()
def test_a_save_over_max_size_answers_500_at_once(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = serve(style, kind, max_size=4096)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        started = time.monotonic()
        status, _ = browser.get("/big")
        assert status == 500
        assert time.monotonic() - started < 1.0
        assert peek(server.port, browser.cookies).get("note") is None
        assert browser.get("/inc") == (200, "2"), "the session still works"


@every_store_and_style()
def test_a_handler_that_raises_after_a_change_saves_nothing(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = serve(style, kind)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        assert browser.get("/raise")[0] == 500
        assert "half_done" not in peek(server.port, browser.cookies)


@every_store_and_style(["memory", "redis"])
def test_a_write_after_logout_is_a_new_session_with_its_cookies(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = serve(style, kind)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        old_id = peek(server.port, browser.cookies)["id"]
        status, _ = browser.request("POST", "/logout?flash=1", body="")
        assert status == 200
        assert browser.cookies, "the new session's cookies were sent"
        after = peek(server.port, browser.cookies)
        assert after["id"] != old_id and after["flash"] == "you are logged out"
        assert not record_exists(server, old_id)


@pytest.mark.parametrize("style", STYLES)
def test_a_plain_logout_leaves_no_record_and_clears_the_cookies(
    serve: Callable[..., Server], style: str
) -> None:
    server = serve(style, "memory")
    store: tornsession.MemoryStore = server.app.store  # type: ignore[attr-defined]
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        assert len(store) == 1
        status, _ = browser.request("POST", "/logout", body="")
        assert status == 200
        assert browser.cookies == {}
        assert len(store) == 0, "an orphan record was left by the logout"


class OriginalApi(tornado.web.RequestHandler):
    """The original module's manager API: manager.get(handler) / manager.set(handler, s)."""

    def get(self) -> None:
        manager = self.application.session_manager  # type: ignore[attr-defined]
        session = manager.get(self)
        session.setdefault("seen", 0)
        manager.set(self, session)
        self.write(session.session_id)


def test_a_three_day_old_cookie_is_renewed_on_manager_get_and_set(
    serve: Callable[..., Server],
) -> None:
    server = serve("dropin", "memory")
    server.app.wildcard_router.add_rules([(r"/original", OriginalApi)])
    with Browser(server.port) as browser:
        assert browser.get("/original")[0] == 200
        assert len(browser.last_set_cookie) == 2, "a new session's cookies are sent"
        session_id = browser.get("/original")[1]
        assert browser.last_set_cookie == [], "a fresh, unchanged session sends nothing"
    three_days_ago = time.time() - 3 * 86400
    aged = {
        name: create_signed_value(COOKIE_SECRET, name, value, clock=lambda: three_days_ago).decode()
        for name, value in [("session_id", session_id), ("hmac_digest", digest_of(session_id))]
    }
    with Browser(server.port) as browser:
        browser.cookies = aged
        status, body = browser.get("/original")
        assert (status, body) == (200, session_id), "the aged cookie still opens the session"
        renewed = {header.split("=", 1)[0] for header in browser.last_set_cookie}
        assert renewed == {"session_id", "hmac_digest"}


def test_the_turn_table_is_empty_after_100000_sessions_and_memory_is_back() -> None:
    import gc
    import tracemalloc

    async def soak() -> tuple[tuple[int, int], int, int]:
        async def request(session_id: str) -> None:
            handler = object()  # each request its own handler, alive while it holds the turn
            turn = await _ordering.wait_for_turn(session_id, handler, 5)
            await asyncio.sleep(0)
            turn.release()

        async def wave(start: int) -> None:
            # Two requests per session, so half of them wait for the other's turn.
            ids = [f"{n:032x}" for n in range(start, start + 500)]
            await asyncio.gather(*(request(i) for i in ids + ids))

        async def settled() -> int:
            """Bytes still allocated by the ordering module (asyncio's own task bookkeeping,
            whose sets keep their grown capacity, is not what this test is about)."""
            for _ in range(3):  # let the loop run the done-callbacks still holding tasks
                await asyncio.sleep(0)
            gc.collect()
            ours = tracemalloc.Filter(True, _ordering.__file__)
            snapshot = tracemalloc.take_snapshot().filter_traces([ours])
            return sum(stat.size for stat in snapshot.statistics("filename"))

        tracemalloc.start()
        await wave(10**9)
        before = await settled()
        for start in range(0, 100_000, 500):
            await wave(start)
        after = await settled()
        tracemalloc.stop()
        return _core._turns_in_table(), before, after

    gc.collect()
    # The table is one per process: an earlier test in this worker may have left the claims of
    # requests whose turn objects something still holds (a logged traceback). This one adds none.
    known_before = _core._turns_in_table()[1]
    in_table, before, after = asyncio.run(soak())
    # The table (in Rust) keeps no session and no claim of a finished request.
    assert in_table[0] == 0
    assert in_table[1] <= known_before, (in_table, known_before)
    assert after - before < 4096, f"{after - before} bytes kept after the soak ({before} before)"


def test_a_request_waiting_longer_than_order_timeout_gets_503(
    serve: Callable[..., Server],
) -> None:
    server = serve("mixin", "memory", order_timeout=0.3)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    results: list[int] = []

    def slow() -> None:
        with Browser(server.port) as holder:
            holder.cookies = dict(cookies)
            results.append(holder.get("/slow?sleep=1.0&early=1")[0])

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)
    with Browser(server.port) as waiter:
        waiter.cookies = dict(cookies)
        started = time.monotonic()
        status, _ = waiter.get("/inc")
        waited = time.monotonic() - started
    thread.join()
    assert status == 503 and waited < 0.9, (status, waited)
    assert results == [200]
    assert peek(server.port, cookies)["n"] == 100, "the holder's write was kept"


def test_a_websocket_does_not_hold_its_session_for_the_connection(
    serve: Callable[..., Server],
) -> None:
    import tornado.websocket

    class Socket(tornsession.SessionMixin, tornado.websocket.WebSocketHandler):
        def open(self) -> None:
            self.write_message(str(self.session.get("n")))

    server = serve("mixin", "memory", order_timeout=0.5)
    server.app.wildcard_router.add_rules([(r"/ws", Socket)])
    cookies = start_session(server.port)
    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "1"
        with Browser(server.port) as browser:
            browser.cookies = dict(cookies)
            assert browser.get("/inc") == (200, "2"), "the open WebSocket held the session"
    finally:
        server.loop.call_soon_threadsafe(connection.close)


@every_store_and_style()
def test_a_regeneration_after_a_logout_elsewhere_does_not_revive_the_session(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    # Two apps on one store (two servers; in one process they share the turn table, and the
    # first request passes its turn on after the lease): a request of the session on one
    # loads it, the visitor logs out on the other, then the first request regenerates (a
    # login flow that was mid-way).
    first = serve(style, kind)
    second = serve(style, kind, store=first.app.store)  # type: ignore[attr-defined]
    cookies = start_session(first.port)
    old_id = peek(first.port, cookies)["id"]
    after: dict[str, str] = {}

    def regenerate_slowly() -> None:
        with Browser(first.port) as tab:
            tab.cookies = dict(cookies)
            # 1 s: the logout waits out the 0.3 s lease (one process, one turn table) first.
            status, _ = tab.request("POST", "/regenerate?sleep=1.0", body="")
            assert status == 200
            after.update(tab.cookies)

    tab = threading.Thread(target=regenerate_slowly)
    tab.start()
    time.sleep(0.2)
    with Browser(second.port) as other:
        other.cookies = dict(cookies)
        assert other.request("POST", "/logout", body="")[0] == 200
    tab.join()
    assert after == cookies, "new cookies were sent for a session that was logged out"
    assert not record_exists(first, old_id)
    assert peek(first.port, cookies)["n"] is None
    if kind == "memory":
        store: tornsession.MemoryStore = first.app.store  # type: ignore[attr-defined]
        assert len(store) == 0, "the session came back under a new id"


def test_a_websocket_handshake_with_a_blocking_store_completes_and_saves(
    serve: Callable[..., Server],
) -> None:
    import tornado.websocket

    class Socket(tornsession.SessionMixin, tornado.websocket.WebSocketHandler):
        async def prepare(self) -> None:
            await super().prepare()
            self.session["sockets"] = self.session.get("sockets", 0) + 1

        def open(self) -> None:
            self.write_message(str(self.session["sockets"]))

    server = serve("mixin", "file")
    server.app.wildcard_router.add_rules([(r"/ws", Socket)])
    cookies = start_session(server.port)
    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "1"
        assert peek(server.port, cookies)["sockets"] == 1, "the handshake's change was saved"
        with Browser(server.port) as browser:
            assert browser.get("/in-flight") == (200, "0")
    finally:
        server.loop.call_soon_threadsafe(connection.close)


def test_a_client_that_leaves_mid_upload_releases_its_sessions_turn(
    serve: Callable[..., Server],
) -> None:
    @tornado.web.stream_request_body
    class Upload(tornsession.SessionMixin, tornado.web.RequestHandler):
        def data_received(self, chunk: bytes) -> None:
            self.session["received"] = self.session.get("received", 0) + len(chunk)

        def put(self) -> None:
            self.write("done")

    server = serve("mixin", "memory", order_timeout=5)
    server.app.wildcard_router.add_rules([(r"/upload", Upload)])
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with socket.create_connection(("127.0.0.1", server.port)) as cut_short:
        cut_short.sendall(
            f"PUT /upload HTTP/1.1\r\nHost: x\r\nCookie: {header}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
            + b"x" * 1000
        )
        time.sleep(0.3)
    with Browser(server.port) as browser:
        browser.cookies = dict(cookies)
        started = time.monotonic()
        assert browser.get("/inc") == (200, "2")
        assert time.monotonic() - started < 2, "the next request waited for the cut upload"


class TwiceInitialized(DropIn):
    """A base class's initialize() made the session, and a subclass's makes it again."""

    def initialize(self) -> None:
        super().initialize()
        self.session = tornsession.TornadoSession(self.application.session_manager, self)  # type: ignore[attr-defined]

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write(str(self.session["n"]))


class LoadsAgain(Mixin):
    """A mixin handler that also loads the session by hand."""

    async def get(self) -> None:
        again = await tornsession.TornadoSession.aload(self.session_manager, self)
        self.write(str(again.get("n")))


def test_a_request_that_makes_its_session_twice_does_not_wait_for_itself(
    serve: Callable[..., Server],
) -> None:
    server = serve("dropin", "memory", order_timeout=2)
    server.app.wildcard_router.add_rules([(r"/twice", TwiceInitialized), (r"/again", LoadsAgain)])
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        started = time.monotonic()
        assert browser.get("/twice") == (200, "2")
        assert browser.get("/again") == (200, "2")
        assert time.monotonic() - started < 1.5
        assert browser.get("/in-flight") == (200, "0")
