"""A stand-in for a Tornado RequestHandler, for the API tests that need no server."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import tornado.web
import tornsession
from tornado.testing import AsyncHTTPTestCase


class CookieJarHandler:
    """Just the cookie methods of a RequestHandler, over a cookie jar (``cookies``); not
    'started' (no ``path_args``), like a handler whose get() has not begun."""

    def __init__(self) -> None:
        self.cookies: dict[str, bytes] = {}

    def get_secure_cookie(self, name: str) -> bytes | None:
        return self.cookies.get(name)

    def set_secure_cookie(self, name: str, value: str, **kwargs: Any) -> None:
        self.cookies[name] = value.encode()

    def clear_cookie(self, name: str, **kwargs: Any) -> None:
        self.cookies.pop(name, None)


class DropInSession(tornado.web.RequestHandler):
    """The original module's style: the session made in initialize(), from the application's
    ``session_manager``, and saved by hand."""

    def initialize(self) -> None:
        manager = self.application.session_manager  # type: ignore[attr-defined]
        self.session = tornsession.TornadoSession(manager, self)


class CounterHandler(DropInSession):
    """Counts the visits of a session: answers ``{"n": count, "id": session id}``."""

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write({"n": self.session["n"], "id": self.session.session_id})


class FileSessionsTestCase(AsyncHTTPTestCase):
    """``CounterHandler`` at ``/``, its sessions in ``session_dir`` (a FileStore folder in a
    temporary folder of its own, removed after each test), signed with the subclass's
    ``cookie_secret`` and ``session_secret``."""

    cookie_secret: str
    session_secret: str
    session_dir: Path

    def get_app(self) -> tornado.web.Application:
        self._tmp = tempfile.TemporaryDirectory()
        self.session_dir = Path(self._tmp.name) / "sessions"
        app = tornado.web.Application([(r"/", CounterHandler)], cookie_secret=self.cookie_secret)
        app.session_manager = tornsession.TornadoSessionManager(  # type: ignore[attr-defined]
            self.session_secret, str(self.session_dir)
        )
        return app

    def tearDown(self) -> None:
        super().tearDown()
        self._tmp.cleanup()
