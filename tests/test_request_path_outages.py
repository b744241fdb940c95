"""Store servers failing under load (never a visitor served another one's session), a prepare()
that does not await, the drop-in path's turns.

From issue 20's review: each test names what must hold; where the review found it broken,
its docstring says what was found and where (all fixed since)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornsession
from support.browser import Browser
from support.engine_app import (
    DropIn,
    Mixin,
    peek,
)
from support.request_path import (
    STORE_KINDS,
    DIncAwait,
    IncAwait,
    base_routes,
    make_server,
    raw_request,
    read_response,
    table_empties,
)
from support.threads import run_concurrently

# The request-path tests' fixtures (tests/support/request_path.py): a fresh table baseline, and
# no log record keeping a failed request's handler (and its turn) alive.
pytestmark = pytest.mark.usefixtures("_table_baseline", "_no_log_capture")

# ---------------------------------------------------------------- store servers failing under load


class Who(Mixin):
    def get(self) -> None:
        mark = self.get_argument("mark", None)
        if mark is not None:
            self.session["who"] = mark
        self.write({"who": self.session.get("who"), "id": self.session.session_id})


class DWho(DropIn):
    def get(self) -> None:
        mark = self.get_argument("mark", None)
        if mark is not None:
            self.session["who"] = mark
            self.session.save()
        self.write({"who": self.session.get("who"), "id": self.session.session_id})


def chaos_visitors(
    port: int, seconds: float, problems: list[str], statuses: list[int]
) -> Callable[[int], None]:
    def visitor(index: int) -> None:
        me = f"visitor-{index}"
        deadline = time.monotonic() + seconds
        with Browser(port, timeout=5) as b:
            marked_id = None
            while time.monotonic() < deadline:
                if marked_id is None:
                    status, body = b.get(f"/who?mark={me}")
                    if status == 200:
                        marked_id = json.loads(body)["id"]
                    continue
                status, body = b.get("/who")
                statuses.append(status)
                if status != 200:
                    continue  # an outage may fail a request; it must not mix sessions
                data = json.loads(body)
                if data["who"] not in (None, me):
                    problems.append(f"{me} saw {data}")
                if data["who"] is None:
                    marked_id = None

    return visitor


@pytest.mark.parametrize("style", ["mixin", "dropin"])
@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_paused_then_resumed_store_never_mixes_visitors(
    request: pytest.FixtureRequest, kind: str, style: str
) -> None:
    """The store server (started by this test) is paused (SIGSTOP) past the store's timeout
    while 8 visitors hammer it, then resumed (its backlog of late replies arrives on
    connections whose requests already failed), several times: requests may fail, but no
    visitor is ever served another one's session, the table empties, and afterwards every
    request succeeds."""
    if kind == "redis":
        server = request.getfixturevalue("redis_factory")()
        store: Any = tornsession.RedisStore(server.url, timeout=0.2, connect_timeout=0.3)
    else:
        server = request.getfixturevalue("memcached_factory")()
        store = tornsession.MemcachedStore([server.address], timeout=0.2, connect_timeout=0.3)
    app_server, _ = make_server(
        [(r"/who", Who if style == "mixin" else DWho)], store, order_timeout=2
    )
    problems: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def pauser() -> None:
        while not stop.is_set():
            time.sleep(0.15)
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(0.3)
            os.kill(server.pid, signal.SIGCONT)

    chaos = threading.Thread(target=pauser)
    chaos.start()
    try:
        run_concurrently(chaos_visitors(app_port := app_server.port, 2.0, problems, statuses), 8)
    finally:
        stop.set()
        chaos.join()
        os.kill(server.pid, signal.SIGCONT)
    try:
        assert problems == []
        assert len(statuses) > 50 and statuses.count(200) > 10, statuses
        print(kind, {code: statuses.count(code) for code in set(statuses)})
        with Browser(app_port) as b:
            for _ in range(5):
                assert b.get("/who?mark=after")[0] == 200
            assert json.loads(b.get("/who")[1])["who"] == "after"
        assert table_empties() == (0, 0)
    finally:
        app_server.stop()
        server.kill()


@pytest.mark.parametrize("style", ["mixin", "dropin"])
@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_restarted_store_never_mixes_visitors(
    request: pytest.FixtureRequest, kind: str, style: str
) -> None:
    """The store server is killed and started again on its port (empty) while visitors hammer
    it: sessions may be lost, never crossed; the app recovers."""
    if kind == "redis":
        server = request.getfixturevalue("redis_factory")()
        store: Any = tornsession.RedisStore(server.url, timeout=0.3, connect_timeout=0.3)
    else:
        server = request.getfixturevalue("memcached_factory")()
        store = tornsession.MemcachedStore([server.address], timeout=0.3, connect_timeout=0.3)
    app_server, _ = make_server(
        [(r"/who", Who if style == "mixin" else DWho)], store, order_timeout=2
    )
    problems: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def restarter() -> None:
        while not stop.is_set():
            time.sleep(0.3)
            server.kill()
            time.sleep(0.1)
            server.start()

    chaos = threading.Thread(target=restarter)
    chaos.start()
    try:
        run_concurrently(chaos_visitors(app_server.port, 2.0, problems, statuses), 8)
    finally:
        stop.set()
        chaos.join()
    try:
        assert problems == []
        assert len(statuses) > 50 and statuses.count(200) > 10, statuses
        print(kind, {code: statuses.count(code) for code in set(statuses)})
        with Browser(app_server.port) as b:
            for _ in range(5):
                assert b.get("/who?mark=after")[0] == 200
            assert json.loads(b.get("/who")[1])["who"] == "after"
        assert table_empties() == (0, 0)
    finally:
        app_server.stop()
        server.kill()


# ---------------------------------------------------------------- a prepare() that does not await


class SyncPrepareIncAwait(IncAwait):
    """The mixin's docstring: "A prepare() of your own must call ``await super().prepare()``
    (or ``super().prepare()``)": a plain prepare() calling super().prepare()."""

    def prepare(self) -> None:
        super().prepare()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_plain_prepare_calling_super_keeps_every_increment(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """SessionMixin's docstring allows a prepare() that calls ``super().prepare()`` without
    awaiting it. prepare() now returns a coroutine exactly when it must wait (a turn another
    request holds, a Redis/memcached round trip); a plain prepare() drops it, the load and turn
    never happen, the session loads lazily at first use without a turn, and concurrent
    requests of one visitor lose updates. Should: keep every increment (or refuse loudly).
    Suspect: python/tornsession/mixin.py prepare() / _prepare_after (the docstring's "or
    super().prepare()") and _SessionAttribute.__get__ (lazy load takes no turn)."""
    server = servers(
        [*base_routes(), (r"/sync-prepare", SyncPrepareIncAwait)], store_of(kind), order_timeout=5
    )
    with Browser(server.port) as first:
        assert first.get("/sync-prepare") == (200, "1")
        cookies = dict(first.cookies)

    def visitor(_: int) -> None:
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            for _ in range(10):
                status, body = b.get("/sync-prepare")
                assert status == 200, body

    run_concurrently(visitor, 4)
    gc.collect()  # the dropped coroutines' warnings, here rather than in a later test
    assert peek(server.port, cookies)["n"] == 41
    assert table_empties() == (0, 0)


# ---------------------------------------------------------------- the drop-in path


class DInc(DropIn):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write(str(self.session["n"]))


class DPeek(DropIn):
    def get(self) -> None:
        self.write({"id": self.session.session_id, **dict(self.session)})


class DRaisePrepare(DropIn):
    def prepare(self) -> None:
        raise RuntimeError("prepare failed")


class DFinishPrepare(DropIn):
    def prepare(self) -> None:
        self.redirect("/peek")


class DFinishTwice(DropIn):
    def get(self) -> None:
        self.session["x"] = 1
        self.session.save()
        self.finish("a")
        try:
            self.finish("b")
        except RuntimeError:
            pass


class DSendError(DropIn):
    def get(self) -> None:
        self.send_error(403)


class DHold(DropIn):
    async def get(self) -> None:
        self.session.get("n")
        await asyncio.sleep(float(self.get_argument("sleep", "1.0")))
        self.write("held")


def dropin_routes() -> list[tuple[str, type]]:
    return [
        (r"/inc", DInc),
        (r"/inc-await", DIncAwait),
        (r"/peek", DPeek),
        (r"/raise-prepare", DRaisePrepare),
        (r"/redirect-prepare", DFinishPrepare),
        (r"/finish-twice", DFinishTwice),
        (r"/send-error", DSendError),
        (r"/hold", DHold),
    ]


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize(
    "path", ["/raise-prepare", "/redirect-prepare", "/finish-twice", "/send-error"]
)
def test_dropin_edge_handlers_release_their_turn(
    servers: Any, store_of: Callable[[str], Any], kind: str, path: str
) -> None:
    server = servers(dropin_routes(), store_of(kind), order_timeout=2)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)

    def visitor(_: int) -> None:
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            for _ in range(5):
                assert b.get(path)[0] in (200, 302, 403, 500)
                assert b.get("/inc-await")[0] == 200

    run_concurrently(visitor, 4)
    assert table_empties() == (0, 0)
    assert peek(server.port, cookies)["n"] == 21


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_dropin_long_poll_does_not_block_its_visitor(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    server = servers(dropin_routes(), store_of(kind), order_timeout=1.0)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    poll = raw_request(server.port, cookies, "/hold?sleep=1.5")
    try:
        time.sleep(0.05)
        started = time.monotonic()
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            for _ in range(5):
                assert b.get("/inc")[0] == 200
        assert time.monotonic() - started < 1.2
        assert read_response(poll).startswith(b"HTTP/1.1 200")
    finally:
        poll.close()
    assert table_empties() == (0, 0)
