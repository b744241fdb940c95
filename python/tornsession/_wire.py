"""The async API's connections to Redis and memcached, on the event loop itself.

The protocol is Rust (``_core.WireConnection``, see ``src/wire_link.rs``): it encodes each
request, pipelines every request of the process on one connection per server, and parses the
replies as they arrive. This module only makes the connections: on first use, one attempt at a
time per server (requests arriving meanwhile wait for it), greeted (AUTH, SELECT) before use,
and made again after one fails.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tornsession import _core

#: Connection attempts in progress, per server (one event loop at a time per attempt).
_attempts: dict[_core.WireServer, asyncio.Task[_core.WireConnection]] = {}


async def run(task: _core.StoreTask, server: _core.WireServer) -> bool:
    """Sends ``task``'s request to ``server``; whether the task is done (``False``: what the
    store answered needs more than its protocol's one request, and the task must still run).
    A failure to connect becomes the task's error, as a worker thread's would."""
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
    server: _core.WireServer, loop: asyncio.AbstractEventLoop
) -> _core.WireConnection:
    attempt = _attempts.get(server)
    if attempt is None or attempt.get_loop() is not loop:
        attempt = loop.create_task(_connect(server, loop))
        _attempts[server] = attempt
        attempt.add_done_callback(lambda done: _forget(server, done))
    # Shielded: a request that gives up waiting must not cancel the others' attempt.
    return await asyncio.shield(attempt)


def _forget(server: _core.WireServer, attempt: asyncio.Task[Any]) -> None:
    if _attempts.get(server) is attempt:
        del _attempts[server]
    if not attempt.cancelled():
        attempt.exception()  # read, so a failure nobody waited for is not logged as lost


async def _connect(
    server: _core.WireServer, loop: asyncio.AbstractEventLoop
) -> _core.WireConnection:
    link = server.new_link(loop)
    try:
        await asyncio.wait_for(
            # A protocol by duck typing: asyncio calls its methods, never isinstance().
            loop.create_connection(lambda: cast(asyncio.Protocol, link), server.host, server.port),
            server.connect_timeout,
        )
    except asyncio.TimeoutError:
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
