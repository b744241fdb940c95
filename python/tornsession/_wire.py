"""The async API's connections to Redis and memcached, on the event loop itself.

The protocol is Rust (``_core._WireConnection``, see ``crates/py/src/wire_link/``): it tags and
pipelines each request, checks every reply's tag before its request uses it, and fails
each request at its own deadline. This module only makes the connections: a few per server and
event loop (``_WireServer.link_for`` says when another is wanted), one attempt at a time per
(server, loop) whichever thread the loop runs on (requests arriving meanwhile wait for it),
greeted (AUTH, SELECT) before use, and made again after one fails.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, cast

from tornsession import _core

_AttemptKey = tuple[_core._WireServer, asyncio.AbstractEventLoop]

#: Connection attempts in progress, per server and event loop.
_attempts: dict[_AttemptKey, asyncio.Task[_core._WireConnection]] = {}
#: Loops in other threads start and end attempts too.
_attempts_lock = threading.Lock()


async def run(task: _core._StoreTask, server: _core._WireServer) -> bool:
    """Sends ``task``'s request to ``server``; whether the task is done (``False``: what the
    store answered needs more than its protocol's one request, and the task must still run).
    A failure to connect becomes the task's error, as a worker thread's would.

    Cancelling the caller at any point is safe: a sent request keeps its place on its
    connection, whose reply is read and dropped there."""
    loop = asyncio.get_running_loop()
    try:
        link = server.link_for(loop)
        if link is None:
            link = await _connected(server, loop)
        reply = link.send(task)
    except ConnectionError as error:
        task.wire_failed(str(error))
        return True
    done: bool = await reply
    return done


async def _connected(
    server: _core._WireServer, loop: asyncio.AbstractEventLoop
) -> _core._WireConnection:
    key = (server, loop)
    with _attempts_lock:
        attempt = _attempts.get(key)
        if attempt is None:
            attempt = loop.create_task(_connect(server, loop))
            _attempts[key] = attempt
            attempt.add_done_callback(functools.partial(_forget, key))
    try:
        # Shielded: a request that gives up waiting must not cancel the others' attempt.
        return await asyncio.shield(attempt)
    except ConnectionError:
        # Another connection could not be made: a busy one still serves.
        link = server.link_for(loop, busy_ok=True)
        if link is None:
            raise
        return link


def _forget(key: _AttemptKey, attempt: asyncio.Task[Any]) -> None:
    with _attempts_lock:
        if _attempts.get(key) is attempt:
            del _attempts[key]
    if not attempt.cancelled():
        attempt.exception()  # read, so a failure nobody waited for is not logged as lost


async def _connect(
    server: _core._WireServer, loop: asyncio.AbstractEventLoop
) -> _core._WireConnection:
    link = server.new_link(loop)
    try:
        await asyncio.wait_for(
            # A protocol by duck typing: asyncio calls its methods, never isinstance().
            loop.create_connection(lambda: cast(asyncio.Protocol, link), server.host, server.port),
            server.connect_timeout,
        )
    except asyncio.TimeoutError:
        link.close()  # connected just as the wait ended, perhaps
        raise ConnectionError(
            f"{server.host}:{server.port}: cannot connect within {server.connect_timeout:g} s"
        ) from None
    except OSError as error:
        raise ConnectionError(f"{server.host}:{server.port}: cannot connect: {error}") from None
    greeting = link.greet()
    if greeting is not None:
        try:
            await greeting
        except BaseException:
            link.close()
            raise
    server.adopt(link)
    return link
