"""Requests of one session take turns within a process.

Tornado runs a handler's ``prepare()``, then its method, then ``finish()``, and lets other
requests run wherever one awaits: a load that hops to a thread, a save that does, an ``await``
in the handler. Two requests of one visitor (several tabs, a double click, parallel XHRs) that
both load before either saves would each write their own change over the other's. So a request
of a session waits, before loading it, until the earlier request of that session in this
process has finished or passed its turn on; PHP and ASP.NET lock sessions the same way, Django
does not.

The table is one per process, behind a lock: a manager served by several event loops (threads)
orders each session's requests across all of them, and a waiter on another loop is woken with
``call_soon_threadsafe``.

A turn is a lease. A request that holds the turn while another of its session waits, and has
not changed its session for ``LEASE`` seconds, passes the turn on (a long poll, a stream, a slow
read never blocks its visitor's other requests), and so does one that calls
``session.release()`` or whose client went away. From then on its writes are fenced: every
request of the session that has loaded it and not finished counts its session's saves (a
version), and a write goes through only if no other request of the session saved since this one
loaded; else ``SessionConflict``, or nothing when this request did not change the session. A
request alone with its session (nearly always) skips the check.

A turn belongs to a request (its handler): a request that loads its session a second time (two
``TornadoSession`` objects, or ``aload`` inside a ``SessionMixin`` handler) already has the turn
and does not wait for itself. Only sessions with a request in flight have an entry here, and
the entry goes when the last request of the session finishes or its client goes away, so the
table stays as small as the number of requests running.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tornsession._core import (
    SessionBusy,
    _clear_turns_after_fork,
    _enqueue_for_turn,
    _release_when_finished,
    _take_turn_now,
    _turns_in_table,
)
from tornsession._core import _Turn as Turn

__all__ = [
    "LEASE",
    "Turn",
    "release_when_finished",
    "sessions_in_flight",
    "take_turn_now",
    "wait_for_turn",
]

#: Seconds a request that has not changed its session keeps its turn while another request of
#: the session waits (``tornsession_core::turns::LEASE``).
LEASE = 0.3

# A forked child starts with an empty table: the turns it copied belong to the parent's
# requests, which nothing in the child can finish.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clear_turns_after_fork)


def take_turn_now(session_id: str, handler: Any) -> Turn | None:
    """The turn if no other request of the session holds it or waits for it, else None
    (without waiting). A request that has the turn already gets it again."""
    return _take_turn_now(session_id, id(handler))


async def wait_for_turn(session_id: str, handler: Any, timeout: float) -> Turn:
    """Waits until every earlier request of the session has finished or passed its turn on;
    `SessionBusy` after `timeout` seconds."""
    turn, waiter = _enqueue_for_turn(session_id, id(handler), asyncio.get_running_loop())
    if waiter is None:
        return turn
    try:
        await asyncio.wait_for(asyncio.shield(waiter), timeout)
    except BaseException as error:
        turn.release()  # still waiting: leaves the queue; granted as it gave up: hands it on
        if isinstance(error, asyncio.TimeoutError):
            raise SessionBusy(
                f"an earlier request of this session did not finish within {timeout:g} s "
                "(the manager's order_timeout); see order_requests in the README"
            ) from None
        raise
    return turn


def release_when_finished(handler: Any, turn: Turn) -> None:
    """Releases `turn` when Tornado calls the handler's ``on_finish()`` (for a WebSocket, once
    the handshake is answered), after the handler's own; passes it on when the client goes away
    while the handler runs; releases it when a streamed body is cut short (Rust hooks:
    ``tornado_session/hooks.rs``)."""
    _release_when_finished(handler, turn)


def sessions_in_flight() -> int:
    """How many sessions have a request in flight in this process (for tests and metrics)."""
    return _turns_in_table()[0]
