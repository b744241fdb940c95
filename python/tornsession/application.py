"""Reaching an application's session manager with its type: ``session_manager_of(app)``."""

from __future__ import annotations

import tornado.web

from tornsession._core import TornadoSessionManager

__all__ = ["session_manager_of"]


def session_manager_of(application: tornado.web.Application) -> TornadoSessionManager:
    """The application's session manager, typed: ``application.session_manager`` or the
    ``session_manager`` setting, as ``SessionMixin`` finds it.

    Under ``mypy --strict``, ``self.application.session_manager`` is an error (``Application``
    has no such attribute); this is the typed way to reach it (or subclass ``Application`` and
    declare ``session_manager: TornadoSessionManager`` on it).
    """
    manager = getattr(application, "session_manager", None)
    if manager is None:
        manager = application.settings.get("session_manager")
    if not isinstance(manager, TornadoSessionManager):
        raise LookupError(
            "the application has no TornadoSessionManager: set application.session_manager or "
            f"the 'session_manager' setting (found {manager!r})"
        )
    return manager
