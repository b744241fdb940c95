"""The async API's own Redis and memcached connections (``tornsession._wire``,
``crates/py/src/wire_link/`` around ``crates/core/src/stores/reply_queue.rs``) over real HTTP,
against real servers and hostile fake ones.

- Requests of many sessions load and save without a worker thread, pipelined on a few
  connections per server and event loop; the drop-in path's load does not block the IOLoop.
- What the async path writes the blocking path reads, and the other way round; memcached keys
  land on the server the blocking client picks.
- A server that does not answer, answers garbage, or closes mid-reply fails the waiting
  requests with ``SessionStoreError`` (a 500) within the store's timeout; the next request
  gets a new connection. Servers killed and restarted under load: requests fail while they
  are down and succeed again after, with nothing else affected.
"""

from __future__ import annotations

import gc
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py
import tornado.web
import tornsession
from support.any_store import StoreOpener
from support.browser import Browser
from support.engine_app import (
    COOKIE_SECRET,
    SESSION_SECRET,
    DropIn,
    Mixin,
    Server,
    digest_of,
    routes,
)
from support.servers import (
    RedisServer,
    ServerProcess,
    client_connections,
    launch,
    redis_argv,
    require_binary,
)
from support.threads import LoopbackListener, run_concurrently
from tornado.web import create_signed_value
from tornsession import _session

KINDS = ["redis", "memcached"]
STYLES = {"dropin": DropIn, "mixin": Mixin}


@pytest.fixture
def no_store_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes any use of the store thread pool fail the request, and records it."""
    used: list[str] = []

    def refuse() -> Any:
        used.append(threading.current_thread().name)
        raise AssertionError("a store call went to a worker thread")

    monkeypatch.setattr(_session, "_store_executor", refuse)
    return used


def network_store(kind: str, request: pytest.FixtureRequest, **options: Any) -> Any:
    return StoreOpener(kind, request)(**options)


def signed_cookies(session_id: str) -> dict[str, str]:
    """The cookies of a session that passes the signature checks, so its record is loaded."""
    return {
        name: create_signed_value(COOKIE_SECRET, name, value).decode()
        for name, value in [("session_id", session_id), ("hmac_digest", digest_of(session_id))]
    }


def visit_concurrently(port: int, clients: int, requests: int) -> list[int]:
    """`clients` visitors, each its own session, `requests` increments each, all at once; the
    count each ends with."""
    finals: list[int] = [0] * clients

    def visitor(index: int) -> None:
        with Browser(port) as browser:
            for _ in range(requests):
                status, body = browser.get("/inc")
                assert status == 200, body
            finals[index] = int(body)

    run_concurrently(visitor, clients)
    return finals


def own_servers(kind: str, request: pytest.FixtureRequest) -> tuple[list[ServerProcess], Any]:
    """Servers nobody else uses, and a store on them."""
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_factory")()
        return [redis], tornsession.RedisStore(redis.url, timeout=0.5, connect_timeout=0.5)
    processes = [request.getfixturevalue("memcached_factory")() for _ in range(2)]
    store = tornsession.MemcachedStore(
        [p.address for p in processes], timeout=0.5, connect_timeout=0.5
    )
    return processes, store


@pytest.mark.parametrize("kind", KINDS)
def test_many_sessions_load_and_save_on_the_loop_over_a_few_connections_per_server(
    kind: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., Server],
    no_store_threads: list[str],
) -> None:
    processes, store = own_servers(kind, request)
    server = serve("mixin", "given", store=store)
    finals = visit_concurrently(server.port, clients=8, requests=25)
    assert finals == [25] * 8
    assert no_store_threads == []
    # Every load and save of the 8 visitors went over a few pipelined connections per server.
    assert all(count <= 4 for count in client_connections(processes))
    assert sum(client_connections(processes)) >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_drop_in_style_loads_on_the_loop_and_keeps_every_update(
    kind: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., Server],
    no_store_threads: list[str],
) -> None:
    """The drop-in's loads go over the wire (no thread either); its save() stays synchronous,
    on the store's own pooled connections."""
    _, store = own_servers(kind, request)
    server = serve("dropin", "given", store=store)
    assert visit_concurrently(server.port, clients=8, requests=25) == [25] * 8
    assert no_store_threads == []


@pytest.mark.parametrize("kind", KINDS)
def test_what_the_async_path_writes_the_blocking_path_reads_and_back(
    kind: str, request: pytest.FixtureRequest, serve: Callable[..., Server]
) -> None:
    store = network_store(kind, request)
    server = serve("mixin", "given", store=store)
    with Browser(server.port) as browser:
        for _ in range(3):
            assert browser.get("/inc")[0] == 200
        session_id = json.loads(browser.get("/peek")[1])["id"]
        blocking = tornsession.SessionManager(SESSION_SECRET, store=store)
        session = blocking.get(session_id, digest_of(session_id))
        assert session.session_id == session_id and session["n"] == 3
        session["n"] = 10
        blocking.set(session)
        status, body = browser.get("/inc")
        assert (status, body) == (200, "11")


def test_memcached_keys_land_where_the_blocking_client_looks(
    request: pytest.FixtureRequest, serve: Callable[..., Server]
) -> None:
    servers: list[ServerProcess] = request.getfixturevalue("memcached_servers")
    store = network_store("memcached", request)
    server = serve("mixin", "given", store=store)
    ids = []
    for _ in range(40):
        with Browser(server.port) as browser:
            assert browser.get("/inc")[0] == 200
            ids.append(json.loads(browser.get("/peek")[1])["id"])
    on_each = []
    for one in servers:
        alone = tornsession.MemcachedStore([one.address], prefix=store.prefix)
        on_each.append({i for i in ids if tornsession._core._store_load(alone, i, 1 << 20)})
    # Both servers hold some, no key is on both, and every one is found by the pair.
    assert all(on_each), [len(s) for s in on_each]
    assert not (on_each[0] & on_each[1])
    assert on_each[0] | on_each[1] == set(ids)
    for i in ids:
        assert tornsession._core._store_load(store, i, 1 << 20) is not None


def test_the_drop_in_load_does_not_block_the_ioloop(serve: Callable[..., Server]) -> None:
    """A Redis that answers after 0.8 s: a request without a session, sent while a session
    request waits for its load, is answered first."""
    with SilentServer(delay=0.8, reply=b"$-1\r\n") as fake:
        store = tornsession.RedisStore(f"redis://127.0.0.1:{fake.port}/0", timeout=5.0)
        server = serve("dropin", "given", store=store)
        finished: dict[str, float] = {}

        def session_request() -> None:
            with Browser(server.port) as browser:
                browser.cookies = signed_cookies("a" * 32)
                browser.get("/peek")
            finished["session"] = time.monotonic()

        slow = threading.Thread(target=session_request)
        slow.start()
        assert fake.received.wait(5)  # the load is on the wire
        with Browser(server.port) as plain:
            assert plain.get("/in-flight")[0] == 200
        finished["plain"] = time.monotonic()
        slow.join()
        assert finished["plain"] < finished["session"]


class SilentServer(LoopbackListener):
    """A fake store server on loopback: answers every command after `delay` with `reply`
    (None: never), or closes after sending part of it (`close_after`)."""

    def __init__(
        self, delay: float = 0.0, reply: bytes | None = None, close_after: int | None = None
    ) -> None:
        self.delay = delay
        self.reply = reply
        self.close_after = close_after
        self.received = threading.Event()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            while not self.stopped:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received.set()
                if self.reply is None:
                    continue
                time.sleep(self.delay)
                reply = self.reply
                if self.close_after is not None:
                    conn.sendall(reply[: self.close_after])
                    return
                # one reply per RESP command (each starts a line with '*')
                for _ in range(max(1, len(re.findall(rb"(?:^|\r\n)\*", data)))):
                    try:
                        conn.sendall(reply)
                    except OSError:
                        return

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.mark.parametrize(
    ("case", "reply", "close_after"),
    [
        ("never answers", None, None),
        ("answers garbage", b"?? this is not RESP\r\n", None),
        ("closes mid-reply", b"$100\r\nonly part", 12),
    ],
)
@pytest.mark.parametrize("style", STYLES)
def test_a_broken_server_fails_waiting_requests_within_the_timeout_then_reconnects(
    case: str,
    reply: bytes | None,
    close_after: int | None,
    style: str,
    serve: Callable[..., Server],
) -> None:
    with SilentServer(reply=reply, close_after=close_after) as fake:
        store = tornsession.RedisStore(
            f"redis://127.0.0.1:{fake.port}/0", timeout=0.5, connect_timeout=0.5
        )
        server = serve(style, "given", store=store)
        results: list[tuple[int, float]] = []

        def visitor() -> None:
            with Browser(server.port) as browser:
                browser.cookies = signed_cookies("c" * 32)
                started = time.monotonic()
                status, _ = browser.get("/peek")
                results.append((status, time.monotonic() - started))

        threads = [threading.Thread(target=visitor) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Every waiting request failed as a store error, well within a few timeouts.
        assert [status for status, _ in results] == [500] * 4, (case, results)
        assert max(took for _, took in results) < 3.0, results
        first = fake.connections
        visitor()
        assert results[-1][0] == 500
        assert fake.connections > first  # the failed connection was replaced


@pytest.mark.parametrize("kind", KINDS)
def test_servers_killed_and_restarted_under_load(
    kind: str, request: pytest.FixtureRequest, serve: Callable[..., Server]
) -> None:
    processes, store = own_servers(kind, request)
    server = serve("mixin", "given", store=store)
    statuses: list[int] = []
    stop = threading.Event()

    def visitor() -> None:
        with Browser(server.port) as browser:
            while not stop.is_set():
                status, _ = browser.get("/inc")
                statuses.append(status)
                if status != 200:
                    browser.cookies.clear()  # a later request starts a fresh session

    threads = [threading.Thread(target=visitor) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for process in processes:
        process.kill()
    time.sleep(0.7)
    down = len(statuses)
    for process in processes:
        process.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {200, 500}, set(statuses)
    assert 500 in statuses[:down]  # the outage was seen
    assert statuses[-8:] == [200] * 8  # and is over: the connections were made again
    with Browser(server.port) as browser:
        assert [browser.get("/inc")[1] for _ in range(3)] == ["1", "2", "3"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_owned_session_still_loads_through_the_blocking_path(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """An owned session's load needs its index or generation too: the wire load hands it to
    a worker thread, and the result is the same."""
    store = network_store(kind, request)
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store)

    class Login(tornsession.SessionMixin, tornado.web.RequestHandler):
        async def get(self) -> None:
            if self.get_argument("login", None):
                self.session.set_user("alice")
            self.session["n"] = self.session.get("n", 0) + 1
            self.write(str(self.session["n"]))

    app = tornado.web.Application([(r"/", Login)], cookie_secret=COOKIE_SECRET)
    app.session_manager = manager  # type: ignore[attr-defined]
    server = Server(app)
    try:
        with Browser(server.port) as browser:
            assert browser.get("/?login=1") == (200, "1")
            assert browser.get("/") == (200, "2")
            assert browser.get("/") == (200, "3")
    finally:
        server.stop()


def test_the_wire_module_keeps_no_attempts_after_use() -> None:
    from tornsession import _wire

    assert _wire._attempts == {}


@pytest.fixture
def redis_with_password(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    binary = require_binary("redis-server")
    folder = tmp_path_factory.mktemp("redis-auth")
    # Probed by a plain connect: the usual probe (INFO without a password) is refused here.
    server = launch(
        lambda port: ServerProcess(
            redis_argv(binary, port, "--requirepass", "s3cret-pass"), port, folder, None
        )
    )
    yield server
    server.kill()


def test_the_blocking_path_says_noauth_when_no_password_was_given(
    redis_with_password: ServerProcess,
) -> None:
    """A forgotten password is reported as the server's NOAUTH on the blocking path too (as the
    async path says it), not only as replies "out of step" (the issue-19 review)."""
    store = tornsession.RedisStore(f"redis://127.0.0.1:{redis_with_password.port}")
    manager = tornsession.SessionManager(SESSION_SECRET, store=store)
    session = manager.get()
    session["a"] = 1
    with pytest.raises(tornsession.SessionStoreError) as raised:
        manager.set(session)
    assert "NOAUTH" in str(raised.value), str(raised.value)


def test_the_connection_greets_with_auth_and_select_and_a_wrong_password_is_a_500(
    redis_with_password: ServerProcess,
    serve: Callable[..., Server],
    no_store_threads: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = redis_with_password.port
    good = tornsession.RedisStore(f"redis://:s3cret-pass@127.0.0.1:{port}/3")
    server = serve("mixin", "given", store=good)
    with Browser(server.port) as browser:
        assert [browser.get("/inc")[1] for _ in range(3)] == ["1", "2", "3"]
    client = redis_py.Redis(host="127.0.0.1", port=port, password="s3cret-pass", db=3)
    assert client.dbsize() == 1  # written in db 3, as SELECT asked
    client.close()
    bad = tornsession.RedisStore(f"redis://:wrong-pass@127.0.0.1:{port}/3")
    server = serve("mixin", "given", store=bad)
    with Browser(server.port) as browser:
        browser.get("/inc")
        browser.cookies = signed_cookies("e" * 32)
        status, _ = browser.get("/peek")
    assert status == 500
    logged = "\n".join(record.getMessage() + str(record.exc_info) for record in caplog.records)
    assert "WRONGPASS" in logged or "invalid" in logged, logged
    assert "wrong-pass" not in logged
    assert no_store_threads == []


@pytest.mark.parametrize("kind", KINDS)
def test_two_event_loops_sharing_a_store_keep_one_connection_each(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Two Tornado servers on their own loops (threads), one manager: each loop keeps its
    own connection to each server, rather than each replacing (and leaking) the other's."""
    processes, store = own_servers(kind, request)
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store)
    servers = []
    for _ in range(2):
        app = tornado.web.Application(routes(Mixin), cookie_secret=COOKIE_SECRET)
        app.session_manager = manager  # type: ignore[attr-defined]
        servers.append(Server(app))
    try:
        with Browser(servers[0].port) as first, Browser(servers[1].port) as second:
            for n in range(1, 101):
                assert first.get("/inc") == (200, str(n))
                assert second.get("/inc") == (200, str(n))
        assert all(count <= 2 for count in client_connections(processes))
    finally:
        for server in servers:
            server.stop()


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio's, for a closed loop's socket
@pytest.mark.parametrize("kind", KINDS)
def test_connections_of_closed_loops_are_closed_not_kept(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A loop per test case (tornado.testing) or per asyncio.run(): the connection a closed
    loop made is closed when the next loop connects, so they do not pile up."""
    processes, store = own_servers(kind, request)
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store)
    for _ in range(12):
        app = tornado.web.Application(routes(Mixin), cookie_secret=COOKIE_SECRET)
        app.session_manager = manager  # type: ignore[attr-defined]
        server = Server(app)
        try:
            with Browser(server.port) as browser:
                assert [browser.get("/inc")[1] for _ in range(3)] == ["1", "2", "3"]
        finally:
            server.stop()
    gc.collect()  # the closed loops' transports, so their ResourceWarnings come in this test
    # The last loop's connection may still be open (nobody connected after it): at most one
    # per server, against 12 without the clean-up.
    deadline = time.monotonic() + 5
    while max(client_connections(processes)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert max(client_connections(processes)) <= 1
