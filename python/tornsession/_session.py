"""The async half of ``TornadoSession``: store I/O on worker threads, never on the IOLoop.

The Rust core splits each operation into steps: the ones that touch the handler or Python
objects run here on the IOLoop's thread; ``StoreTask.run()`` (which releases the GIL around
native store I/O) runs on a thread of a small pool, so a slow store never stalls other requests.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tornsession import _core

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


async def _run(task: _core.StoreTask) -> None:
    if not task.blocks:
        task.run()  # in memory: a thread hop would cost more than the work
        return
    await asyncio.get_running_loop().run_in_executor(_store_executor(), task.run)


class TornadoSession(_core.TornadoSession):
    """A session bound to a manager and a request handler (see ``tornsession._core``), with an
    async API whose store I/O never blocks the IOLoop."""

    @classmethod
    async def aload(cls, tornado_session_manager: Any, request_handler: Any) -> Self:
        """The handler's session, loaded without blocking the IOLoop.

        The instance is made without calling ``__init__`` (a subclass with extra constructor
        arguments sets its own attributes afterwards).
        """
        session = cls.__new__(cls)
        session._bind(tornado_session_manager, request_handler)
        task = session._begin_load()
        if task is not None:
            await _run(task)
            session._end_load(task)
        return session

    async def asave(self) -> None:
        """``save()`` without blocking the IOLoop: writes only if the data changed."""
        task = self._begin_save()
        if task is not None:
            await _run(task)
        self._end_save(task)

    async def aregenerate(self) -> None:
        """``regenerate()`` without blocking the IOLoop."""
        old_id = self._rotate_id()
        await self.asave()
        if old_id is not None:
            task = self._forget_task(old_id)
            await _run(task)
            task.result()

    async def adestroy(self) -> None:
        """``destroy()`` without blocking the IOLoop."""
        task = self._begin_destroy()
        if task is not None:
            await _run(task)
            task.result()
        self._end_destroy()
