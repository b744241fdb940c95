"""Requests of one session take turns within a process.

Tornado runs a handler's ``prepare()``, then its method, then ``finish()``, and lets other
requests run wherever one awaits: a load that hops to a thread, a save that does, an ``await``
in the handler. Two requests of one visitor (several tabs, a double click, parallel XHRs) that
both load before either saves would each write their own change over the other's. So a request
of a session waits, before loading it, until the earlier request of that session in this
process has finished; PHP and ASP.NET lock sessions the same way, Django does not.

A turn belongs to a request (its handler): a request that loads its session a second time (two
``TornadoSession`` objects, or ``aload`` inside a ``SessionMixin`` handler) already has the turn
and does not wait for itself. Only sessions with a request in flight have an entry here, and
the entry goes when the last request of the session finishes or its client goes away, so the
table stays as small as the number of requests running.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any

from tornsession._core import SessionBusy


class _Turns:
    """Who holds each session's turn, and who waits for it, on one event loop."""

    __slots__ = ("holders", "queues")

    def __init__(self) -> None:
        # An id is present while a request of it holds its turn; the deque holds the waiters,
        # each with the request (its id()) it will hand the turn to.
        self.queues: dict[str, deque[tuple[asyncio.Future[None], int]]] = {}
        self.holders: dict[str, int] = {}

    def take_now(self, session_id: str, owner: int) -> bool:
        if session_id in self.queues:
            return False
        self.queues[session_id] = deque()
        self.holders[session_id] = owner
        return True

    def holds(self, session_id: str, owner: int) -> bool:
        return self.holders.get(session_id) == owner

    def pass_on(self, session_id: str) -> None:
        waiters = self.queues.get(session_id)
        if waiters is None:
            return
        while waiters:
            waiter, owner = waiters.popleft()
            if not waiter.done():  # skip waiters that timed out or were cancelled
                self.holders[session_id] = owner
                waiter.set_result(None)
                return
        del self.queues[session_id]
        del self.holders[session_id]


_turns_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = (
    weakref.WeakKeyDictionary()
)


def _turns() -> _Turns:
    loop = asyncio.get_running_loop()
    turns = _turns_by_loop.get(loop)
    if turns is None:
        turns = _turns_by_loop[loop] = _Turns()
    return turns


class Turn:
    """A request's turn with its session; released once, when the request finishes (or, as a
    safety net, when nothing refers to it any more)."""

    __slots__ = ("_session_id", "_turns")

    def __init__(self, turns: _Turns | None, session_id: str) -> None:
        self._turns = turns
        self._session_id = session_id

    def release(self) -> None:
        turns, self._turns = self._turns, None
        if turns is not None:
            turns.pass_on(self._session_id)

    def __del__(self) -> None:
        self.release()


def take_turn_now(session_id: str, handler: Any) -> Turn | None:
    """The turn if no other request of the session is in flight, else None (without waiting).
    A request that holds the turn already gets a turn that releases nothing."""
    turns = _turns()
    if turns.holds(session_id, id(handler)):
        return Turn(None, session_id)
    return Turn(turns, session_id) if turns.take_now(session_id, id(handler)) else None


async def wait_for_turn(session_id: str, handler: Any, timeout: float) -> Turn:
    """Waits until every earlier request of the session has finished; `SessionBusy` after
    `timeout` seconds."""
    turn = take_turn_now(session_id, handler)
    if turn is not None:
        return turn
    turns = _turns()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    turns.queues[session_id].append((waiter, id(handler)))
    try:
        await asyncio.wait_for(asyncio.shield(waiter), timeout)
    except BaseException as error:
        if waiter.done() and not waiter.cancelled():
            turns.pass_on(session_id)  # granted as we gave up: hand it to the next one
        else:
            waiter.cancel()
        if isinstance(error, asyncio.TimeoutError):
            raise SessionBusy(
                f"an earlier request of this session did not finish within {timeout:g} s "
                "(the manager's order_timeout); see order_requests in the README"
            ) from None
        raise
    return Turn(turns, session_id)


def release_when_finished(handler: Any, turn: Turn) -> None:
    """Releases `turn` when Tornado calls the handler's ``on_finish()`` (for a WebSocket, once
    the handshake is answered: Tornado finishes the upgrade request then), or its
    ``on_connection_close()``: a client that went away mid-request (an upload cut short, say)
    leaves a handler Tornado never finishes."""
    handler_ref = weakref.ref(handler)
    for name in ("on_finish", "on_connection_close"):
        own = handler.__dict__.get(name)

        def hook(name: str = name, own: Any = own) -> None:
            turn.release()
            if own is not None:
                own()
                return
            live = handler_ref()
            if live is not None:
                getattr(type(live), name)(live)

        setattr(handler, name, hook)


def sessions_in_flight() -> int:
    """How many sessions have a request in flight on the running loop (for tests and metrics)."""
    return len(_turns().queues)
