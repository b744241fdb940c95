"""Counting the Python-level calls the session layer makes in one request, seen through
``sys.setprofile`` on the server's thread while it serves the request over real HTTP.

A call counts when the session layer makes or receives it: a Python function of the
``tornsession`` package (``SessionMixin.prepare``, a coroutine's frame), a call of anything
made from such a function (a built-in, a Rust method of ``tornsession._core``, a Tornado
method), and a Python function the Rust code calls (its caller frame is then the session
layer's). Calls Rust makes into Rust or C are not Python-level calls and are not seen.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
import tornsession


_PACKAGE = os.path.dirname(tornsession.__file__) + os.sep


def _ours(frame: FrameType | None) -> bool:
    return frame is not None and frame.f_code.co_filename.startswith(_PACKAGE)


def _label(event: str, frame: FrameType, arg: Any) -> str:
    if event == "call":
        code = frame.f_code
        return f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_name}"
    owner = getattr(arg, "__self__", None)
    module = getattr(arg, "__module__", None) or type(owner).__module__
    return f"{module}.{getattr(arg, '__qualname__', arg)}"


class CallCounter:
    """Serves `app` on a loopback port in this thread's IOLoop; `count(path, cookie)` makes
    one request from another thread and returns the calls this thread made for it."""

    def __init__(self, app: tornado.web.Application) -> None:
        self.loop = tornado.ioloop.IOLoop()
        self.loop.make_current() if hasattr(self.loop, "make_current") else None
        sockets = tornado.netutil.bind_sockets(0, address="127.0.0.1")
        self.port: int = sockets[0].getsockname()[1]
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets(sockets)

    def close(self) -> None:
        self.server.stop()
        self.loop.close(all_fds=True)

    def count(self, path: str, cookie: str = "") -> tuple[Counter[str], bytes]:
        calls: Counter[str] = Counter()
        reply: list[bytes] = []

        def client() -> None:
            with socket.create_connection(("127.0.0.1", self.port)) as conn:
                head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                if cookie:
                    head += f"Cookie: {cookie}\r\n"
                conn.sendall((head + "\r\n").encode())
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                reply.append(b"".join(chunks))
            self.loop.add_callback(self.loop.stop)

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and (_ours(frame) or _ours(frame.f_back)):
                calls[_label(event, frame, arg)] += 1
            elif event == "c_call" and _ours(frame):
                calls[_label(event, frame, arg)] += 1

        thread = threading.Thread(target=client)
        thread.start()
        sys.setprofile(profile)
        try:
            self.loop.start()
        finally:
            sys.setprofile(None)
        thread.join()
        return calls, reply[0]


def set_cookies(reply: bytes) -> str:
    """The reply's Set-Cookie values as a Cookie header."""
    pairs = []
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            pairs.append(line.split(b":", 1)[1].strip().split(b";", 1)[0].decode())
    return "; ".join(pairs)
