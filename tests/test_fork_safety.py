"""The blocking store clients after a fork (``tornado.process.fork_processes``) and against servers
that refuse or drip: a process never reads another's replies, a child can connect whether or not
its parent used the store, a refused memcached connect fails at once, and a dripping reply fails
once the command's timeout has passed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tornsession
from support.servers import HOST, RedisServer, ServerProcess, free_port
from tornsession._core import _store_load

SECRET = "fork-safety-secret-of-32-bytes-or-more"

# What every script starts with: the store its arguments name (the kind, then its servers as
# JSON), its keys under a prefix of the process's own, and a manager on it.
STORE_FROM_ARGV = """
import json, os, sys
import tornsession

kind, servers = sys.argv[1], json.loads(sys.argv[2])
prefix = f"PREFIX{os.getpid()}:"
if kind == "redis":
    store = tornsession.RedisStore(servers[0], prefix=prefix)
else:
    store = tornsession.MemcachedStore(servers, prefix=prefix)
manager = tornsession.SessionManager(SECRET, store=store)
"""


def script(prefix: str, body: str) -> str:
    """A script: the store from its arguments, keys under ``prefix`` and the pid, then ``body``."""
    source = STORE_FROM_ARGV.replace("PREFIX", prefix) + textwrap.dedent(body)
    return source.replace("SECRET", repr(SECRET))


# Run in a fresh interpreter: a fork from pytest's own process would copy its threads and plugins.
# Prints {"parent": report, "child": report}; each report counts what that process's loads saw.
FORKED = script(
    "fork",
    """
    import threading, time

    used_before_fork = sys.argv[3] == "used"

    def save(owner):
        session = manager.get()
        session["owner"] = owner * 64
        manager.set(session)
        return session.session_id, session.hmac_digest

    def in_threads(work, count=8):
        threads = [threading.Thread(target=work) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    ids = {}
    if used_before_fork:
        ids = {owner: save(owner) for owner in "PC"}
        # Several idle connections in the pool, as a busy parent leaves it.
        in_threads(lambda: [manager.get(*ids[owner]) for owner in "PC" * 20])

    def loads(me):
        other = "C" if me == "P" else "P"
        report = {"loads": 0, "other": 0, "wrong": 0, "errors": []}
        lock = threading.Lock()
        session_id, digest = ids[me] if used_before_fork else save(me)

        def load_own():
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    session = manager.get(session_id, digest)
                except Exception as e:
                    with lock:
                        report["errors"].append(f"{type(e).__name__}: {e}"[:200])
                    continue
                with lock:
                    report["loads"] += 1
                    if session.get("owner") == other * 64:
                        report["other"] += 1
                    elif session.session_id != session_id or session.get("owner") != me * 64:
                        report["wrong"] += 1

        in_threads(load_own, 4)
        report["errors"] = report["errors"][:3]
        return report

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            report = loads("C")
        except Exception as e:
            report = {"failed": repr(e)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    parent = loads("P")
    with os.fdopen(read_end, "rb") as pipe:
        child = json.loads(pipe.read() or b'{"failed": "no report"}')
    os.waitpid(pid, 0)
    print(json.dumps({"parent": parent, "child": child}))
    """,
)


# Counts the connections the server accepted (the counting connection among them) while a child
# loaded its session on the parent's pool, and while the parent loaded on it again afterwards.
# Prints {"child_new": n, "parent_new": n, "errors": [...]}.
RECONNECTS = script(
    "fork",
    """
    import socket, threading

    if kind == "redis":
        addresses = [servers[0].split("//")[1].split("/")[0]]
        ask, field = b"INFO stats\\r\\n", "total_connections_received:"
    else:
        addresses = servers
        ask, field = b"stats\\r\\n", "STAT total_connections "

    def accepted():
        total = 0
        for address in addresses:
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as connection:
                connection.sendall(ask)
                text = ""
                while "\\n" not in text.partition(field)[2]:
                    text += connection.recv(65536).decode()
            total += int(text.partition(field)[2].split()[0])
        return total

    session = manager.get()
    session["n"] = 1
    manager.set(session)
    ids = (session.session_id, session.hmac_digest)
    # Several idle connections in the pool, as a busy parent leaves it.
    load_some = lambda: [manager.get(*ids) for _ in range(20)]
    threads = [threading.Thread(target=load_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    errors = []
    before = accepted()
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(20):
                manager.get(*ids)
        except Exception:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        errors.append("the child's loads failed")
    after_child = accepted()
    for _ in range(20):
        manager.get(*ids)
    after_parent = accepted()
    print(json.dumps({
        "child_new": after_child - before - len(addresses),
        "parent_new": after_parent - after_child - len(addresses),
        "errors": errors,
    }))
    """,
)


# Eight threads load and save without pause while the main thread forks 150 times; each child
# loads and saves once. A child that has not finished within 5 s is a hang (killed and counted).
# Prints {"hung": n, "failed": n, "forks": n}.
FORK_WHILE_BUSY = script(
    "busy",
    """
    import signal, threading, time
    session = manager.get()
    session["n"] = 0
    manager.set(session)
    ids = (session.session_id, session.hmac_digest)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            loaded = manager.get(*ids)
            loaded["n"] = loaded.get("n", 0) + 1
            manager.set(loaded)

    threads = [threading.Thread(target=busy) for _ in range(8)]
    for thread in threads:
        thread.start()
    hung = failed = 0
    for _ in range(150):
        pid = os.fork()
        if pid == 0:
            try:
                child = manager.get(*ids)
                child["child"] = os.getpid()
                manager.set(child)
            except BaseException:
                os._exit(1)
            os._exit(0)
        deadline = time.monotonic() + 5
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                failed += status != 0
                break
            if time.monotonic() > deadline:
                hung += 1
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.002)
    stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps({"hung": hung, "failed": failed, "forks": 150}))
    """,
)


def run(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(params=["redis", "memcached"])
def store_servers(
    request: pytest.FixtureRequest,
) -> tuple[str, list[str]]:
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return "redis", [redis.url]
    memcached: list[ServerProcess] = request.getfixturevalue("memcached_servers")
    return "memcached", [f"{HOST}:{server.port}" for server in memcached]


@pytest.mark.parametrize("used_before_fork", [True, False], ids=["used", "unused"])
def test_parent_and_child_only_ever_read_their_own_sessions(
    store_servers: tuple[str, list[str]], used_before_fork: bool
) -> None:
    kind, servers = store_servers
    reports = run(FORKED, kind, json.dumps(servers), "used" if used_before_fork else "fresh")
    for process, report in reports.items():
        assert "failed" not in report, (process, report)
        assert report["errors"] == [], (process, report)
        assert report["other"] == 0, (process, report)
        assert report["wrong"] == 0, (process, report)
        # Enough loads to have crossed, had the connections been shared.
        assert report["loads"] >= 100, (process, report)


def test_a_child_connects_afresh_and_leaves_the_parents_connections_open(
    store_servers: tuple[str, list[str]],
) -> None:
    kind, servers = store_servers
    report = run(RECONNECTS, kind, json.dumps(servers))
    assert report["errors"] == [], report
    # The parent's idle connections were not used by the child...
    assert report["child_new"] >= 1, report
    # ...nor closed on the server by it: the parent goes on using them.
    assert report["parent_new"] == 0, report


def test_a_child_forked_while_other_threads_use_the_pool_never_hangs(
    store_servers: tuple[str, list[str]],
) -> None:
    kind, servers = store_servers
    report = run(FORK_WHILE_BUSY, kind, json.dumps(servers))
    assert report == {"hung": 0, "failed": 0, "forks": 150}, report


def test_a_refused_memcached_connect_fails_at_once() -> None:
    port = free_port()
    store = tornsession.MemcachedStore([f"{HOST}:{port}"], connect_timeout=5.0)
    manager = tornsession.SessionManager(SECRET, store=store)
    for _ in range(2):
        session = manager.get()
        session["n"] = 1
        started = time.monotonic()
        with pytest.raises(tornsession.SessionStoreError, match="cannot connect: "):
            manager.set(session)
        assert time.monotonic() - started < 1.0


def drip(reply: bytes, every: float, setup: bytes = b"") -> Iterator[str]:
    """A server that answers its first connection's first request with `reply`, one byte every
    `every` seconds (requests holding `setup` are answered `+OK` at once, one per occurrence:
    the redis crate's own client sends `CLIENT SETINFO` as it connects); yields its address."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        with listener:
            client, _ = listener.accept()
            with client:
                request = client.recv(4096)
                while setup and setup in request:
                    client.sendall(b"+OK\r\n" * request.count(setup))
                    request = client.recv(4096)
                for byte in reply:
                    if stop.wait(every):
                        return
                    try:
                        client.sendall(bytes([byte]))
                    except OSError:
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"{HOST}:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)


@pytest.fixture
def dripping_memcached() -> Iterator[str]:
    """A memcached that answers any request with a 40-byte value, one byte every 50 ms."""
    yield from drip(b"VA 40\r\n" + b"x" * 40 + b"\r\n", 0.05)


@pytest.fixture
def dripping_redis() -> Iterator[str]:
    """A Redis that answers any request with a 40-byte value, one byte every 300 ms."""
    yield from drip(b"$40\r\n" + b"x" * 40 + b"\r\n", 0.3, setup=b"SETINFO")


def test_a_dripping_memcached_reply_fails_within_the_timeout(dripping_memcached: str) -> None:
    store = tornsession.MemcachedStore([dripping_memcached], timeout=0.3)
    started = time.monotonic()
    with pytest.raises(tornsession.SessionStoreError, match="no reply within 300ms"):
        _store_load(store, "0" * 32, 1 << 20)
    took = time.monotonic() - started
    assert 0.3 <= took < 1.5, took


@pytest.mark.parametrize("operation", ["load", "save"])
def test_a_dripping_redis_reply_fails_within_the_timeout(
    dripping_redis: str, operation: str
) -> None:
    # Each byte comes well within the timeout; the whole reply would take 14 s.
    store = tornsession.RedisStore(f"redis://{dripping_redis}", timeout=1.0)
    manager = tornsession.SessionManager(SECRET, store=store)
    session = manager.get()
    session["n"] = 1
    started = time.monotonic()
    with pytest.raises(tornsession.SessionStoreError, match="no whole reply within 1s"):
        if operation == "load":
            _store_load(store, "0" * 32, 1 << 20)
        else:
            manager.set(session)
    took = time.monotonic() - started
    assert 1.0 <= took < 1.8, took
