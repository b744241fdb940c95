"""An app that swapped its ``session.py`` for tornsession keeps its old settings; when they name a
store (memcached, Redis) that the manager does not use, the log says so once.

The scenario: a Markdown blog whose copy of ``session.py`` kept sessions in memcached, built its
manager with ``session_dir`` (which tornsession honours: files) and had ``memcache_servers`` in
its settings.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import tornado.testing
import tornado.web
import tornsession as session
from support.handlers import DropInSession

SECRET = "blog-session-secret-of-at-least-32-bytes"


class PostHandler(DropInSession):
    def get(self) -> None:
        self.session["views"] = self.session.get("views", 0) + 1
        self.session.save()
        self.write(str(self.session["views"]))


class BlogApp(tornado.web.Application):
    def __init__(self, **settings: Any) -> None:
        super().__init__([(r"/", PostHandler)], cookie_secret=SECRET, **settings)
        self.session_manager = session.TornadoSessionManager(
            SECRET, settings.get("session_dir"), **settings.get("session_options", {})
        )


class SessionDirWithMemcachedSettingTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        self.folder = tempfile.TemporaryDirectory()
        return BlogApp(session_dir=self.folder.name, memcache_servers=["127.0.0.1:11211"])

    def tearDown(self) -> None:
        super().tearDown()
        self.folder.cleanup()

    def test_the_ignored_setting_is_logged_once(self) -> None:
        with self.assertLogs("tornsession", logging.WARNING) as logs:
            assert self.fetch("/").body == b"1"
            assert self.fetch("/").body == b"1"  # no cookie jar: a new visitor
        warnings = [r.getMessage() for r in logs.records if "suggests sessions" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert '"memcache_servers"' in warnings[0]
        assert "FileStore" in warnings[0] and "from session_dir" in warnings[0]
        assert "store=" in warnings[0]


class GivenStoreTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        return BlogApp(
            memcache_servers=["127.0.0.1:11211"],
            session_options={"store": session.MemoryStore()},
        )

    def test_an_app_that_chose_its_store_gets_no_warning(self) -> None:
        logger = logging.getLogger("tornsession")
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign, assignment]
        logger.addHandler(handler)
        try:
            assert self.fetch("/").body == b"1"
        finally:
            logger.removeHandler(handler)
        assert not [r for r in records if "suggests sessions" in r.getMessage()]
