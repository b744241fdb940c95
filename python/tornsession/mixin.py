"""``SessionMixin``: ``self.session`` in every handler method, loaded and saved asynchronously.

::

    class BaseHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
        pass

The manager is ``self.application.session_manager``, or the ``session_manager`` application
setting. The session loads in ``prepare()`` without blocking the IOLoop; when it changed, it is
saved before the response is sent (so a redirect never races the save), again off the IOLoop.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import TYPE_CHECKING, Any

from tornsession._session import TornadoSession

if TYPE_CHECKING:
    from tornado.web import Application, RequestHandler

    _Base = RequestHandler
else:
    _Base = object

_IDLE, _SAVING, _DONE = 0, 1, 2


class SessionMixin(_Base):
    """Adds ``self.session`` (a ``TornadoSession``) to a ``RequestHandler`` subclass.

    Put it before ``RequestHandler`` in the bases. A ``prepare()`` of your own must call
    ``await super().prepare()`` (or ``super().prepare()``) for the async load; without it the
    session loads synchronously at first use.
    """

    _tornsession: TornadoSession | None = None
    _tornsession_state: int = _IDLE
    _tornsession_pending: asyncio.Future[None] | None = None

    @property
    def session_manager(self) -> Any:
        """The application's session manager."""
        application: Application = self.application
        manager = getattr(application, "session_manager", None)
        if manager is None:
            manager = application.settings.get("session_manager")
        if manager is None:
            raise RuntimeError(
                "SessionMixin needs a session manager: set application.session_manager or the "
                "'session_manager' application setting to a tornsession.TornadoSessionManager"
            )
        return manager

    @property
    def session(self) -> TornadoSession:
        """This request's session."""
        if self._tornsession is None:
            self._tornsession = TornadoSession(self.session_manager, self)
        return self._tornsession

    async def prepare(self) -> None:
        if self._tornsession is None:
            self._tornsession = await TornadoSession.aload(self.session_manager, self)
        result = super().prepare()
        if inspect.isawaitable(result):
            await result

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        session = self._tornsession
        if self._tornsession_state == _SAVING and self._tornsession_pending is not None:
            # Tornado's own auto-finish, or a second finish() while the save runs: the pending
            # finish stands for it.
            return self._tornsession_pending
        if session is None or self._tornsession_state == _DONE or self._finished:
            return super().finish(chunk)
        if not session and not session._is_stored():
            # A visitor whose session was never used: no record, no cookie.
            self._tornsession_state = _DONE
            return super().finish(chunk)
        self._tornsession_state = _SAVING
        task = session._begin_save()
        if task is None or not task.blocks:
            if task is not None:
                task.run()
            session._end_save(task)
            self._tornsession_state = _DONE
            return super().finish(chunk)
        if chunk is not None:
            self.write(chunk)
        self._tornsession_pending = asyncio.ensure_future(self._save_then_finish(session, task))
        return self._tornsession_pending

    async def _save_then_finish(self, session: TornadoSession, task: Any) -> None:
        from tornsession._session import _run

        try:
            await _run(task)
            session._end_save(task)
        except Exception:
            # Nothing was sent yet: the visitor gets an error page, not a lost write.
            self._tornsession_state = _DONE
            self.clear()
            self.send_error(500, exc_info=sys.exc_info())
            return
        self._tornsession_state = _DONE
        await super().finish()
