"""The original module's API (SessionManager, TornadoSessionManager) and tornsession's options."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tornado.web
import tornsession as session
from support.handlers import CookieJarHandler
from tornado.testing import AsyncHTTPTestCase
from tornado.web import create_signed_value, decode_signed_value

COOKIE_SECRET = "cookie-secret"


def test_get_without_id_makes_a_new_unsaved_session_with_a_csprng_id() -> None:
    manager = session.SessionManager("secret")
    a, b = manager.get(), manager.get()
    assert a.session_id != b.session_id
    for s in (a, b):
        assert isinstance(s, session.Session) and dict(s) == {}
        assert len(s.session_id) == 32 and all(c in "0123456789abcdef" for c in s.session_id)
        expected = hmac.new(b"secret", s.session_id.encode(), hashlib.sha256).hexdigest()
        assert s.hmac_digest == expected


def test_set_then_get_round_trips_and_checks_the_digest(tmp_path: Path) -> None:
    manager = session.SessionManager(secret="secret", session_dir=str(tmp_path))
    s = manager.get()
    s["user"] = "ann"
    manager.set(s)
    loaded = manager.get(s.session_id, s.hmac_digest)
    assert dict(loaded) == {"user": "ann"}
    loaded_from_bytes = manager.get(s.session_id.encode(), s.hmac_digest.encode())
    assert dict(loaded_from_bytes) == {"user": "ann"}
    with pytest.raises(session.InvalidSessionException):
        manager.get(s.session_id, "0" * 64)
    with pytest.raises(session.InvalidSessionException):
        manager.get(s.session_id, None)
    with pytest.raises(session.InvalidSessionException):
        manager.get("../../etc/passwd", s.hmac_digest)


def test_a_genuine_id_without_a_record_gets_a_fresh_session_with_a_new_id() -> None:
    # Expired, destroyed or never saved: a new id, so an old cookie never names a new session.
    manager = session.SessionManager("secret")
    s = manager.get()
    again = manager.get(s.session_id, s.hmac_digest)
    assert dict(again) == {} and again.session_id != s.session_id


def test_keyword_construction_as_apps_do_it(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"secret": "secret", "session_dir": str(tmp_path / "s")}
    manager = session.TornadoSessionManager(**settings)
    s = manager.get()
    s["a"] = 1
    session.SessionManager.set(manager, s)
    assert (tmp_path / "s" / f"SESSION{s.session_id}").exists()


def test_session_dir_is_created_private(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "sessions"
    session.SessionManager("secret", str(folder))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_neither_dir_nor_store_means_a_memory_store() -> None:
    assert "MemoryStore" in repr(session.SessionManager("secret"))
    assert "MemoryStore" in repr(session.SessionManager("secret", ""))


def test_set_refuses_what_is_not_a_tornsession_session() -> None:
    manager = session.SessionManager("secret")
    with pytest.raises(TypeError, match="Session"):
        manager.set({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session id"):
        manager.set(session.Session("not-an-id", "x"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"secret": ""}, ValueError, "empty"),
        ({"secret": []}, ValueError, "no secret"),
        ({"secret": None}, TypeError, "str or bytes"),
        ({"secret": 42}, TypeError, "str or bytes"),
        ({"secret": ["ok", ""]}, ValueError, "empty"),
        ({"secret": "s", "cookie_samesite": "Sometimes"}, ValueError, "cookie_samesite"),
        ({"secret": "s", "cookie_name": "same", "digest_cookie_name": "same"}, ValueError, "two"),
        ({"secret": "s", "store": object()}, TypeError, "get"),
        (
            {"secret": "s", "store": session.MemoryStore(), "session_dir": "x"},
            ValueError,
            "not both",
        ),
        ({"secret": "s", "idle_timeout": -1}, ValueError, "positive"),
        ({"secret": "s", "idle_timeout": "soon"}, TypeError, "timedelta"),
        ({"secret": "s", "no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_configuration_fails_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        session.TornadoSessionManager(**kwargs)


def test_secrets_may_be_bytes_a_list_and_a_timedelta_timeout() -> None:
    session.SessionManager(b"bytes-secret")
    session.SessionManager(["new", b"old"], idle_timeout=timedelta(minutes=20))


def test_memory_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    store = session.MemoryStore(max_sessions=2)
    manager = session.SessionManager("secret", store=store)
    made = []
    for i in range(3):
        s = manager.get()
        s["i"] = i
        manager.set(s)
        made.append(s)
    assert len(store) == 2 and store.max_sessions == 2
    assert dict(manager.get(made[0].session_id, made[0].hmac_digest)) == {}
    assert dict(manager.get(made[2].session_id, made[2].hmac_digest)) == {"i": 2}
    with pytest.raises(ValueError):
        session.MemoryStore(max_sessions=0)


def test_a_file_where_the_folder_should_be_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(session.SessionStoreError, match="FileStore"):
        session.FileStore(blocker)


def test_a_python_store_that_fails_raises_session_store_error_naming_it() -> None:
    class Down:
        def get(self, key: str) -> bytes | None:
            raise ConnectionError("connection refused")

        def set(self, key: str, value: bytes, ttl: int | None) -> None:
            raise ConnectionError("connection refused")

        def delete(self, key: str) -> None:
            pass

        def __repr__(self) -> str:
            return "Down()"

    manager = session.SessionManager("secret", store=Down())
    s = manager.get()
    with pytest.raises(session.SessionStoreError, match=r"Down\(\).*connection refused"):
        manager.set(s)
    with pytest.raises(session.SessionStoreError, match="connection refused"):
        manager.get(s.session_id, s.hmac_digest)


def test_python_store_sees_prefixed_keys_json_values_and_the_idle_timeout_as_ttl() -> None:
    seen: dict[str, tuple[bytes, int | None]] = {}

    class Recording:
        def get(self, key: str) -> bytes | None:
            return seen[key][0] if key in seen else None

        def set(self, key: str, value: bytes, ttl: int | None) -> None:
            seen[key] = (value, ttl)

        def delete(self, key: str) -> None:
            seen.pop(key, None)

    manager = session.SessionManager("secret", store=Recording(), idle_timeout=90.5)
    s = manager.get()
    s["a"] = 1
    manager.set(s)
    (key, (value, ttl)), *_ = seen.items()
    assert key == f"tornsession:{s.session_id}"
    assert json.loads(value)["d"] == {"a": 1}
    assert ttl == 91


class OverridingHandler(tornado.web.RequestHandler):
    """An app handler that overrides the cookie methods: tornsession must go through them."""

    calls: ClassVar[list[str]] = []

    def get_secure_cookie(self, name: str, *args: Any, **kwargs: Any) -> bytes | None:
        OverridingHandler.calls.append(f"get:{name}")
        return super().get_secure_cookie(name, *args, **kwargs)

    def set_secure_cookie(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        OverridingHandler.calls.append(f"set:{name}")
        super().set_secure_cookie(name, value, *args, **kwargs)

    def get(self) -> None:
        s = session.TornadoSession(self.application.session_manager, self)  # type: ignore[attr-defined]
        s["n"] = s.get("n", 0) + 1
        s.save()
        self.write(json.dumps(s))


class DumpHandler(tornado.web.RequestHandler):
    def initialize(self) -> None:
        self.session = session.TornadoSession(self.application.session_manager, self)  # type: ignore[attr-defined]

    def get(self) -> None:
        # The session's first use is json.dumps, which reads a dict's storage directly.
        self.write(json.dumps(self.session))


class ManagerThroughTornadoTest(AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        app = tornado.web.Application(
            [(r"/", OverridingHandler), (r"/dump", DumpHandler)], cookie_secret=COOKIE_SECRET
        )
        app.session_manager = session.TornadoSessionManager(  # type: ignore[attr-defined]
            "secret",
            cookie_name="sid",
            digest_cookie_name="sdig",
            cookie_secure=True,
            cookie_domain="example.test",
            cookie_path="/app",
            cookie_expires_days=None,
            cookie_samesite="Strict",
        )
        return app

    def test_handler_overrides_of_the_cookie_methods_are_used(self) -> None:
        OverridingHandler.calls.clear()
        self.fetch("/")
        assert OverridingHandler.calls == ["get:sid", "set:sid", "set:sdig"]

    def test_cookie_names_and_attributes_follow_the_options(self) -> None:
        headers = self.fetch("/").headers.get_list("Set-Cookie")
        assert [h.split("=", 1)[0] for h in headers] == ["sid", "sdig"]
        for header in headers:
            lowered = header.lower()
            for part in [
                "httponly",
                "secure",
                "domain=example.test",
                "path=/app",
                "samesite=strict",
            ]:
                assert part in lowered, header
            assert "expires" not in lowered, "cookie_expires_days=None is a browser-session cookie"

    def test_json_dumps_as_first_use_sees_the_stored_data(self) -> None:
        first = self.fetch("/")
        cookie = "; ".join(h.split(";", 1)[0] for h in first.headers.get_list("Set-Cookie"))
        assert json.loads(self.fetch("/dump", headers={"Cookie": cookie}).body) == {"n": 1}


def original_cookies(session_id: str, secret: str) -> str:
    """The cookie header the original module would have set for `session_id`."""
    digest = hmac.new(session_id.encode(), secret.encode(), hashlib.sha1).hexdigest()
    sid = create_signed_value(COOKIE_SECRET, "session_id", session_id).decode()
    dig = create_signed_value(COOKIE_SECRET, "hmac_digest", digest).decode()
    return f"session_id={sid}; hmac_digest={dig}"


class OriginalCookieTest(AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        app = tornado.web.Application([(r"/", OverridingHandler)], cookie_secret=COOKIE_SECRET)
        self.manager = session.TornadoSessionManager("ttesttt")
        app.session_manager = self.manager  # type: ignore[attr-defined]
        return app

    def test_cookie_and_digest_made_by_the_original_still_open_the_session(self) -> None:
        # An id in the original's shape: md5(secret + uuid4) hex.
        session_id = hashlib.md5(b"ttesttt-some-uuid").hexdigest()
        legacy_digest = hmac.new(session_id.encode(), b"ttesttt", hashlib.sha1).hexdigest()
        s = self.manager.get()
        s.session_id = session_id
        s["n"] = 41
        session.SessionManager.set(self.manager, s)
        assert dict(session.SessionManager.get(self.manager, session_id, legacy_digest)) == {
            "n": 41
        }

        response = self.fetch("/", headers={"Cookie": original_cookies(session_id, "ttesttt")})
        assert json.loads(response.body) == {"n": 42}
        # The save re-signs: the digest cookie now holds HMAC-SHA256 under the secret.
        jar: SimpleCookie = SimpleCookie()
        for header in response.headers.get_list("Set-Cookie"):
            jar.load(header)
        digest = decode_signed_value(COOKIE_SECRET, "hmac_digest", jar["hmac_digest"].value)
        expected = hmac.new(b"ttesttt", session_id.encode(), hashlib.sha256).hexdigest()
        assert digest == expected.encode()

    def test_original_cookies_with_the_wrong_secret_get_a_fresh_session(self) -> None:
        session_id = hashlib.md5(b"x").hexdigest()
        response = self.fetch("/", headers={"Cookie": original_cookies(session_id, "not-it")})
        assert json.loads(response.body) == {"n": 1}


def test_a_manager_subclass_overriding_get_and_set_is_used_by_tornado_session() -> None:
    calls: list[str] = []

    class AuditingManager(session.TornadoSessionManager):
        # The original API narrows get/set in TornadoSessionManager; subclasses inherit that.
        def get(self, requestHandler: Any = None) -> session.Session:  # type: ignore[override]
            calls.append("get")
            return super().get(requestHandler)

        def set(self, requestHandler: Any, s: session.Session) -> None:  # type: ignore[override]
            calls.append("set")
            super().set(requestHandler, s)

    manager = AuditingManager("secret")
    handler = CookieJarHandler()
    first = session.TornadoSession(manager, handler)
    first["a"] = 1
    first.save()
    again = session.TornadoSession(manager, handler)
    assert dict(again) == {"a": 1}
    assert again.session_id == first.session_id
    assert calls == ["get", "set", "get"]
