"""``SessionMixin``: ``self.session`` in every handler method, loaded and saved asynchronously.

::

    class BaseHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
        pass

The manager is ``self.application.session_manager``, or the ``session_manager`` application
setting. The session loads in ``prepare()`` without blocking the IOLoop, after any earlier
request of the same session in this process has finished or passed its turn on. When it changed
and the response is not an error (status below 500, Django's rule), it is saved before the
response is sent (so a redirect never races the save), again off the IOLoop. A save that fails
gives the app's error page: 409 for ``SessionConflict``, 500 otherwise. After ``flush()`` the
response can only be completed: a save that fails then, or that would need a cookie (a new
session), is logged and writes nothing. A WebSocket's session is saved with its handshake (the
101); after it, call ``await self.session.asave()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tornsession._core import SessionBusy, SessionConflict
from tornsession._session import TornadoSession, _fence, _run, _service_unavailable

if TYPE_CHECKING:
    from tornado.web import Application, RequestHandler

    _Base = RequestHandler
else:
    _Base = object

_IDLE, _SAVING, _DONE = 0, 1, 2

_log = logging.getLogger("tornsession")

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


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
            try:
                self._tornsession = await TornadoSession.aload(self.session_manager, self)
            except SessionBusy as busy:
                self._tornsession_state = _DONE
                raise _service_unavailable(busy) from busy
            except BaseException:
                # No session to save on the way out: the error page must not try again.
                self._tornsession_state = _DONE
                raise
        result = super().prepare()
        if inspect.isawaitable(result):
            await result

    def on_connection_close(self) -> None:
        # The client went away: the session's next request need not wait for this one.
        # (Tornado binds this method in RequestHandler.__init__, so an instance hook would not
        # be called.) Whatever this request still writes is fenced (TornadoSession.release).
        session = self._tornsession
        if session is not None:
            session.release()
        super().on_connection_close()

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        session = self._tornsession
        if self._tornsession_state == _SAVING and self._tornsession_pending is not None:
            # Tornado's own auto-finish, or a second finish() while the save runs: the pending
            # finish stands for it.
            return self._tornsession_pending
        if session is None or self._tornsession_state == _DONE or self._finished:
            return super().finish(chunk)
        self._tornsession_state = _SAVING
        handshake = self.get_status() == 101
        try:
            if self.get_status() >= 500 or (not session and not session._is_stored()):
                # An error response is not saved (the request failed half-way); a visitor whose
                # session was never used gets no record and no cookie.
                self._tornsession_state = _DONE
                return super().finish(chunk)
            task = session._begin_save()
            if task is not None and not _fence(session):
                task = None  # passed its turn on, changed nothing, and another request saved
            # A WebSocket handshake (101) must finish now: Tornado detaches the stream right
            # after finish() returns, so a deferred finish would never answer it.
            if task is None or not task.blocks or handshake:
                if task is not None:
                    task.run()
                session._end_save(task)
                self._tornsession_state = _DONE
                return super().finish(chunk)
        except Exception:
            failed = self._save_failed(sys.exc_info(), chunk)  # type: ignore[arg-type]
            if handshake:
                from tornado.web import Finish

                # The handshake got the error page instead of its 101, and Tornado opens the
                # socket as soon as finish() returns: this stops it (open() never runs).
                raise Finish() from None
            return failed
        if chunk is not None:
            self.write(chunk)
        self._tornsession_pending = asyncio.ensure_future(self._save_then_finish(session, task))
        return self._tornsession_pending

    async def _save_then_finish(self, session: TornadoSession, task: Any) -> None:
        from tornado.iostream import StreamClosedError

        try:
            await _run(task)
            session._end_save(task)
        except Exception:
            await self._save_failed(sys.exc_info())  # type: ignore[arg-type]
            return
        self._tornsession_state = _DONE
        try:
            await super().finish()
        except StreamClosedError:
            pass  # the client left before the response was sent: nothing to report

    def _save_failed(
        self, exc_info: _ExcInfo, chunk: str | bytes | dict[str, Any] | None = None
    ) -> asyncio.Future[None]:
        """Answers with the app's error page: nothing was sent yet, and nothing is lost silently.
        Once the headers are out (``flush()``) the response can only be completed as it is."""
        self._tornsession_state = _DONE
        _log.error("saving the session failed: %s", exc_info[1], exc_info=exc_info)
        done: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        done.set_result(None)
        if self._finished:
            return done
        if self._headers_written:
            super().finish(chunk)
            return done
        self.clear()
        status = 409 if isinstance(exc_info[1], SessionConflict) else 500
        self.send_error(status, exc_info=exc_info)
        return done
