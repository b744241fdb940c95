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
import threading
import time
import weakref
from collections import deque
from typing import Any

from tornsession._core import SessionBusy, SessionConflict

#: Seconds a request that has not changed its session keeps its turn while another request of
#: the session waits (checked again every ``LEASE`` seconds while it has changed it).
LEASE = 0.3

_WAITING, _HOLDING, _PASSED, _DONE = range(4)

# One table per process: the lock guards every entry and claim state below; nothing that calls
# back into this module runs under it.
_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
# Claims whose Turn was dropped unreleased while the table was busy (a finalizer can run in the
# middle of a locked section): finished by whoever next leaves one.
_deferred: deque[_Claim] = deque()


class _Entry:
    """One session with requests in flight."""

    __slots__ = ("holder", "loaded", "owners", "version", "waiters")

    def __init__(self) -> None:
        self.holder: _Claim | None = None
        self.waiters: deque[_Claim] = deque()
        # id(handler) -> its claim: a request's second load finds the turn it has.
        self.owners: dict[int, _Claim] = {}
        # Saves by fenced requests and by those they share the session with (see fence()).
        self.version = 0
        # Claims that loaded (or will, once granted) and have not finished: the holder and
        # the requests that passed their turn on.
        self.loaded = 0


class _Claim:
    """A request's place in its session's entry."""

    __slots__ = (
        "checking",
        "entry",
        "loop",
        "owner",
        "seen",
        "session_id",
        "sessions",
        "state",
        "taken_at",
        "timer",
        "turn",
        "waiter",
    )

    def __init__(
        self, session_id: str, owner: int, entry: _Entry, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.session_id = session_id
        self.owner = owner
        self.entry = entry
        self.loop = loop
        self.state = _WAITING
        self.seen = 0
        self.taken_at = 0.0
        self.checking = False  # a lease check is scheduled
        # The lease check's timer when it was set on this thread: cancelled when the request
        # finishes, so a finished request's claim and entry are not kept for the lease's rest.
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sessions: list[weakref.ref[Any]] = []
        self.turn: weakref.ref[Turn] | None = None

    def changed(self) -> bool:
        """Whether the request changed its session since it loaded or last saved it (a load
        still running counts as a change: the request has not had its turn's worth)."""
        for ref in self.sessions:
            session = ref()
            if session is None:
                continue
            try:
                if session._is_changed():
                    return True
            except Exception:
                return True
        return False


class Turn:
    """A request's turn with its session: ``release()`` once the request finished (or, as a
    safety net, when nothing refers to it any more); ``pass_on()`` to give it up early."""

    __slots__ = ("__weakref__", "_claim", "hooked")

    def __init__(self, claim: _Claim) -> None:
        self._claim = claim
        self.hooked = False
        claim.turn = weakref.ref(self)

    @property
    def session_id(self) -> str:
        return self._claim.session_id

    def release(self) -> None:
        """The request finished: the next request of the session takes the turn."""
        with _lock:
            _finish(self._claim)
        _drain()

    def pass_on(self) -> None:
        """The request keeps running but gives up its turn; its later writes are fenced."""
        with _lock:
            _pass_on(self._claim)
        _drain()

    def attach(self, session: Any) -> None:
        """`session` is one this request loaded: the lease looks at it for changes."""
        self._claim.sessions.append(weakref.ref(session))

    def fence(self, session: Any, regenerating: bool = False) -> bool:
        """Called before the request writes `session`: whether to write. A request alone with
        its session writes. Otherwise: `SessionConflict` if another request of the session
        saved since this one loaded and this one changed the session (or regenerates it),
        False (nothing to write) if it did not change it, else True, counted as a save."""
        claim = self._claim
        with _lock:
            entry = claim.entry
            if claim.state == _HOLDING and entry.loaded == 1:
                return True
        if session.session_id != claim.session_id:
            return True  # regenerated or logged out since: a record no other request loaded
        changed = regenerating or bool(session._is_changed())
        with _lock:
            # After its request finished (a WebSocket's open()/on_message() after the 101) a
            # session is fenced only against saves its entry still saw: once the session's last
            # request finished the entry goes, and the write is unordered, as before turns.
            stale = claim.seen != entry.version
            if not stale and changed:
                entry.version += 1
                claim.seen = entry.version
        if stale:
            if not changed:
                return False
            raise SessionConflict(
                "another request of this session saved it after this one passed its turn on "
                f"(it held it {LEASE:g} s without a change, or called release()); nothing was "
                "written: see order_requests in the README"
            )
        return True

    def __del__(self) -> None:
        claim = self._claim
        if claim.state == _DONE:
            return
        _deferred.append(claim)
        if _lock.acquire(blocking=False):  # never waits: this may run inside a locked section
            try:
                while _deferred:
                    _finish(_deferred.popleft())
            finally:
                _lock.release()


def _drain() -> None:
    if _deferred:
        with _lock:
            while _deferred:
                _finish(_deferred.popleft())


def _grant(entry: _Entry, claim: _Claim) -> None:
    claim.state = _HOLDING
    claim.seen = entry.version
    claim.taken_at = time.monotonic()
    entry.holder = claim
    entry.loaded += 1


def _next(entry: _Entry) -> None:
    """Hands the free turn to the first waiter still waiting."""
    while entry.waiters:
        claim = entry.waiters.popleft()
        if claim.state != _WAITING:
            continue
        _grant(entry, claim)
        if not _wake(claim):
            # Its loop is closed: nobody will take the turn up.
            _finish(claim)
            return
        if entry.waiters:
            _schedule_lease_check(claim)
        return


def _wake(claim: _Claim) -> bool:
    waiter = claim.waiter
    if waiter is None:
        return True
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is claim.loop:
        _resolve(waiter)
        return True
    try:
        claim.loop.call_soon_threadsafe(_resolve, waiter)
    except RuntimeError:
        return False
    return True


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _pass_on(claim: _Claim) -> None:
    entry = claim.entry
    if claim.state != _HOLDING:
        return
    claim.state = _PASSED
    entry.holder = None
    _next(entry)


def _finish(claim: _Claim) -> None:
    state = claim.state
    if state == _DONE:
        return
    claim.state = _DONE
    timer, claim.timer = claim.timer, None
    if timer is not None:
        _cancel(timer, claim.loop)
    entry = claim.entry
    if state == _WAITING:
        try:
            entry.waiters.remove(claim)
        except ValueError:
            pass
    else:
        entry.loaded -= 1
    if entry.holder is claim:
        entry.holder = None
        _next(entry)
    if entry.owners.get(claim.owner) is claim:
        del entry.owners[claim.owner]
    if (
        entry.holder is None
        and not entry.waiters
        and entry.loaded == 0
        and _entries.get(claim.session_id) is entry
    ):
        del _entries[claim.session_id]


def _cancel(timer: asyncio.TimerHandle, loop: asyncio.AbstractEventLoop) -> None:
    """Cancels a timer of `loop` from whichever thread finishes the request."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        timer.cancel()
        return
    try:
        loop.call_soon_threadsafe(timer.cancel)
    except RuntimeError:
        pass  # its loop is closed: the timer will never run


def _schedule_lease_check(holder: _Claim) -> None:
    """Looks at the holder, on its own loop, once its lease is up."""
    if holder.checking:
        return
    holder.checking = True
    delay = max(0.0, holder.taken_at + LEASE - time.monotonic())
    loop = holder.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if running is loop:
            holder.timer = loop.call_later(delay, _check_lease, holder)
        else:
            loop.call_soon_threadsafe(loop.call_later, delay, _check_lease, holder)
    except RuntimeError:
        holder.checking = False  # its loop is closed; its Turn's finalizer frees the turn


def _check_lease(holder: _Claim) -> None:
    """On the holder's loop: passes the turn on if the holder has not changed its session,
    else looks again in another ``LEASE`` seconds."""
    with _lock:
        holder.checking = False
        holder.timer = None
        if holder.entry.holder is not holder or not holder.entry.waiters:
            return
    changed = holder.changed()  # the session is the holder's loop's: looked at here
    with _lock:
        entry = holder.entry
        if entry.holder is not holder or not entry.waiters:
            return
        if changed:
            holder.taken_at = time.monotonic()
            _schedule_lease_check(holder)
        else:
            _pass_on(holder)


def _own_turn(entry: _Entry, owner: int) -> Any:
    """The turn this request has on the session already (its Turn, or one that does nothing
    if that is being dropped), or None."""
    claim = entry.owners.get(owner)
    if claim is None or claim.state == _DONE:
        return None
    turn = claim.turn() if claim.turn is not None else None
    return _SAME if turn is None else turn


def _entry_and_own_turn(session_id: str, owner: int) -> tuple[_Entry, Any]:
    """Under the lock: the session's entry (made if it has none), and the turn this request
    has on it already, if any."""
    entry = _entries.get(session_id)
    if entry is None:
        entry = _entries[session_id] = _Entry()
        return entry, None
    return entry, _own_turn(entry, owner)


def take_turn_now(session_id: str, handler: Any) -> Turn | None:
    """The turn if no other request of the session holds it or waits for it, else None
    (without waiting). A request that has the turn already gets it again."""
    owner = id(handler)
    with _lock:
        entry, own = _entry_and_own_turn(session_id, owner)
        if own is not None:
            return own  # type: ignore[no-any-return]
        if entry.holder is not None or entry.waiters:
            return None
        claim = _Claim(session_id, owner, entry, asyncio.get_running_loop())
        entry.owners[owner] = claim
        _grant(entry, claim)
    return Turn(claim)


async def wait_for_turn(session_id: str, handler: Any, timeout: float) -> Turn:
    """Waits until every earlier request of the session has finished or passed its turn on;
    `SessionBusy` after `timeout` seconds."""
    owner = id(handler)
    loop = asyncio.get_running_loop()
    with _lock:
        entry, own = _entry_and_own_turn(session_id, owner)
        if own is not None:
            return own  # type: ignore[no-any-return]
        claim = _Claim(session_id, owner, entry, loop)
        entry.owners[owner] = claim
        if entry.holder is None and not entry.waiters:
            _grant(entry, claim)
            return Turn(claim)
        waiter = claim.waiter = loop.create_future()
        entry.waiters.append(claim)
        if entry.holder is not None:
            _schedule_lease_check(entry.holder)
    turn = Turn(claim)
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


class _SameTurn:
    """Stands for a request's turn whose Turn is being dropped (its finalizer frees it)."""

    hooked = True

    def release(self) -> None:
        pass

    def pass_on(self) -> None:
        pass

    def attach(self, session: Any) -> None:
        pass

    def fence(self, session: Any, regenerating: bool = False) -> bool:
        return True


_SAME: Any = _SameTurn()


def release_when_finished(handler: Any, turn: Turn) -> None:
    """Releases `turn` when Tornado calls the handler's ``on_finish()`` (for a WebSocket, once
    the handshake is answered: Tornado finishes the upgrade request then), after the handler's
    own; passes it on when the client goes away while the handler runs (Tornado calls the
    ``on_connection_close`` it bound in the handler's ``__init__``, wrapped here so it reaches
    every handler; the handler still finishes, and its writes are fenced); releases it when a
    streamed body is cut short (Tornado then calls the handler's attribute, and never runs the
    handler's method)."""
    if turn.hooked:
        return
    turn.hooked = True
    handler_ref = weakref.ref(handler)
    own_finish = handler.__dict__.get("on_finish")
    own_close = handler.__dict__.get("on_connection_close")

    def on_finish() -> None:
        try:
            if own_finish is not None:
                own_finish()
            else:
                live = handler_ref()
                if live is not None:
                    type(live).on_finish(live)
        finally:
            turn.release()  # after the handler's own: a save there is still in turn

    def on_connection_close() -> None:
        # Reached this way only for a streamed body cut short: the handler never finishes.
        turn.release()
        if own_close is not None:
            own_close()
            return
        live = handler_ref()
        if live is not None:
            type(live).on_connection_close(live)

    handler.on_finish = on_finish
    handler.on_connection_close = on_connection_close
    connection: Any = getattr(getattr(handler, "request", None), "connection", None)
    bound = getattr(connection, "_close_callback", None)
    if bound is not None and hasattr(connection, "set_close_callback"):

        def closed() -> None:
            turn.pass_on()
            bound()

        connection.set_close_callback(closed)


def sessions_in_flight() -> int:
    """How many sessions have a request in flight in this process (for tests and metrics)."""
    with _lock:
        return len(_entries)
