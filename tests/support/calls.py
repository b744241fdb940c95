"""Counting the Python-level calls of one request, through ``sys.setprofile``.

A request is dispatched the way Tornado's HTTP server does it (``Application.find_handler``,
then the handler's ``_execute``), on a connection object that takes the response instead of a
socket, so the count holds only the request's own calls (no socket reads, no event loop timing).
Every event counts: a call of a Python function (Tornado's, the app's, the session layer's, a
coroutine's frame), and a call of a built-in made from Python code (a Rust method of
``tornsession._core`` included). Calls that Rust code makes into Rust or C are not
Python-level calls and are not seen; Python functions Rust calls are.

A session handler's count minus the count of a handler with the same body on a plain dict,
without a session, is what the session layer costs in calls (``test_request_calls.py``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from types import FrameType
from typing import Any

import tornado.httputil
import tornado.web


class _Connection(tornado.httputil.HTTPConnection):
    """What a RequestHandler writes its response to, kept in memory."""

    def __init__(self) -> None:
        self.start_line: Any = None
        self.headers: tornado.httputil.HTTPHeaders | None = None
        self.body = b""
        self.finished = False
        self.context = None

    def set_close_callback(self, callback: Any) -> None:
        self._close_callback = callback

    def _done(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def write_headers(
        self, start_line: Any, headers: tornado.httputil.HTTPHeaders, chunk: bytes | None = None
    ) -> asyncio.Future[None]:
        self.start_line, self.headers = start_line, headers
        self.body += chunk or b""
        return self._done()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        self.body += chunk
        return self._done()

    def finish(self) -> None:
        self.finished = True


def _label(event: str, frame: FrameType, arg: Any) -> str:
    if event == "call":
        code = frame.f_code
        return f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_name}"
    owner = getattr(arg, "__self__", None)
    module = getattr(arg, "__module__", None) or type(owner).__module__
    return f"{module}.{getattr(arg, '__qualname__', arg)}"


async def _serve(
    app: tornado.web.Application, path: str, cookie: str, calls: Counter[str] | None
) -> _Connection:
    headers = tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"})
    if cookie:
        headers.add("Cookie", cookie)
    connection = _Connection()
    request = tornado.httputil.HTTPServerRequest(
        headers=headers,
        connection=connection,
        start_line=tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1"),
    )

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            calls[_label(event, frame, arg)] += 1  # type: ignore[index]

    delegate = app.find_handler(request)
    if calls is not None:
        sys.setprofile(profile)
    try:
        delegate.execute()
        while not connection.finished:  # a handler that must wait finishes on the loop
            await asyncio.sleep(0)
    finally:
        sys.setprofile(None)
    return connection


async def calls_of(
    app: tornado.web.Application, path: str, cookie: str = "", rounds: int = 3
) -> tuple[Counter[str], _Connection]:
    """The calls of one GET of `path` with `cookie`, the whole request done: the fewest of
    `rounds` (each after one unmeasured request, which warms caches)."""
    best: tuple[Counter[str], _Connection] | None = None
    for _ in range(rounds):
        await _serve(app, path, cookie, None)
        calls: Counter[str] = Counter()
        connection = await _serve(app, path, cookie, calls)
        if best is None or sum(calls.values()) < sum(best[0].values()):
            best = (calls, connection)
    assert best is not None
    return best


def set_cookies(connection: _Connection) -> str:
    """The response's Set-Cookie values as a Cookie header."""
    if connection.headers is None:
        return ""
    return "; ".join(v.split(";", 1)[0] for v in connection.headers.get_list("Set-Cookie"))
