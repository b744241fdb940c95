"""Store outages under load, and a soak of two app processes sharing one Redis.

Outage: one store server (Redis with an fsync-always append-only file, Redis without
persistence, memcached) behind a Tornado process (tests/apps/outage_app.py, store timeouts
0.5 s). N clients, each sequential over keep-alive HTTP with its own cookies, increment their own
counter; once every client has K acknowledged increments the server is SIGKILLed, kept down
DOWN seconds, started again on the same port, and the clients go on until each has K more. Checked:

- every failed request answered 500 with `SessionStoreError` in the body and in the app's log,
  and overlapped the outage (started before the restart, ended after the kill);
- no request took longer than 2 x timeout + 2 s (a hang check, not a speed claim);
- after the restart every client succeeds again by itself (the time to its first 200 is reported);
- no acknowledged increment is lost, as far as the store keeps data: with the append-only file,
  each client's first count after the restart is its last acknowledged count + 1 (+ 2 when the
  request in flight at the kill had its write land but not its answer); Redis without
  persistence and memcached lose everything on a restart, so there each client's first count
  after the restart is 1 (a fresh session) and counts before and after are consecutive.

Shared soak: two app processes on one Redis, each client alternating between them with one
cookie jar: zero 5xx, zero lost increments, RSS growth of both processes reported and checked
generously (a leak check, not a speed claim).

Long run (docs/soak-and-fuzz.md):
`OUTAGE_CLIENTS=16 OUTAGE_ROUNDS=10 OUTAGE_ACKS=200 SHARED_SOAK_CLIENTS=16
SHARED_SOAK_REQUESTS=5000 pytest -s tests/test_outage_soak.py`
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import redis
from support.processes import RunningApp, rss_mb
from support.servers import HOST, RedisServer, ServerProcess, launch, redis_maker, require_binary

CLIENTS = int(os.environ.get("OUTAGE_CLIENTS", "6"))
ROUNDS = int(os.environ.get("OUTAGE_ROUNDS", "1"))
ACKS = int(
    os.environ.get("OUTAGE_ACKS", "20")
)  # per client, before each kill and after each restart
DOWN = float(os.environ.get("OUTAGE_DOWN_SECONDS", "1.5"))
SHARED_CLIENTS = int(os.environ.get("SHARED_SOAK_CLIENTS", "6"))
SHARED_REQUESTS = int(os.environ.get("SHARED_SOAK_REQUESTS", "150"))

TIMEOUT = 0.5  # the store's connect_timeout and timeout in the app
HANG_LIMIT = 2 * TIMEOUT + 2.0  # a hang check, not a speed claim
PAUSE = 0.01  # between two requests of one client
# Bounds on every load loop: requests per client, and seconds per phase.
MAX_REQUESTS_PER_CLIENT = 50 * ACKS * (ROUNDS + 1) + 1000
PHASE_SECONDS = 30.0 + ACKS * 0.2
WARMUP = 30
MAX_GROWTH_MB = 50


@dataclass
class Result:
    started: float
    ended: float
    status: int  # 0: no HTTP answer
    count: int | None
    error: str | None

    @property
    def latency(self) -> float:
        return self.ended - self.started


class Visitor:
    """One client: sequential requests, one keep-alive connection per app port, one cookie jar."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.connections = {
            port: http.client.HTTPConnection(HOST, port, timeout=HANG_LIMIT + 10) for port in ports
        }
        self.cookies: dict[str, str] = {}
        self.results: list[Result] = []

    def step(self) -> Result:
        port = self.ports[len(self.results) % len(self.ports)]
        connection = self.connections[port]
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.monotonic()
        try:
            connection.request("GET", "/inc", headers=headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            connection.close()  # reconnects at the next request
            result = Result(started, time.monotonic(), 0, None, type(e).__name__)
            self.results.append(result)
            return result
        ended = time.monotonic()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.coded_value
        try:
            data = json.loads(body)
        except ValueError:
            data = {"error": f"unparsable body {body[:80]!r}"}
        if response.status == 200:
            result = Result(started, ended, 200, int(data["count"]), None)
        else:
            result = Result(started, ended, response.status, None, str(data.get("error")))
        self.results.append(result)
        return result

    def acks_since(self, moment: float) -> int:
        return sum(1 for r in list(self.results) if r.status == 200 and r.started >= moment)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def run_until(visitors: list[Visitor], stop: threading.Event) -> list[threading.Thread]:
    deadline = time.monotonic() + PHASE_SECONDS * (2 * ROUNDS + 1)

    def loop(visitor: Visitor) -> None:
        while (
            not stop.is_set()
            and len(visitor.results) < MAX_REQUESTS_PER_CLIENT
            and time.monotonic() < deadline
        ):
            visitor.step()
            time.sleep(PAUSE)

    threads = [threading.Thread(target=loop, args=(v,)) for v in visitors]
    for thread in threads:
        thread.start()
    return threads


def wait_for_acks(visitors: list[Visitor], since: float, threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + PHASE_SECONDS
    while min(v.acks_since(since) for v in visitors) < ACKS:
        if time.monotonic() > deadline or not all(t.is_alive() for t in threads):
            got = [v.acks_since(since) for v in visitors]
            raise AssertionError(f"clients did not reach {ACKS} acknowledged requests: {got}")
        time.sleep(0.02)


@dataclass
class Outage:
    killed: float  # just before the SIGKILL
    restarting: float  # just before the server is started again
    restarted: float  # once its port accepts connections


def run_outages(server: ServerProcess, app: RunningApp) -> tuple[list[Visitor], list[Outage]]:
    visitors = [Visitor([app.port]) for _ in range(CLIENTS)]
    stop = threading.Event()
    outages: list[Outage] = []
    threads = run_until(visitors, stop)
    try:
        since = 0.0
        for _ in range(ROUNDS):
            wait_for_acks(visitors, since, threads)
            killed = time.monotonic()
            server.kill()
            time.sleep(DOWN)
            restarting = time.monotonic()
            server.start()
            since = time.monotonic()
            outages.append(Outage(killed, restarting, since))
        wait_for_acks(visitors, since, threads)
    finally:
        stop.set()
        for thread in threads:
            thread.join(HANG_LIMIT + 30)
        for visitor in visitors:
            visitor.close()
    assert not any(t.is_alive() for t in threads)
    return visitors, outages


def check_outages(
    kind: str, visitors: list[Visitor], outages: list[Outage], app: RunningApp, durable: bool
) -> None:
    results = [r for v in visitors for r in v.results]
    failures = [r for r in results if r.status != 200]
    during = [
        r for r in results if any(r.started < o.restarted and r.ended > o.killed for o in outages)
    ]
    outside = [
        r
        for r in failures
        if not any(r.started < o.restarted and r.ended > o.killed for o in outages)
    ]
    recovery = []  # seconds from each restart command to each client's first 200 after the kill
    for o in outages:
        for v in visitors:
            first = next(r for r in v.results if r.status == 200 and r.started >= o.killed)
            recovery.append(first.ended - o.restarting)
    logged = [line for line in app.lines if "request failed:" in line]
    max_latency = max(r.latency for r in results)
    print(
        f"\noutage {kind}: {len(results)} requests ({CLIENTS} clients, {ROUNDS} outage(s) of "
        f"{DOWN} s), {len(failures)} failed, {len(during)} overlapped an outage, "
        f"{len(outside)} failed outside one; max latency during outage "
        f"{max(r.latency for r in during):.3f} s, overall {max_latency:.3f} s; recovery after "
        f"restart {min(recovery):.3f}-{max(recovery):.3f} s; {len(logged)} failure log lines"
    )
    assert not outside, outside[:5]
    assert all(r.status == 500 and r.error == "SessionStoreError" for r in failures), {
        (r.status, r.error) for r in failures
    }
    assert failures, "no request failed: the outage was not observed"
    assert len(logged) == len(failures), (len(logged), len(failures), app.lines[-5:])
    assert all("request failed: SessionStoreError: " in line for line in logged), logged[:3]
    assert max_latency < HANG_LIMIT
    landed = 0
    for v in visitors:
        landed += check_counts(v, outages, durable)
    if durable:
        print(f"outage {kind}: {landed} unacknowledged write(s) in flight at a kill persisted")


def check_counts(visitor: Visitor, outages: list[Outage], durable: bool) -> int:
    """Checks one client's acknowledged counts; returns how many unacknowledged writes landed."""
    landed = 0
    last = 0
    failed_since_last = False
    pending = list(outages)
    for r in visitor.results:
        if r.status != 200:
            failed_since_last = True
            continue
        assert r.count is not None
        # No request started after a kill can succeed before the restart.
        first_after_restart = bool(pending) and r.started >= pending[0].killed
        if first_after_restart:
            pending.pop(0)
        if first_after_restart and not durable:
            assert r.count == 1, f"not a fresh session after the restart: {r.count}"
        elif durable and failed_since_last and r.count == last + 2:
            landed += 1  # the write of the request in flight at the kill landed, its answer not
        else:
            assert r.count == last + 1, f"after {last} acknowledged, got {r.count}"
        last = r.count
        failed_since_last = False
    assert not pending, "no acknowledged request after a restart"
    return landed


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server persisting every write (append-only file, fsync always) in tmp_path."""
    binary = require_binary("redis-server")
    aof = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)]
    server = launch(redis_maker(binary, tmp_path, *aof))
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.parametrize("kind", ["redis-aof", "redis", "memcached"])
def test_store_outage_under_load_fails_fast_recovers_and_loses_nothing_acknowledged(
    kind: str,
    request: pytest.FixtureRequest,
    redis_factory: Callable[[], RedisServer],
    memcached_factory: Callable[[], ServerProcess],
    start_outage_app: Callable[..., RunningApp],
) -> None:
    server: ServerProcess
    if kind == "redis-aof":
        server = request.getfixturevalue("aof_redis")
        info = redis.Redis(host=HOST, port=server.port).config_get("append*")
        assert info["appendonly"] == "yes" and info["appendfsync"] == "always", info
        args = ["--store", "redis", "--url", f"redis://{HOST}:{server.port}/0"]
    elif kind == "redis":
        server = redis_factory()
        args = ["--store", "redis", "--url", f"redis://{HOST}:{server.port}/0"]
    else:
        server = memcached_factory()
        args = ["--store", "memcached", "--servers", server.address]
    app = start_outage_app(*args, "--timeout", str(TIMEOUT))
    visitors, outages = run_outages(server, app)
    check_outages(kind, visitors, outages, app, durable=kind == "redis-aof")


def test_soak_two_app_processes_sharing_one_redis(
    redis_server: RedisServer, start_outage_app: Callable[..., RunningApp]
) -> None:
    args = ["--store", "redis", "--url", redis_server.url, "--timeout", "5"]
    apps = [start_outage_app(*args), start_outage_app(*args)]
    visitors = [Visitor([a.port for a in apps]) for _ in range(SHARED_CLIENTS)]
    deadline = time.monotonic() + 60 + SHARED_REQUESTS * SHARED_CLIENTS * 0.05

    def run(visitor: Visitor, n: int) -> None:
        for _ in range(n):
            if time.monotonic() > deadline:
                return
            visitor.step()

    try:
        for visitor in visitors:
            run(visitor, WARMUP)
        warm = [rss_mb(a.pid) for a in apps]
        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(v, SHARED_REQUESTS)) for v in visitors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(deadline - time.monotonic() + 30)
        elapsed = time.monotonic() - started
        end = [rss_mb(a.pid) for a in apps]
    finally:
        for visitor in visitors:
            visitor.close()
    results = [r for v in visitors for r in v.results]
    errors_5xx = sum(1 for r in results if r.status >= 500)
    other = sum(1 for r in results if r.status != 200 and r.status < 500)
    lost = 0
    for v in visitors:
        counts = [r.count for r in v.results if r.count is not None]
        lost += sum(1 for i, c in enumerate(counts, 1) if c != i)
    growth = [e - w for w, e in zip(warm, end, strict=True)]
    print(
        f"\nshared soak redis, 2 processes: {len(results)} requests ({SHARED_CLIENTS} clients), "
        f"{errors_5xx} 5xx, {other} other failures, {lost} lost increments, "
        f"{SHARED_CLIENTS * SHARED_REQUESTS / elapsed:.0f} req/s, RSS "
        + ", ".join(f"{w:.1f} -> {e:.1f} MB ({e - w:+.1f})" for w, e in zip(warm, end, strict=True))
    )
    assert len(results) == SHARED_CLIENTS * (WARMUP + SHARED_REQUESTS)
    assert errors_5xx == 0 and other == 0
    assert lost == 0
    assert all(v.results[-1].count == WARMUP + SHARED_REQUESTS for v in visitors)
    assert max(growth) < MAX_GROWTH_MB
    for a in apps:
        assert not [line for line in a.lines if "request failed" in line], a.lines[-5:]
