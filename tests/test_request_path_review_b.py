"""Attacks on the fixes of issue 20's first review (2 of 2): a handler finished while its save
runs, a cancelled deferred finish, several loops, fork, failed saves, streamed bodies, an own
prepare() failing late. A test whose docstring says "Found:" failed on 9d8585c (fixed since);
the others held."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from support.browser import Browser
from support.engine_app import Mixin, Server, peek
from support.request_path import (
    GatedStore,
    Inc,
    Peek,
    PrepAsyncNoSuper,
    make_app,
)
from support.stores import DictStore
from support.threads import run_concurrently
from tornsession import _core

pytestmark = pytest.mark.usefixtures("_table_baseline", "_no_log_capture")

# ---------------------------------------------------------------- 2. finished while the save runs


class FinishThenSendError(Mixin):
    """finish() not awaited, then send_error(): on a plain RequestHandler the headers are out
    and send_error() changes nothing."""

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.finish("saved")
        self.send_error(500)


class FinishThenRedirect(Mixin):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.finish("saved")
        try:
            self.redirect("/elsewhere")
        except Exception as error:  # RuntimeError on a plain RequestHandler
            self.refused = error


class PlainFinishThenSendError(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish("saved")
        self.send_error(500)


@pytest.mark.parametrize("path", ["/send-error", "/redirect"])
def test_after_a_deferred_finish_the_response_is_what_was_finished(servers: Any, path: str) -> None:
    """finish("saved") on a store whose save is deferred (a Python store on a thread), then
    send_error(500) or redirect() before the save is answered. Plain Tornado answers 200
    "saved" (send_error is a no-op once the headers are out; redirect raises). Found: the
    response becomes the later one: send_error's clear() wipes the pending body and sets 500
    (its write_error's finish() returns the pending finish, so even the error page's body is
    dropped: an empty 500), redirect() sends a 302 - while the session change was saved as
    for a success. `_finished = True` stops write() but not clear()/set_status()/
    set_header() (`_headers_written` stays False until the real finish).
    Suspect: python/tornsession/mixin.py finish() (deferred finish; only `_finished` set)."""
    store = DictStore()
    server = servers(
        [
            (r"/send-error", FinishThenSendError),
            (r"/redirect", FinishThenRedirect),
            (r"/plain", PlainFinishThenSendError),
        ],
        store,
    )
    with Browser(server.port) as browser:
        assert browser.get("/plain") == (200, "saved")
        assert browser.get(path) == (200, "saved")


# ---------------------------------------------------------------- 1. a cancelled deferred finish

TIMED_OUT = threading.Event()


class FinishUnderTimeout(Mixin):
    """Awaits its finish() under asyncio.wait_for (an app bounding a slow store): on a plain
    RequestHandler finish() has sent the response before it returns, and cancelling the
    future it returned changes nothing."""

    async def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        try:
            await asyncio.wait_for(self.finish("sent"), 0.05)
        except asyncio.TimeoutError:
            TIMED_OUT.set()


def test_a_finish_cancelled_by_wait_for_still_answers_and_frees_the_turn(servers: Any) -> None:
    """A handler awaits `asyncio.wait_for(self.finish("sent"), 0.05)`; the save (a Python
    store on a thread) takes longer. wait_for cancels the pending finish task: CancelledError
    in `_save_then_finish`'s await, which ends the write (finally) but is not an Exception, so
    neither `_save_failed` nor the real finish nor `_release_turn` runs, and `_finished` stays
    True. Found: the client never gets a response (it waits until it gives up) and the session's
    turn stays held while it waits (its next request 503s). Should: as on a plain
    RequestHandler, the response is sent ("sent", 200) and the turn freed; e.g. shield the
    save-then-finish from the caller's cancellation.
    Suspect: python/tornsession/mixin.py finish() returns the task itself
    (`self._tornsession_pending`), and `_save_then_finish` (no CancelledError handling)."""
    import socket

    store = GatedStore()
    server = servers([(r"/inc", Inc), (r"/x", FinishUnderTimeout)], store)
    TIMED_OUT.clear()
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    store.gating.set()
    head = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: x\r\nCookie: {head}\r\n\r\n".encode())
        assert TIMED_OUT.wait(5)
        store.gating.clear()
        store.gate.set()
        sock.settimeout(2)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            data = b"(no response)"
        assert data.startswith(b"HTTP/1.1 200"), (data, _core._turns_in_table())


# ---------------------------------------------------------------- 5. several loops, one closed


def test_a_closed_idle_loop_never_finishes_the_live_claims_of_other_loops(
    make_store: Callable[[str], Any],
) -> None:
    """Three servers on three threads share one manager; the first is stopped and its loop
    closed after serving the visitor. 16 concurrent increments of that visitor, spread over the
    two live servers, each awaiting between read and write, so every release looks for claims
    of closed loops among the session's live ones: none is finished wrongly, every increment
    kept."""
    store = make_store("redis")
    app = make_app([(r"/inc", Inc), (r"/peek", Peek), (r"/x", PrepAsyncNoSuper)], store)
    app.settings["session_manager"] = app.session_manager  # type: ignore[attr-defined]
    first, second, third = Server(app), Server(app), Server(app)
    try:
        with Browser(first.port) as browser:
            assert browser.get("/inc") == (200, "1")
            cookies = dict(browser.cookies)
        first.stop()

        def visitor(index: int) -> None:
            port = (second, third)[index % 2].port
            with Browser(port) as b:
                b.cookies = dict(cookies)
                status, body = b.get("/x")
                assert status == 200, (status, body)

        run_concurrently(visitor, 16)
        assert peek(second.port, cookies)["n"] == 17
    finally:
        second.stop()
        third.stop()


# ---------------------------------------------------------------- 4. fork


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forks_while_other_threads_churn_the_turn_table_leave_a_usable_table() -> None:
    """Four threads, each on its own event loop, take and release turns as fast as they can
    (sessions shared between them, so claims queue and wake across loops) while the main
    thread forks 40 times. Each child takes a turn of a session the parent's threads use and
    of a fresh one, releases them, and checks its table is then empty: no child deadlocks on
    a lock a parent thread held (force_unlock), none inherits a claim."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, os, sys, threading, time
        from tornsession import _core, _ordering  # noqa: F401 (registers the fork hook)
        stop = threading.Event()

        def churn(index):
            async def run():
                while not stop.is_set():
                    turn = _core._take_turn_now("s%d" % (index % 2) * 16, index)
                    if turn is not None:
                        turn.release()
                        del turn
                    await asyncio.sleep(0)
            asyncio.new_event_loop().run_until_complete(run())

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        bad = []
        for n in range(40):
            pid = os.fork()
            if pid == 0:
                async def child():
                    a = _core._take_turn_now("s0" * 16, 99)
                    b = _core._take_turn_now("fresh" + "x" * 27, 99)
                    ok = a is not None and b is not None
                    a.release(); b.release(); del a, b
                    return ok and _core._turns_in_table() == (0, 0)
                ok = asyncio.new_event_loop().run_until_complete(child())
                os._exit(0 if ok else 3)
            deadline = time.monotonic() + 5
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        bad.append((n, os.waitstatus_to_exitcode(status)))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    bad.append((n, "hung"))
                    break
                time.sleep(0.005)
        stop.set()
        for t in threads:
            t.join()
        print("bad", bad, flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "bad []" in out.stdout, (out.stdout, out.stderr[-2000:])


# ---------------------------------------------------------------- 6. a failed save


class FailingGatedStore(GatedStore):
    """set() waits for the gate, then fails while `failing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = threading.Event()

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        super().set(key, value, ttl) if not self.failing.is_set() else self._fail()

    def _fail(self) -> None:
        self.writing.set()
        assert self.gate.wait(10)
        raise OSError("the store refused the write")


def test_a_save_that_fails_after_its_client_left_frees_the_turn(servers: Any) -> None:
    """The client leaves while its save is on a worker thread (the turn stays: a write in
    flight); the save then fails. `_save_failed` answers a closed stream (send_error ->
    finish on a closed connection) and must still free the turn: the visitor's next request
    is served, with the record as before the failed save."""
    import socket

    store = FailingGatedStore()
    server = servers([(r"/inc", Inc), (r"/peek", Peek)], store, order_timeout=2.0)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    store.failing.set()
    head = "; ".join(f"{k}={v}" for k, v in cookies.items())
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /inc HTTP/1.1\r\nHost: x\r\nCookie: {head}\r\n\r\n".encode())
    assert store.writing.wait(5)
    sock.close()
    store.gate.set()
    with Browser(server.port) as browser:
        browser.cookies = dict(cookies)
        store.failing.clear()
        assert browser.get("/inc") == (200, "2")


# ---------------------------------------------------------------- 2. a streamed body, redirected

STREAM_CALLS: list[str] = []


@tornado.web.stream_request_body
class UploadLoginGuard(Mixin):
    """A streamed upload whose prepare() stores where to come back and redirects to login."""

    def prepare(self) -> None:
        self.session["next"] = "/upload"
        self.redirect("/login")

    def data_received(self, chunk: bytes) -> None:
        STREAM_CALLS.append("data_received")

    def post(self) -> None:
        STREAM_CALLS.append("post")


def test_a_streamed_upload_redirected_in_prepare_gets_no_body_while_its_save_runs(
    servers: Any,
) -> None:
    """A @stream_request_body upload whose prepare() changes the session and redirects (a
    login guard); the redirect's save is held on a worker thread while the client keeps
    sending its body. Plain Tornado (checked by hand, same timing): the connection is closed
    after the 302, neither data_received() nor post() runs. Found: data_received() is called
    with the unauthenticated body while the save is pending (`_finished = True` does not stop
    Tornado's _RequestDispatcher from feeding the handler: the connection has not finished),
    so a guard in prepare() no longer keeps a streamed body out of the handler. Should: no
    data_received() after a prepare() that finished (e.g. the mixin drops chunks once its
    finish is deferred).
    Suspect: python/tornsession/mixin.py finish() (deferred finish; `_finished` only)."""
    import socket

    store = GatedStore()
    server = servers([(r"/upload", UploadLoginGuard), (r"/peek", Peek)], store)
    STREAM_CALLS.clear()
    store.gating.set()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        assert store.writing.wait(5)
        try:
            for _ in range(5):
                sock.sendall(b"x" * 10000)
        except OSError:
            pass  # the server may stop reading: as plain Tornado does
        store.gating.clear()
        store.gate.set()
        sock.settimeout(5)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 302"), head
    assert STREAM_CALLS == []
    cookie = head.split(b"\r\n\r\n")[0]
    jar = {}
    for line in cookie.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            name, value = line.split(b":", 1)[1].strip().split(b";")[0].split(b"=", 1)
            jar[name.decode()] = value.decode()
    assert peek(server.port, jar).get("n") is None


# ---------------------------------------------------------------- 3. an own prepare() failing late

HOLDING = threading.Event()
RELEASE_HOLD = threading.Event()


class HoldTurn(Mixin):
    async def get(self) -> None:
        self.session["held"] = True
        HOLDING.set()
        while not RELEASE_HOLD.is_set():
            await asyncio.sleep(0.005)
        self.write("held")


class PrepRaisesAfterWait(Mixin):
    async def prepare(self) -> None:
        self.session["tried"] = True
        raise RuntimeError("the app's prepare failed")

    def get(self) -> None:
        self.write("never")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_own_prepare_that_raises_after_waiting_for_the_turn_releases_it(
    servers: Any, make_store: Callable[[str], Any], kind: str
) -> None:
    """A request of the visitor holds the turn; another one, through a handler whose own
    async prepare() changes the session and raises, waits for it (the wrapper's coroutine
    path), then fails: 500, its change not saved, and the visitor's next request is served."""
    server = servers(
        [(r"/inc", Inc), (r"/peek", Peek), (r"/hold", HoldTurn), (r"/x", PrepRaisesAfterWait)],
        make_store(kind),
        order_timeout=3,
    )
    HOLDING.clear()
    RELEASE_HOLD.clear()
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    results: dict[str, Any] = {}

    def call(path: str) -> None:
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            results[path] = b.get(path)

    holder = threading.Thread(target=call, args=("/hold",))
    holder.start()
    assert HOLDING.wait(5)
    claims = _core._turns_in_table()[1]
    failing = threading.Thread(target=call, args=("/x",))
    failing.start()
    for _ in range(1000):  # until the failing request waits in line (5 s at most)
        if _core._turns_in_table()[1] > claims:
            break
        threading.Event().wait(0.005)
    RELEASE_HOLD.set()
    holder.join(5)
    failing.join(5)
    assert results["/hold"] == (200, "held")
    assert results["/x"][0] == 500
    body = peek(server.port, cookies)
    assert body["n"] == 1
