"""The async half of ``TornadoSession``: store I/O that never blocks the IOLoop, and requests
of one session in turn (``tornsession._ordering``).

The Rust core splits each operation into steps: the ones that touch the handler or Python
objects run here on the IOLoop's thread. The store step runs inline for the local stores
(memory, SQLite, file reads: microseconds); over the store's own protocol on the IOLoop for
Redis and memcached (``tornsession._wire``: pipelined, no threads); and otherwise
``_StoreTask.run()`` (which releases the GIL around native store I/O) runs on a thread of a
small pool, so a slow store never stalls other requests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tornsession import _core, _ordering, _wire

if TYPE_CHECKING:
    from typing_extensions import Self

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()

#: Threads for store I/O. Generous on purpose: they mostly wait on sockets and disks.
STORE_THREADS = 32


def _store_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="tornsession-store")
        return _executor


async def _run(task: _core._StoreTask, server: _core._WireServer | None = None) -> None:
    if not task.blocks:
        task.run()  # local and quick: a thread hop would cost more than the work
        return
    # Redis and memcached: the request goes over the store's own protocol on the loop
    # (tornsession._wire), unless the operation needs more than its one request.
    if server is None:
        server = task.wire_server
    if server is not None and await _wire.run(task, server):
        return
    await asyncio.get_running_loop().run_in_executor(_store_executor(), task.run)


async def _sent(task: _core._StoreTask, reply: Any) -> None:
    """The rest of a task whose request the Rust path sent over the store's protocol."""
    if not await reply:
        # What the store answered needs more than its protocol's one request.
        await asyncio.get_running_loop().run_in_executor(_store_executor(), task.run)


async def _load_sent(session: _core.TornadoSession, task: _core._StoreTask, reply: Any) -> None:
    """A load the Rust path sent (it holds the session's turn): the reply, then the session."""
    await _end_load_after(session, task, _sent(task, reply))


async def _end_load_after(
    session: _core.TornadoSession, task: _core._StoreTask, store_step: Awaitable[None]
) -> None:
    """The load's store step, then the session from its result (a record past its lifetime is
    deleted); a store step that fails leaves the session unloaded."""
    try:
        await store_step
    except BaseException:
        session._abandon_load()
        raise
    delete = session._end_load(task)
    if delete is not None:  # a record past its lifetime
        await _run(delete)
        delete.result()


async def _call_store(blocks: bool, method: Any, args: tuple[Any, ...]) -> Any:
    """The async twin of a manager method doing store I/O: on a store thread, or inline for a
    store that never blocks."""
    if not blocks:
        return method(*args)
    return await asyncio.get_running_loop().run_in_executor(
        _store_executor(), functools.partial(method, *args)
    )


def _ordered(session: _core.TornadoSession) -> bool:
    """Whether the session's requests take turns: the manager says so, and there is an event
    loop for them to wait on (a session used outside one, in a script, has no other requests)."""
    if not getattr(session.session_manager, "order_requests", False):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _take(session: Any, handler: Any, turn: Any) -> None:
    """`turn` is the request's: the session is fenced by it, and it ends with the request."""
    turn.attach(session)
    session._turn = turn
    _ordering.release_when_finished(handler, turn)


async def _load(session: _core.TornadoSession, task: _core._StoreTask) -> None:
    """Waits for the session's turn (when ordered), then loads without blocking the IOLoop."""
    manager = session.session_manager
    # A coroutine runs on a loop: only the manager's setting decides (see _ordered).
    if getattr(manager, "order_requests", False):
        session_id = task.session_id
        assert session_id is not None
        handler = session.request_handler
        turn = _ordering.take_turn_now(session_id, handler)  # nearly always: no wait
        if turn is None:
            try:
                turn = await _ordering.wait_for_turn(session_id, handler, manager.order_timeout)
            except BaseException as error:
                session._abandon_load()
                if isinstance(error, _core.SessionBusy):
                    manager._count_busy()
                raise
        _take(session, handler, turn)
    await _load_unordered(session, task)


async def _load_unordered(
    session: _core.TornadoSession,
    task: _core._StoreTask,
    server: _core._WireServer | None = None,
) -> None:
    await _end_load_after(session, task, _run(task, server))


# The drop-in path's load runs in Rust (tornado_session/request.rs, load_then_prepare) when it
# need not wait; these are its two waits: for the session's turn, and for a network store.


async def _load_and_prepare(
    session: _core.TornadoSession, handler: Any, task: _core._StoreTask
) -> None:
    try:
        await _load(session, task)
    except _core.SessionBusy as busy:
        raise _service_unavailable(busy) from busy
    result = handler.prepare()
    if inspect.isawaitable(result):
        await result


async def _load_over_wire_and_prepare(
    session: _core.TornadoSession,
    handler: Any,
    task: _core._StoreTask,
    server: _core._WireServer,
) -> None:
    await _load_unordered(session, task, server)
    result = handler.prepare()
    if inspect.isawaitable(result):
        await result


def _service_unavailable(busy: Exception) -> Exception:
    from tornado.web import HTTPError

    return HTTPError(503, str(busy))


def _fence(session: Any, regenerating: bool = False) -> bool:
    """Before a write of `session`: whether to write (False: this request passed its turn on,
    another saved since, and this one changed nothing); `SessionConflict` if it changed it."""
    turn = session._turn
    try:
        return turn is None or bool(turn.fence(session, regenerating))
    except _core.SessionConflict:
        session.session_manager._count_conflict()
        raise


class TornadoSession(_core.TornadoSession):
    """A session bound to a manager and a request handler (see ``tornsession._core``), with an
    async API whose store I/O never blocks the IOLoop."""

    # The request's turn with this session (tornsession._ordering), once it took one.
    _turn: Any = None

    def release(self) -> None:
        """Ends this request's claim on the session early: the next request of the session
        runs now instead of waiting for this one to finish. A save of this request after it
        writes only if no other request of the session saved since this one loaded, else
        raises ``SessionConflict`` (the mixin answers 409); an unchanged session writes
        nothing. Call ``asave()`` first to keep a change. Does nothing when the session's
        requests are not ordered."""
        turn = self._turn
        if turn is not None:
            turn.pass_on()

    def _release_turn(self) -> None:
        """The request finished: the session's next request takes the turn."""
        turn = self._turn
        if turn is not None:
            turn.release()

    def _begin_write(self) -> None:
        """A write is on its way to the store: the turn stays with this request until
        ``_end_write()``, even if its client goes away meanwhile (the session's next request
        could otherwise load the record from before the write, and drop its change)."""
        turn = self._turn
        if turn is not None:
            turn.begin_write()

    def _end_write(self) -> None:
        turn = self._turn
        if turn is not None:
            turn.end_write()

    def regenerate(self) -> None:
        """A new id and digest for the same data: saved under the new id, the old record
        deleted, the new cookies set; fenced after ``release()`` like ``save()``."""
        if self._turn is not None:
            self._ensure_loaded()
            _fence(self, regenerating=True)
        super().regenerate()

    @classmethod
    async def aload(cls, tornado_session_manager: Any, request_handler: Any) -> Self:
        """The handler's session, loaded without blocking the IOLoop, after any earlier request
        of the same session in this process has finished or passed its turn on (unless the
        manager has ``order_requests=False``); ``SessionBusy`` after the manager's
        ``order_timeout``.

        The instance is made without calling ``__init__`` (a subclass with extra constructor
        arguments sets its own attributes afterwards).
        """
        session = cls.__new__(cls)
        session._bind(tornado_session_manager, request_handler)
        task = session._begin_load()
        if task is not None:
            await _load(session, task)
        return session

    async def asave(self) -> None:
        """``save()`` without blocking the IOLoop: writes only if the data changed. A new session
        (no cookie yet) after the headers are out (``flush()``, a WebSocket's 101) raises
        RuntimeError instead, before anything is written."""
        task = self._begin_save()
        if task is not None and not _fence(self):
            task = None
        if task is not None:
            self._begin_write()
            try:
                await _run(task)
            finally:
                self._end_write()
        self._end_save(task)

    async def aregenerate(self) -> None:
        """``regenerate()`` without blocking the IOLoop. After the headers are out (``flush()``, a
        WebSocket's 101) it raises RuntimeError and leaves the session as it was."""
        if self._turn is not None:
            self._ensure_loaded()
            _fence(self, regenerating=True)
        old_id = self._rotate_id()
        if old_id is not None:
            # Delete first: if the record is already gone, another request ended the session
            # meanwhile, and it must not come back under the new id.
            task = self._forget_task(old_id)
            await _run(task)
            if not task.result():
                self._ended_elsewhere(old_id)
        await self.asave()

    async def adestroy(self) -> None:
        """``destroy()`` without blocking the IOLoop."""
        task = self._begin_destroy()
        if task is not None:
            await _run(task)
            task.result()
        self._end_destroy()
