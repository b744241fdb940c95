"""Soak, short version: N clients x M requests over real HTTP against a Tornado process, one
store at a time. Each client is sequential with its own cookie jar and counts: zero 5xx, zero lost
increments. The server's RSS once warm vs at the end is reported and checked generously (a leak
check, not a speed claim).

`SOAK_CLIENTS=16 SOAK_REQUESTS=5000` for a long run (docs/soak-and-fuzz.md).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from support.processes import AppProcess, rss_mb
from support.servers import RedisServer, ServerProcess

CLIENTS = int(os.environ.get("SOAK_CLIENTS", "8"))
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "150"))
WARMUP = 30
MAX_GROWTH_MB = 50


class Client:
    """One visitor: sequential requests on a keep-alive connection, its own cookie jar."""

    def __init__(self, port: int) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}
        self.expected = 0
        self.errors_5xx = 0
        self.lost = 0
        self.other = 0

    def step(self) -> None:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.connection.request("GET", "/inc", headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.coded_value
        if response.status >= 500:
            self.errors_5xx += 1
            return
        if response.status != 200:
            self.other += 1
            return
        self.expected += 1
        count = json.loads(body)["count"]
        if count != self.expected:
            self.lost += self.expected - count
            self.expected = count

    def run(self, n: int) -> None:
        for _ in range(n):
            self.step()

    def close(self) -> None:
        self.connection.close()


def soak(app: AppProcess, label: str) -> None:
    assert app.process is not None
    clients = [Client(app.port) for _ in range(CLIENTS)]
    try:
        for client in clients:
            client.run(WARMUP)
        warm = rss_mb(app.process.pid)
        started = time.monotonic()
        threads = [threading.Thread(target=c.run, args=(REQUESTS,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed = time.monotonic() - started
        end = rss_mb(app.process.pid)
    finally:
        for client in clients:
            client.close()
    total = CLIENTS * (WARMUP + REQUESTS)
    errors = sum(c.errors_5xx for c in clients)
    lost = sum(c.lost for c in clients)
    other = sum(c.other for c in clients)
    print(
        f"\nsoak {label}: {total} requests ({CLIENTS} clients), {errors} 5xx, {other} non-200, "
        f"{lost} lost increments, {CLIENTS * REQUESTS / elapsed:.0f} req/s, "
        f"RSS {warm:.1f} -> {end:.1f} MB ({end - warm:+.1f})"
    )
    assert errors == 0 and other == 0
    assert lost == 0
    assert all(c.expected == WARMUP + REQUESTS for c in clients)
    assert end - warm < MAX_GROWTH_MB


@pytest.fixture
def start_soak_app(start_app_process: Callable[..., AppProcess]) -> Callable[..., AppProcess]:
    return functools.partial(start_app_process, "tests.apps.soak_app")


@pytest.mark.parametrize("store", ["memory", "file", "sqlite"])
def test_soak_local_stores(
    start_soak_app: Callable[..., AppProcess], tmp_path: Path, store: str
) -> None:
    path = {"memory": [], "file": ["--path", str(tmp_path / "s")]}.get(
        store, ["--path", str(tmp_path / "s.db")]
    )
    soak(start_soak_app("--store", store, *path), store)


def test_soak_redis(start_soak_app: Callable[..., AppProcess], redis_server: RedisServer) -> None:
    soak(start_soak_app("--store", "redis", "--url", redis_server.url), "redis")


def test_soak_memcached(
    start_soak_app: Callable[..., AppProcess], memcached_servers: list[ServerProcess]
) -> None:
    servers = [s.address for s in memcached_servers]
    soak(start_soak_app("--store", "memcached", "--servers", *servers), "memcached")
