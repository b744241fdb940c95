"""RedisStore, RedisClusterStore and MemcachedStore against real servers and real HTTP."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import tornsession
from support.any_store import StoreOpener
from support.browser import Browser
from support.processes import AppProcess
from support.servers import HOST, RedisServer, ServerProcess, memcached_command, memcached_stats
from support.stores import saved_session

SECRET = "network-test-secret"
TIMEOUT = 1.0
# A hang check, not a speed claim: a dead server must fail a call within its timeouts plus this.
MARGIN = 3.0


def memcached_items(server: ServerProcess) -> int:
    return int(memcached_stats(server)["curr_items"])


def memcached_has(server: ServerProcess, key: str) -> bool:
    return memcached_command(server, f"get {key}").startswith(b"VALUE ")


# Redis


def test_redis_round_trip_stores_prefixed_key_on_the_server(redis_server: RedisServer) -> None:
    m = tornsession.SessionManager(SECRET, store=tornsession.RedisStore(redis_server.url))
    s = saved_session(m, k=1)
    direct = redis.Redis(host=HOST, port=redis_server.port)
    assert direct.get(f"tornsession:{s.session_id}") is not None
    assert direct.ttl(f"tornsession:{s.session_id}") == -1  # no idle_timeout: no expiry
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"k": 1}


def test_redis_custom_prefix_is_used(redis_server: RedisServer) -> None:
    store = tornsession.RedisStore(redis_server.url, prefix="app2/")
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, k=2)
    assert redis.Redis(host=HOST, port=redis_server.port).exists(f"app2/{s.session_id}") == 1


def test_redis_idle_timeout_sets_ttl_and_key_expires(redis_server: RedisServer) -> None:
    m = tornsession.SessionManager(
        SECRET, store=tornsession.RedisStore(redis_server.url), idle_timeout=1
    )
    s = saved_session(m, k=1)
    key = f"tornsession:{s.session_id}"
    direct = redis.Redis(host=HOST, port=redis_server.port)
    assert 0 < direct.pttl(key) <= 1000
    time.sleep(1.3)
    assert direct.exists(key) == 0
    assert "k" not in m.get(s.session_id, s.hmac_digest)


def test_redis_unreachable_server_error_names_store_and_cause() -> None:
    store = tornsession.RedisStore("redis://127.0.0.1:1/0")
    m = tornsession.SessionManager(SECRET, store=store)
    with pytest.raises(tornsession.SessionStoreError) as raised:
        m.set(m.get())
    message = str(raised.value)
    assert message.startswith("RedisStore('redis://127.0.0.1:1/0'): cannot connect:"), message
    assert "refused" in message.lower()


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(tornsession.SessionStoreError):
        call()
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_killed_server_fails_fast_and_the_store_recovers_when_back(
    kind: str,
    redis_factory: Callable[[], RedisServer],
    memcached_factory: Callable[[], ServerProcess],
) -> None:
    timeouts: dict[str, Any] = {"connect_timeout": TIMEOUT, "timeout": TIMEOUT}
    if kind == "redis":
        server: ServerProcess = redis_factory()
        store: Any = tornsession.RedisStore(f"redis://{HOST}:{server.port}/0", **timeouts)
    else:
        server = memcached_factory()
        store = tornsession.MemcachedStore([server.address], **timeouts)
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, k=1)
    server.kill()
    s["k"] = 2  # a change, so set() has something to write
    waited = [
        timed(lambda: m.get(s.session_id, s.hmac_digest)),
        timed(lambda: m.set(s)),
    ]
    print(f"{type(store).__name__}, server killed: calls failed after {waited} s")
    assert max(waited) < 2 * TIMEOUT + MARGIN
    if kind == "memcached":
        with pytest.raises(
            tornsession.SessionStoreError, match=r"MemcachedStore\(\['127\.0\.0\.1:"
        ):
            m.get(s.session_id, s.hmac_digest)
    server.start()  # same port, empty (no persistence)
    fresh = saved_session(m, k=2)
    assert dict(m.get(fresh.session_id, fresh.hmac_digest)) == {"k": 2}


def test_redis_frozen_server_times_out_instead_of_hanging(
    redis_factory: Callable[[], RedisServer],
) -> None:
    server = redis_factory()
    store = tornsession.RedisStore(server.url, connect_timeout=TIMEOUT, timeout=TIMEOUT)
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, k=1)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        waited = timed(lambda: m.get(s.session_id, s.hmac_digest))
        print(f"RedisStore, server frozen: call failed after {waited:.2f} s")
        assert waited < 2 * TIMEOUT + MARGIN
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"k": 1}


SHARED_APP = "tests.apps.shared_store_app"


def alternate(browser: Browser, first: AppProcess, second: AppProcess, rounds: int = 6) -> None:
    """Visits the two apps in turn with one cookie jar: each counts on from the other's count."""
    for n in range(1, rounds + 1):
        app = first if n % 2 else second
        assert browser.get_json(app.url("/count")) == {"count": n, "port": app.port}


@pytest.mark.parametrize("kind", ["redis", "memcached", "sqlite", "file"])
def test_two_tornado_processes_share_a_store(
    kind: str, request: pytest.FixtureRequest, start_app_process: Callable[..., AppProcess]
) -> None:
    args = StoreOpener(kind, request).args()
    first, second = start_app_process(SHARED_APP, *args), start_app_process(SHARED_APP, *args)
    with Browser(timeout=30) as browser:
        alternate(browser, first, second)


def test_redis_py_client_wrapped_as_store_works_over_http(
    redis_server: RedisServer, start_app_process: Callable[..., AppProcess]
) -> None:
    args = ["--store", "redis-py", "--url", redis_server.url]
    first, second = start_app_process(SHARED_APP, *args), start_app_process(SHARED_APP, *args)
    with Browser(timeout=30) as browser:
        alternate(browser, first, second, rounds=4)
    direct = redis.Redis(host=HOST, port=redis_server.port)
    keys = [k for k in direct.keys("tornsession:*") if 0 < direct.ttl(k) <= 3600]
    assert keys, "the wrapper stored no key with the app's idle_timeout as TTL"


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_handler_answers_500_while_store_is_down_and_200_once_back(
    kind: str,
    redis_factory: Callable[[], RedisServer],
    memcached_factory: Callable[[], ServerProcess],
    start_app_process: Callable[..., AppProcess],
) -> None:
    if kind == "redis":
        server: ServerProcess = redis_factory()
        args = ["--store", "redis", "--url", f"redis://{HOST}:{server.port}/0"]
    else:
        server = memcached_factory()
        args = ["--store", "memcached", "--servers", server.address]
    app = start_app_process(SHARED_APP, *args, "--timeout", str(TIMEOUT))
    with Browser(app.port, timeout=30) as browser:
        assert browser.status("/count") == 200
        server.kill()
        started = time.monotonic()
        assert browser.status("/count") == 500
        waited = time.monotonic() - started
        print(f"{kind}: HTTP request with the store down answered 500 after {waited:.2f} s")
        assert waited < 2 * TIMEOUT + MARGIN
        server.start()
        assert browser.status("/count") == 200


# Redis Cluster


def test_redis_cluster_spreads_sessions_over_nodes_and_loads_them(
    redis_cluster: list[RedisServer],
) -> None:
    store = tornsession.RedisClusterStore([redis_cluster[0].url.removesuffix("/0")])
    m = tornsession.SessionManager(SECRET, store=store, idle_timeout=600)
    nodes = [redis.Redis(host=HOST, port=n.port) for n in redis_cluster]
    before = [node.dbsize() for node in nodes]
    sessions = [saved_session(m, i=i) for i in range(30)]
    per_node = [node.dbsize() - b for node, b in zip(nodes, before, strict=True)]
    assert sum(per_node) == 30, per_node
    assert all(count > 0 for count in per_node), per_node
    for s in sessions:
        assert m.get(s.session_id, s.hmac_digest)["i"] == s["i"]
    # Each key sits on the node owning its slot, with the idle_timeout as TTL.
    key = f"tornsession:{sessions[0].session_id}"
    slot = nodes[0].execute_command("CLUSTER KEYSLOT", key)  # type: ignore[no-untyped-call]
    owners = [n for n in nodes if n.cluster("COUNTKEYSINSLOT", slot) > 0]
    assert len(owners) == 1
    assert 0 < owners[0].ttl(key) <= 600


# Memcached


def test_memcached_round_trip(memcached_servers: list[ServerProcess]) -> None:
    store = tornsession.MemcachedStore([f"memcache://{memcached_servers[0].address}"])
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, k=1, text="ünïcode")
    assert memcached_has(memcached_servers[0], f"tornsession:{s.session_id}")
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"k": 1, "text": "ünïcode"}


def test_memcached_spreads_sessions_over_two_servers_and_finds_each(
    memcached_servers: list[ServerProcess],
) -> None:
    before = [memcached_items(server) for server in memcached_servers]
    store = tornsession.MemcachedStore([server.address for server in memcached_servers])
    m = tornsession.SessionManager(SECRET, store=store)
    sessions = [saved_session(m, i=i) for i in range(40)]
    added = [
        memcached_items(server) - b for server, b in zip(memcached_servers, before, strict=True)
    ]
    assert sum(added) == 40, added
    assert all(n > 0 for n in added), added
    for s in sessions:
        assert m.get(s.session_id, s.hmac_digest)["i"] == s["i"]
        key = f"tornsession:{s.session_id}"
        assert sum(memcached_has(server, key) for server in memcached_servers) == 1


def test_memcached_idle_timeout_expires_the_value_on_the_server(
    memcached_servers: list[ServerProcess],
) -> None:
    server = memcached_servers[0]
    m = tornsession.SessionManager(
        SECRET, store=tornsession.MemcachedStore([server.address]), idle_timeout=1
    )
    s = saved_session(m, k=1)
    key = f"tornsession:{s.session_id}"
    assert memcached_has(server, key)
    time.sleep(2.5)  # memcached's clock ticks in whole seconds
    assert not memcached_has(server, key)
    assert "k" not in m.get(s.session_id, s.hmac_digest)
