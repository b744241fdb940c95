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
import functools
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

from tornsession import _core
from tornsession._core import SessionBusy, SessionConflict
from tornsession._session import (
    TornadoSession,
    _load,
    _load_sent,
    _run,
    _sent,
    _service_unavailable,
)

if TYPE_CHECKING:
    from tornado.web import Application, RequestHandler

    _Base = RequestHandler
else:
    _Base = object

_IDLE, _SAVING, _DONE = 0, 1, 2

_log = logging.getLogger("tornsession")

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

# What prepare() returns when nothing is left to wait for: awaitable (an app's own prepare()
# may `await super().prepare()`) without a coroutine.
_READY = _core._Ready()


def _ignore_body(chunk: bytes) -> None:
    """A streamed body's rest, after the handler finished: dropped, as Tornado does."""


class _SessionAttribute:
    """``self.session``: the request's session. ``prepare()`` puts it in the handler's own
    ``__dict__`` (so reading it is a plain attribute lookup, no call); before that, or without
    ``prepare()``, it is made at first use and loaded synchronously."""

    @overload
    def __get__(self, handler: None, owner: type | None = None) -> _SessionAttribute: ...
    @overload
    def __get__(self, handler: SessionMixin, owner: type | None = None) -> TornadoSession: ...
    def __get__(
        self, handler: SessionMixin | None, owner: type | None = None
    ) -> TornadoSession | _SessionAttribute:
        if handler is None:
            return self
        session = handler._tornsession
        if session is None:
            session = handler._tornsession = TornadoSession(handler.session_manager, handler)
        return session


def _loading_first(prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An app's own ``prepare()``, run once the mixin loaded the session: a plain
    ``def prepare(self): super().prepare()`` (or one that never calls it) cannot await the
    load, which must wait when another request of the session holds its turn or the store is
    across the network; the session would then load at first use, without its turn, and
    concurrent requests of the visitor would lose updates."""

    @functools.wraps(prepare)
    def loading_first(handler: SessionMixin) -> Any:
        if handler._tornsession is None and handler._tornsession_state == _IDLE:
            try:
                pending = _core._mixin_prepare(handler, TornadoSession)
            except BaseException:
                handler._tornsession_state = _DONE
                raise
            if pending is not None:
                return _prepare_after_load(handler._load_after(*pending), prepare, handler)
        return prepare(handler)

    loading_first._tornsession_loads_first = True  # type: ignore[attr-defined]
    return loading_first


def _mixin_before_request_handler(cls: type) -> bool:
    for klass in cls.__mro__:
        if klass is SessionMixin:
            return True
        if klass.__name__ == "RequestHandler" and klass.__module__ == "tornado.web":
            return False
    return True


async def _prepare_after_load(
    load: Awaitable[None], prepare: Callable[[Any], Any], handler: SessionMixin
) -> None:
    await load
    result = prepare(handler)
    if inspect.isawaitable(result):
        await result


class SessionMixin(_Base):
    """Adds ``self.session`` (a ``TornadoSession``) to a ``RequestHandler`` subclass.

    Put it before ``RequestHandler`` in the bases. The session is loaded before any
    ``prepare()`` of your own runs (the mixin wraps it), so ``self.session`` is ready there;
    calling ``super().prepare()`` from it, awaited or not, is fine.
    """

    _tornsession: TornadoSession | None = None
    _tornsession_state: int = _IDLE
    _tornsession_pending: asyncio.Future[None] | None = None
    _tornsession_headers_written = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Through the MRO: an app's own, or one of a base after the mixin. A staticmethod or
        # classmethod is left as it is, and so is a class that puts the mixin after
        # RequestHandler (its finish() is Tornado's: no turn must be taken that it would keep).
        prepare = inspect.getattr_static(cls, "prepare", None)
        if (
            inspect.isfunction(prepare)
            and prepare is not SessionMixin.prepare
            and not getattr(prepare, "_tornsession_loads_first", False)
            and _mixin_before_request_handler(cls)
        ):
            setattr(cls, "prepare", _loading_first(prepare))  # noqa: B010

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

    session = _SessionAttribute()
    """The request's session (a :class:`TornadoSession`, a ``dict``): loaded by ``prepare()``
    without blocking the IOLoop, after earlier requests of the session have finished, and saved
    by ``finish()`` when it changed. Read before ``prepare()`` (in ``initialize()``, say), it is
    loaded then, synchronously."""

    def prepare(self) -> Any:
        """Loads the session (waiting for the session's turn, off the IOLoop for a network
        store), then runs the app's own ``prepare()``. A request whose turn never comes within
        the manager's ``order_timeout`` is answered 503."""
        if self._tornsession is None:
            try:
                pending = _core._mixin_prepare(self, TornadoSession)
            except BaseException:
                # No session to save on the way out: the error page must not try again.
                self._tornsession_state = _DONE
                raise
            if pending is not None:
                return self._prepare_after(*pending)
        result = super().prepare()
        return _READY if result is None else result

    async def _prepare_after(
        self, session: TornadoSession | None, task: _core._StoreTask | None, reply: Any
    ) -> None:
        """The rest of ``prepare()`` when it must wait: for the session's turn, or for the
        store (a network round trip, a thread)."""
        await self._load_after(session, task, reply)
        result = super().prepare()
        if inspect.isawaitable(result):
            await result

    async def _load_after(
        self, session: TornadoSession | None, task: _core._StoreTask | None, reply: Any
    ) -> None:
        """The rest of the load when it must wait."""
        try:
            if session is None or task is None:
                session = await TornadoSession.aload(self.session_manager, self)
            elif reply is not None:
                await _load_sent(session, task, reply)
            else:
                await _load(session, task)
        except BaseException as error:
            # No session to save on the way out: the error page must not try again, and the
            # turn a failed load took goes to the session's next request now.
            self._tornsession_state = _DONE
            if session is not None:
                session._release_turn()
            if isinstance(error, SessionBusy):
                raise _service_unavailable(error) from error
            raise
        self._tornsession = session
        self.__dict__["session"] = session

    def on_connection_close(self) -> None:
        """The client went away: the session's next request runs now instead of waiting for
        this one; a later save of this request writes only if nobody saved since."""
        # The client went away: the session's next request need not wait for this one.
        # (Tornado binds this method in RequestHandler.__init__, so an instance hook would not
        # be called.) Whatever this request still writes is fenced (TornadoSession.release);
        # a save already on its way keeps the turn until it is answered (Turn.begin_write).
        session = self._tornsession
        if session is not None:
            session.release()
        super().on_connection_close()

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        """Saves the session when it changed (sending its cookies), then finishes the response;
        a failed save answers 500 and sends nothing of the page. Returns Tornado's future."""
        if self._tornsession_state == _SAVING and self._tornsession_pending is not None:
            # Tornado's own auto-finish, or a second finish() while the save runs: the pending
            # finish stands for it (shielded: a caller giving up on it must not stop the save
            # and the response).
            return asyncio.shield(self._tornsession_pending)
        if chunk is not None and not self._finished:
            # First, as RequestHandler.finish() does: a chunk it cannot write raises before
            # anything of the save has started.
            self.write(chunk)
            chunk = None
        try:
            done, result = _core._mixin_finish(self, chunk, SessionMixin)
        except Exception:
            if self._tornsession_state != _SAVING:
                raise  # not the save: RequestHandler.finish() itself
            handshake = self.get_status() == 101
            failed = self._save_failed(sys.exc_info(), chunk)  # type: ignore[arg-type]
            if handshake:
                from tornado.web import Finish

                # The handshake got the error page instead of its 101, and Tornado opens the
                # socket as soon as finish() returns: this stops it (open() never runs).
                raise Finish() from None
            return failed
        if done:
            return result  # type: ignore[no-any-return]
        self._hold_as_finished(True)
        self._tornsession_pending = asyncio.ensure_future(
            self._save_then_finish(self.session, *result)
        )
        return asyncio.shield(self._tornsession_pending)

    def _hold_as_finished(self, held: bool) -> None:
        """While the save is awaited, the handler is finished as far as it and Tornado can
        tell, as RequestHandler.finish() would leave it: Tornado skips the method after a
        prepare() that finished (a login guard's redirect), a later write() or redirect()
        raises, a later send_error() or exception is only logged, and a streamed body's rest is
        not handed to data_received(). Undone just before the real finish."""
        self._finished = held
        if held:
            self._tornsession_headers_written = self._headers_written
            self._headers_written = True
        else:
            self._headers_written = self._tornsession_headers_written
        if getattr(type(self), "_stream_request_body", False):
            if held:
                self.data_received = _ignore_body  # type: ignore[method-assign]
            else:
                self.__dict__.pop("data_received", None)

    async def _save_then_finish(self, session: TornadoSession, task: Any, reply: Any) -> None:
        from tornado.iostream import StreamClosedError

        try:
            try:
                await (_run(task) if reply is None else _sent(task, reply))
            finally:
                session._end_write()
                # Before the cookies are set: nothing of the app runs from here to the finish.
                self._hold_as_finished(False)
            session._end_save(task)
        except (Exception, asyncio.CancelledError):
            # A cancelled save (its loop stopping) answers too: nothing else will.
            await self._save_failed(sys.exc_info())  # type: ignore[arg-type]
            return
        self._tornsession_state = _DONE
        try:
            # The turn goes on once the response is handed over (after the handler's
            # on_finish()), not once it reached the client: the next request of the session
            # need not wait for the socket.
            try:
                finished = super().finish()
            finally:
                session._release_turn()
            await finished
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
        try:
            if self._finished:
                return done
            if self._headers_written:
                super().finish(chunk)
                return done
            self.clear()
            status = 409 if isinstance(exc_info[1], SessionConflict) else 500
            self.send_error(status, exc_info=exc_info)
            return done
        finally:
            # After the response (and the handler's on_finish()), as on success.
            if self._tornsession is not None:
                self._tornsession._release_turn()
