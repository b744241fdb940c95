"""The blocking Redis client (crates/core/src/stores/blocking.rs) behind a faulty server: a
reply too many never fails a later request."""

from __future__ import annotations

import re
import socket
import threading

import tornsession

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
