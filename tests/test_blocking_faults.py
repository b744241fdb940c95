"""The blocking Redis client (crates/core/src/stores/blocking.rs) behind a faulty server: a
reply too many never fails a later request; a server that stops accepting fails a request within
its timeouts."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import tornsession
from support.servers import launch, redis_maker, require_binary

SECRET = "r" * 40


def stored_identity() -> tuple[str, str]:
    """An id and digest the managers below (same secret) accept, minted on a MemoryStore."""
    manager = tornsession.SessionManager(SECRET)
    session = manager.get()
    session["a"] = 1
    manager.set(session)
    return session.session_id, session.hmac_digest


def test_an_unsolicited_reply_after_a_request_fails_no_later_request() -> None:
    """A server that sends one reply too many right behind a request's tag (a faulty proxy):
    that request's replies were in step and it succeeds, and its connection is never used
    again, so no later request fails for the extra bytes (found by the issue-19 review: the one
    blocking driver had left them in its buffer and failed the next request)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    def answer(connection: socket.socket) -> None:
        pending = b""
        with connection:
            try:
                while data := connection.recv(65536):
                    pending += data
                    # Each request is one command and its tag's ECHO: a nil, the echo, and one
                    # nil more.
                    tagged = re.search(rb"ECHO\r\n\$\d+\r\n([^\r]+)\r\n$", pending)
                    if tagged:
                        tag = tagged.group(1)
                        connection.sendall(b"$-1\r\n$%d\r\n%s\r\n$-1\r\n" % (len(tag), tag))
                        pending = b""
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    session_id, digest = stored_identity()
    store = tornsession.RedisStore(f"redis://127.0.0.1:{port}", pool_size=1)
    manager = tornsession.SessionManager(SECRET, store=store)
    try:
        for _ in range(3):
            assert dict(manager.get(session_id, digest)) == {}  # nil: a fresh session
    finally:
        listener.close()


def finishes_within(seconds: float, work: Callable[[], None]) -> bool:
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_unix_socket_redis_that_never_accepts_fails_within_connect_timeout(
    tmp_path: Path,
) -> None:
    """A Redis on a unix socket that stops accepting (frozen, overloaded: its listen backlog
    full) fails each load within connect_timeout + timeout. Before (found by the issue-19
    review), the connect had no timeout and the second one blocked forever, holding the caller
    (or a worker thread of the async API) for good."""
    path = str(tmp_path / "frozen.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)  # never accepted: the backlog fills at once
    session_id, digest = stored_identity()
    store = tornsession.RedisStore(f"unix://{path}", connect_timeout=0.5, timeout=0.5)
    manager = tornsession.SessionManager(SECRET, store=store)

    def loads() -> None:
        for _ in range(3):
            with pytest.raises(tornsession.SessionStoreError):
                manager.get(session_id, digest)

    try:
        assert finishes_within(10.0, loads), "a load hung past connect_timeout + timeout"
    finally:
        listener.close()


def test_a_redis_on_a_unix_socket_keeps_sessions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The unix-socket path of the blocking client against a real redis-server: a session saved
    through ``unix://`` loads back, over several connections of its pool."""
    binary = require_binary("redis-server")
    folder = tmp_path_factory.mktemp("redis-unix")
    path = folder / "redis.sock"
    server = launch(redis_maker(binary, folder, "--unixsocket", str(path)))
    try:
        store = tornsession.RedisStore(f"unix://{path}")
        manager = tornsession.SessionManager(SECRET, store=store)
        session = manager.get()
        session["visits"] = 1
        manager.set(session)
        for _ in range(3):
            loaded = manager.get(session.session_id, session.hmac_digest)
            assert dict(loaded) == {"visits": 1}
    finally:
        server.kill()
