"""What the request-path attack tests share (tests/test_request_path_*.py): a server per test,
the turn table's check, handlers that end requests in odd ways, raw HTTP helpers."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
import tornado.websocket
import tornsession
from tornsession import _core

from support.browser import Browser
from support.engine_app import (
    COOKIE_SECRET,
    SESSION_SECRET,
    DropIn,
    Mixin,
    Server,
)
from support.stores import DictStore

#: The table as this test found it: a test whose finding leaks entries (the stopped-loop one)
#: must not fail the tests after it.
_BASELINE = (0, 0)


@pytest.fixture
def _table_baseline() -> Any:
    global _BASELINE
    gc.collect()
    _BASELINE = _core._turns_in_table()
    yield


def table_empties(timeout: float = 3.0) -> tuple[int, int]:
    """The turn table once nothing is in flight: (sessions in flight, claims still known),
    polled with a bound (releases run on the server's loop just after the response is
    written). A done claim stays known while its ``_Turn`` lives, and pytest's log capture can
    keep a failed request's traceback (its handler, session and turn) alive: under pytest's
    logging plugin only the first number is checked (run with ``-p no:logging`` for both;
    outside pytest both were checked by hand to reach 0)."""
    import logging

    capturing = any(
        type(h).__name__ in ("LogCaptureHandler", "_LiveLoggingNullHandler")
        for h in logging.getLogger().handlers
    )
    deadline = time.monotonic() + timeout
    base_in_flight, base_claims = _BASELINE
    while True:
        gc.collect()
        in_flight, claims = _core._turns_in_table()
        in_flight -= base_in_flight
        state = (in_flight, 0 if capturing else max(claims - base_claims, 0))
        if state == (0, 0) or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def make_server(
    routes: list[tuple[str, type]], store: Any = None, **options: Any
) -> tuple[Server, Any]:
    store = tornsession.MemoryStore() if store is None else store
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store, **options)
    app = tornado.web.Application(routes, cookie_secret=COOKIE_SECRET)
    app.session_manager = manager  # type: ignore[attr-defined]
    app.store = store  # type: ignore[attr-defined]
    return Server(app), manager


@pytest.fixture
def servers() -> Any:
    made: list[Server] = []

    def start(routes: list[tuple[str, type]], store: Any = None, **options: Any) -> Server:
        server, _ = make_server(routes, store, **options)
        made.append(server)
        return server

    yield start
    for server in made:
        if not server.loop.is_closed():  # a test may have closed its loop
            server.stop()


class _DropTraceback:
    """Formats a record's traceback into its text and drops the traceback itself."""

    def filter(self, record: Any) -> bool:
        import logging

        if record.exc_info and record.exc_info[2] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True


@pytest.fixture
def _no_log_capture() -> Any:
    """pytest's log capture keeps each record, whose traceback holds the failed handler and
    its turn: the table's done claims would stay counted. Production logging keeps none."""
    import logging

    names = ["tornado.application", "tornado.general", "tornado.access", "tornsession", "asyncio"]
    drop = _DropTraceback()
    for name in names:
        logging.getLogger(name).addFilter(drop)
    yield
    for name in names:
        logging.getLogger(name).removeFilter(drop)


# ---------------------------------------------------------------- handlers


class Inc(Mixin):
    def get(self) -> None:
        n = self.session.get("n", 0) + 1
        self.session["n"] = n
        self.write(str(n))


class IncAwait(Mixin):
    async def get(self) -> None:
        n = self.session.get("n", 0)
        await asyncio.sleep(0.001)
        self.session["n"] = n + 1
        self.write(str(n + 1))


class Peek(Mixin):
    def get(self) -> None:
        self.write({"id": self.session.session_id, **dict(self.session)})


class FinishTwice(Mixin):
    def get(self) -> None:
        self.session["twice"] = self.session.get("twice", 0) + 1
        self.finish("a")
        try:
            self.finish("b")
        except RuntimeError:
            pass


class FinishTwiceAsync(Mixin):
    async def get(self) -> None:
        self.session["twice"] = self.session.get("twice", 0) + 1
        first = self.finish("a")
        try:
            self.finish("b")
        except RuntimeError:
            pass
        await first


class FlushThenChange(Mixin):
    async def get(self) -> None:
        self.session["before"] = self.session.get("before", 0) + 1
        self.write("x")
        await self.flush()
        self.session["after"] = self.session.get("after", 0) + 1
        self.write("y")


class Redirect(Mixin):
    def get(self) -> None:
        self.session["redirected"] = self.session.get("redirected", 0) + 1
        self.redirect("/peek")


class SendError(Mixin):
    def get(self) -> None:
        self.session["send_error"] = True
        self.send_error(403)


class SendError500(Mixin):
    def get(self) -> None:
        self.session["send_error_500"] = True
        self.send_error(500)


class RaiseFinish(Mixin):
    def get(self) -> None:
        self.session["raised_finish"] = self.session.get("raised_finish", 0) + 1
        raise tornado.web.Finish("done")


class RaiseHTTPError(Mixin):
    def get(self) -> None:
        self.session["http_error"] = True
        raise tornado.web.HTTPError(404)


class RaiseInPrepare(Mixin):
    async def prepare(self) -> None:
        await super().prepare()
        self.session["prepared"] = True
        raise RuntimeError("prepare failed")

    def get(self) -> None:
        self.write("never")


class RaiseBeforeSuper(Mixin):
    def prepare(self) -> Any:
        raise tornado.web.HTTPError(401)


class FinishInPrepare(Mixin):
    async def prepare(self) -> None:
        await super().prepare()
        self.session["finished_in_prepare"] = self.session.get("finished_in_prepare", 0) + 1
        self.finish("early")

    def get(self) -> None:
        self.write("the method ran")


class Hold(Mixin):
    """A long poll: reads its session, holds the request for `sleep` seconds, writes nothing."""

    async def get(self) -> None:
        self.session.get("n")
        await asyncio.sleep(float(self.get_argument("sleep", "1.0")))
        self.write("held")


class HoldChanged(Mixin):
    async def get(self) -> None:
        self.session["held"] = True
        await asyncio.sleep(float(self.get_argument("sleep", "1.0")))
        self.write("held")


class Logout(Mixin):
    async def post(self) -> None:
        await self.session.adestroy()


class Clear(Mixin):
    def post(self) -> None:
        self.session.clear()


class AsyncFinishNoAwait(Mixin):
    """finish() called from an async get and not awaited, then more code."""

    async def get(self) -> None:
        self.session["nf"] = self.session.get("nf", 0) + 1
        self.finish("ok")
        self.session["late"] = True


def base_routes() -> list[tuple[str, type]]:
    return [
        (r"/inc", Inc),
        (r"/inc-await", IncAwait),
        (r"/peek", Peek),
        (r"/finish-twice", FinishTwice),
        (r"/finish-twice-async", FinishTwiceAsync),
        (r"/flush", FlushThenChange),
        (r"/redirect", Redirect),
        (r"/send-error", SendError),
        (r"/send-error-500", SendError500),
        (r"/raise-finish", RaiseFinish),
        (r"/http-error", RaiseHTTPError),
        (r"/raise-prepare", RaiseInPrepare),
        (r"/raise-before-super", RaiseBeforeSuper),
        (r"/finish-in-prepare", FinishInPrepare),
        (r"/hold", Hold),
        (r"/hold-changed", HoldChanged),
        (r"/logout", Logout),
        (r"/clear", Clear),
        (r"/finish-no-await", AsyncFinishNoAwait),
    ]


STORE_KINDS = ["memory", "redis", "memcached"]
DEFERRING_KINDS = [*STORE_KINDS, "sqlite", "file"]


@pytest.fixture
def store_of(make_store: Callable[[str], Any]) -> Callable[[str], Any]:
    return make_store


def raw_request(port: int, cookies: dict[str, str], path: str, extra: bytes = b"") -> socket.socket:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {header}\r\n\r\n".encode() + extra)
    return sock


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        out = digits[n % 36] + out
        n //= 36
        if n == 0:
            return out


def mint_compact(session_id: str, issued: int, secret: str = SESSION_SECRET) -> str:
    issued36 = base36(issued)
    mac = hmac.new(
        secret.encode(),
        b"tornsession compact cookie v1\0" + f"{session_id}.{issued36}".encode(),
        hashlib.sha256,
    ).digest()[:24]
    return f"{session_id}.{issued36}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def raw_get(port: int, path: str, cookie_header: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        sock.sendall(f"{request}Cookie: {cookie_header}\r\n\r\n".encode("latin-1"))
        data = read_response(sock)
    status = int(data.split(b" ", 2)[1])
    return status, data


def raw_get_headers(port: int, path: str, headers: list[str]) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = "".join(f"{h}\r\n" for h in headers)
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}\r\n".encode("latin-1")
        )
        data = read_response(sock)
    status = int(data.split(b" ", 2)[1])
    body = data.split(b"\r\n\r\n", 1)[1]
    return status, (json.loads(body) if status == 200 else {})


class DIncAwait(DropIn):
    async def get(self) -> None:
        n = self.session.get("n", 0)
        await asyncio.sleep(0.001)
        self.session["n"] = n + 1
        self.session.save()
        self.write(str(n + 1))


# What the second review's tests add (tests/test_request_path_review_*.py).


class GatedStore(DictStore):
    """A Python store (its calls run on a worker thread) whose set() waits for `gate` while
    `gating` is set, telling `writing` it started."""

    def __init__(self) -> None:
        super().__init__()
        self.gating = threading.Event()
        self.gate = threading.Event()
        self.writing = threading.Event()

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        if self.gating.is_set():
            self.writing.set()
            assert self.gate.wait(10)
        super().set(key, value, ttl)


def make_app(routes: list[tuple[str, type]], store: Any, **options: Any) -> tornado.web.Application:
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store, **options)
    app = tornado.web.Application(routes, cookie_secret=COOKIE_SECRET)
    app.session_manager = manager  # type: ignore[attr-defined]
    return app


KEPT: list[Any] = []


class FinishWithBadChunk(Mixin):
    """Changes its session, then finish() with a chunk write() refuses (an app bug: a 500)."""

    def get(self) -> None:
        KEPT.append(self)  # alive as long as a reference cycle would keep it
        self.session["n"] = self.session.get("n", 0) + 1
        self.finish([1, 2])  # type: ignore[arg-type]


def bad_chunk_routes() -> list[tuple[str, type]]:
    return [(r"/inc", Inc), (r"/peek", Peek), (r"/bad-chunk", FinishWithBadChunk)]


async def inc_awaiting(handler: Any) -> None:
    n = handler.session.get("n", 0)
    await asyncio.sleep(0.002)  # the session's other requests run here
    handler.session["n"] = n + 1
    handler.write(str(n + 1))


class PrepAsyncNoSuper(Mixin):
    async def prepare(self) -> None:
        await asyncio.sleep(0)
        self.seen = self.session.get("n")

    async def get(self) -> None:
        await inc_awaiting(self)


def request_in_background(
    port: int, cookies: dict[str, str], path: str = "/inc"
) -> tuple[threading.Thread, list[tuple[int, str]]]:
    """Another request of the visitor (B), on a thread: join the thread, then read its answer."""
    results: list[tuple[int, str]] = []

    def run() -> None:
        with Browser(port) as browser:
            browser.cookies = dict(cookies)
            results.append(browser.get(path))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results
