"""Forged, foreign and broken cookies get a fresh working session; nobody else's data changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any, ClassVar

import pytest
import tornsession as session
from support.handlers import FileSessionsTestCase
from tornado.web import create_signed_value

COOKIE_SECRET = "cookie-secret-for-tests"
SESSION_SECRET = "session-secret-for-tests"


def signed(name: str, value: str, secret: str = COOKIE_SECRET) -> str:
    return create_signed_value(secret, name, value).decode()


def signed_pair(session_id: str, digest: str, secret: str = COOKIE_SECRET) -> str:
    """A ``Cookie:`` value with both session cookies, signed with ``secret``."""
    return (
        f"session_id={signed('session_id', session_id, secret)}; "
        f"hmac_digest={signed('hmac_digest', digest, secret)}"
    )


class BadCookieTest(FileSessionsTestCase):
    cookie_secret = COOKIE_SECRET
    session_secret = SESSION_SECRET

    def visit(self, cookie: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        headers = {"Cookie": cookie} if cookie else {}
        response = self.fetch("/", headers=headers)
        return response.code, json.loads(response.body), response.headers.get_list("Set-Cookie")

    def cookie_header(self, set_cookies: list[str]) -> str:
        return "; ".join(h.split(";", 1)[0] for h in set_cookies)

    def victim(self) -> tuple[str, str, bytes]:
        """A genuine session with data: (cookie header, session id, stored file bytes)."""
        _, body, set_cookies = self.visit()
        cookie = self.cookie_header(set_cookies)
        _, body, _ = self.visit(cookie)
        assert body["n"] == 2
        stored = (self.session_dir / f"SESSION{body['id']}").read_bytes()
        return cookie, body["id"], stored

    def assert_fresh_and_victim_untouched(self, cookie: str, victim_id: str, stored: bytes) -> None:
        code, body, set_cookies = self.visit(cookie)
        assert code == 200
        assert body["n"] == 1
        assert body["id"] != victim_id
        assert len(set_cookies) == 2
        assert (self.session_dir / f"SESSION{victim_id}").read_bytes() == stored

    def test_tampered_cookie_gets_a_fresh_session(self) -> None:
        cookie, victim_id, stored = self.victim()
        # Swap the signed value for another id's, keeping Tornado's signature.
        other = "0" * 32
        encoded = base64.b64encode(victim_id.encode()).decode()
        tampered = cookie.replace(encoded, base64.b64encode(other.encode()).decode())
        assert tampered != cookie
        self.assert_fresh_and_victim_untouched(tampered, victim_id, stored)

    def test_cookie_signed_with_another_cookie_secret_gets_a_fresh_session(self) -> None:
        _, victim_id, stored = self.victim()
        digest = hmac.new(SESSION_SECRET.encode(), victim_id.encode(), hashlib.sha256).hexdigest()
        forged = signed_pair(victim_id, digest, "another-cookie-secret")
        self.assert_fresh_and_victim_untouched(forged, victim_id, stored)

    def test_digest_from_another_session_secret_gets_a_fresh_session(self) -> None:
        _, victim_id, stored = self.victim()
        digest = hmac.new(b"another-session-secret", victim_id.encode(), hashlib.sha256).hexdigest()
        forged = signed_pair(victim_id, digest)
        self.assert_fresh_and_victim_untouched(forged, victim_id, stored)

    def test_missing_digest_cookie_gets_a_fresh_session(self) -> None:
        _, victim_id, stored = self.victim()
        self.assert_fresh_and_victim_untouched(
            f"session_id={signed('session_id', victim_id)}", victim_id, stored
        )

    def test_path_traversal_in_a_validly_signed_id_never_reaches_the_file_store(self) -> None:
        outside = self.session_dir.parent / "SESSIONx"
        for evil in ["../../etc/passwd", "../" + "a" * 29, "a" * 31 + "\x00", "A" * 32]:
            digest = hmac.new(SESSION_SECRET.encode(), evil.encode(), hashlib.sha256).hexdigest()
            cookie = signed_pair(evil, digest)
            code, body, _ = self.visit(cookie)
            assert code == 200 and body["n"] == 1 and body["id"] != evil
        assert not outside.exists()
        assert all(p.name.startswith("SESSION") for p in self.session_dir.iterdir())

    def test_valid_cookie_whose_file_is_corrupt_gets_a_fresh_session_and_a_warning(self) -> None:
        cookie, victim_id, _ = self.victim()
        corrupt = b"\x80\x04not json at all"
        (self.session_dir / f"SESSION{victim_id}").write_bytes(corrupt)
        with self._caplog_tornsession() as records:
            self.assert_fresh_and_victim_untouched(cookie, victim_id, corrupt)
        # A pickle's header (protocol 4): told apart as one, with the way to convert the folder.
        assert any("pickle" in r.getMessage() for r in records)
        assert not any(victim_id in r.getMessage() for r in records), "ids never appear in logs"

    def test_a_folder_where_the_session_file_should_be_gets_a_fresh_session(self) -> None:
        cookie, victim_id, _ = self.victim()
        path = self.session_dir / f"SESSION{victim_id}"
        path.unlink()
        path.mkdir()
        code, body, _ = self.visit(cookie)
        assert code == 200 and body["n"] == 1 and body["id"] != victim_id
        assert path.is_dir()

    def _caplog_tornsession(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def capture() -> Any:
            records: list[logging.LogRecord] = []

            class Collect(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    records.append(record)

            handler = Collect()
            logger = logging.getLogger("tornsession")
            logger.addHandler(handler)
            try:
                yield records
            finally:
                logger.removeHandler(handler)

        return capture()


@pytest.mark.parametrize("garbage", ["", "x", "2|1:0|", "a" * 5000, "\u00e9\u00e9", "%00%ff"])
def test_garbage_cookie_values_get_a_fresh_session(garbage: str) -> None:
    class Handler:
        path_args: ClassVar[list[str]] = ["started"]

        def get_secure_cookie(self, name: str) -> bytes | None:
            return garbage.encode("utf-8", "surrogateescape")

        def set_secure_cookie(self, name: str, value: str, **kwargs: Any) -> None:
            pass

    manager = session.TornadoSessionManager("s")
    s = session.TornadoSession(manager, Handler())
    assert dict(s) == {}
    assert s.session_id != garbage
