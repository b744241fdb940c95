"""Hostile input: huge and numerous cookies, non-UTF-8 bytes, ids naming paths, a 100 MB record,
values nested 100,000 deep, bad secrets. Over real HTTP where a handler is involved: a bad cookie
or a bad record is a fresh session (200), never a 500, a hang or a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import tornsession as session
from support.handlers import FileSessionsTestCase
from tornado.web import create_signed_value

COOKIE_SECRET = "hostile-cookie-secret"
SESSION_SECRET = "hostile-session-secret"


def signed(name: str, value: str | bytes) -> str:
    return create_signed_value(COOKIE_SECRET, name, value).decode()


def digest_of(session_id: str | bytes) -> str:
    raw = session_id if isinstance(session_id, bytes) else session_id.encode()
    return hmac.new(SESSION_SECRET.encode(), raw, hashlib.sha256).hexdigest()


class HostileHTTPTest(FileSessionsTestCase):
    cookie_secret = COOKIE_SECRET
    session_secret = SESSION_SECRET

    def get_http_client(self) -> Any:
        from tornado.simple_httpclient import SimpleAsyncHTTPClient

        return SimpleAsyncHTTPClient(max_header_size=1 << 20)

    def visit(self, cookie: str | None = None) -> tuple[int, dict[str, Any], str]:
        headers = {"Cookie": cookie} if cookie is not None else {}
        response = self.io_loop.run_sync(
            lambda: self.http_client.fetch(
                self.get_url("/"), headers=headers, raise_error=False, request_timeout=120
            ),
            timeout=120,
        )
        assert response.code != 500, response.body
        body = json.loads(response.body) if response.code == 200 else {}
        cookies = "; ".join(
            h.split(";", 1)[0] for h in response.headers.get_list("Set-Cookie") if "=" in h
        )
        return response.code, body, cookies

    def genuine(self) -> tuple[str, str]:
        code, body, cookie = self.visit()
        assert code == 200 and body["n"] == 1
        return cookie, body["id"]

    def assert_fresh(self, cookie: str, not_id: str | None = None) -> None:
        code, body, _ = self.visit(cookie)
        assert code == 200, code
        assert body["n"] == 1 and body["id"] != not_id

    # --- cookies ------------------------------------------------------------------------------

    def test_a_60_kb_cookie_header_of_junk_gets_a_fresh_session(self) -> None:
        self.assert_fresh("junk=" + "x" * 60_000)
        self.assert_fresh("session_id=" + "a" * 60_000 + "; hmac_digest=" + "b" * 100)

    def test_a_cookie_header_beyond_tornados_64_kib_limit_is_refused_not_a_500(self) -> None:
        from tornado.simple_httpclient import HTTPStreamClosedError

        # Tornado's own header limit (64 KiB): it drops the connection, no handler runs.
        try:
            code, _, _ = self.visit("session_id=" + "a" * (65 * 1024))
        except HTTPStreamClosedError:
            code = 599
        assert code == 599 or 400 <= code < 500, code
        # The server is fine afterwards.
        self.genuine()

    def test_thousands_of_cookies_around_the_genuine_pair_keep_the_session(self) -> None:
        cookie, sid = self.genuine()
        many = "; ".join(f"c{i}=v{i}" for i in range(1500))  # 3,000 cookies, ~40 KB
        code, body, _ = self.visit(f"{many}; {cookie}; {many.replace('c', 'd')}")
        assert code == 200 and body == {"n": 2, "id": sid}

    def test_thousands_of_junk_session_cookies_get_a_fresh_session(self) -> None:
        _, sid = self.genuine()
        junk = "; ".join(f"session_id=x{i}; hmac_digest=y{i}" for i in range(1000))
        self.assert_fresh(junk, not_id=sid)

    def test_non_utf8_bytes_in_cookies_get_a_fresh_session(self) -> None:
        # Header values are latin-1 on the wire: these are raw 0x80-0xff bytes, not UTF-8.
        self.assert_fresh("session_id=\xff\xfe\x80; hmac_digest=\xc3\x28")
        # Validly signed by the app, but the id inside is not UTF-8.
        raw_id = b"\xff" * 32
        self.assert_fresh(
            f"session_id={signed('session_id', raw_id)}; "
            f"hmac_digest={signed('hmac_digest', digest_of(raw_id))}"
        )

    def test_signed_ids_naming_paths_or_holding_nul_never_reach_the_file_store(self) -> None:
        evil_ids = [
            "../" * 10 + "aa",
            "/etc/passwd" + "a" * 21,
            "..\\..\\windows\\system32\\aaaaaa",
            "a" * 15 + "\x00" + "b" * 16,
            "a" * 31 + "/",
            "%2e%2e%2f" + "a" * 23,
            "0123456789abcdef0123456789abcde\n",
            "0123456789ABCDEF0123456789ABCDEF",
            " 0123456789abcdef0123456789abcde",
        ]
        for evil in evil_ids:
            self.assert_fresh(
                f"session_id={signed('session_id', evil)}; "
                f"hmac_digest={signed('hmac_digest', digest_of(evil))}",
                not_id=evil,
            )
        outside = self.session_dir.parent
        assert sorted(p.name for p in outside.iterdir()) == ["sessions"]
        assert all(p.name.startswith("SESSION") for p in self.session_dir.iterdir())

    # --- stored records -----------------------------------------------------------------------

    def plant(self, blob: bytes) -> tuple[str, str]:
        cookie, sid = self.genuine()
        (self.session_dir / f"SESSION{sid}").write_bytes(blob)
        return cookie, sid

    def test_a_record_nested_100000_deep_is_a_fresh_session_not_a_stack_overflow(self) -> None:
        for open_, close in [("[", "]"), ('{"k":', "}")]:
            nested = f'{{"v":1,"c":1,"d":{{"x":{open_ * 100_000}1{close * 100_000}}}}}'
            cookie, sid = self.plant(nested.encode())
            self.assert_fresh(cookie, not_id=sid)

    def test_a_100_mb_record_is_a_fresh_session_within_seconds(self) -> None:
        # Over the default read limit (1 MiB): refused without parsing, whatever it holds.
        size = 100 * 1024 * 1024
        filler = b"a" * size
        blobs = {
            "valid": b'{"v":1,"c":1,"d":{"n":41,"big":"' + filler + b'"}}',
            "truncated": b'{"v":1,"c":1,"d":{"n":41,"big":"' + filler,
            "junk": b"\x80" * size,
        }
        for kind, blob in blobs.items():
            cookie, sid = self.plant(blob)
            del blob
            started = time.monotonic()
            code, body, _ = self.visit(cookie)
            elapsed = time.monotonic() - started
            assert code == 200, (kind, code)
            print(f"\n100 MB {kind} record: {elapsed:.2f} s")
            assert body["n"] == 1 and body["id"] != sid, kind
            assert elapsed < 30, f"{kind}: {elapsed:.1f} s"
            (self.session_dir / f"SESSION{sid}").unlink()
        del blobs


# --- the API directly ---------------------------------------------------------------------------


@pytest.fixture
def manager() -> session.SessionManager:
    return session.SessionManager(SESSION_SECRET)


@pytest.mark.parametrize("depth", [121, 1000, 100_000])
def test_saving_values_nested_too_deep_is_a_clear_error_and_changes_nothing(
    manager: session.SessionManager, depth: int
) -> None:
    s = manager.get()
    s["keep"] = 1
    manager.set(s)
    value: Any = 1
    for _ in range(depth):
        value = [value]
    s["deep"] = value
    with pytest.raises(ValueError, match=r'"deep".*nested deeper than 120'):
        manager.set(s)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"keep": 1}


def test_the_deepest_savable_value_loads_back(manager: session.SessionManager) -> None:
    value: Any = 1
    for _ in range(119):
        value = {"k": value} if _ % 2 else [value]
    s = manager.get()
    s["deep"] = value
    manager.set(s)
    assert manager.get(s.session_id, s.hmac_digest)["deep"] == value


def test_self_referencing_values_are_a_clear_error_not_endless_recursion(
    manager: session.SessionManager,
) -> None:
    loop: list[Any] = []
    loop.append(loop)
    cycle: dict[str, Any] = {}
    cycle["me"] = cycle
    for value in (loop, cycle):
        s = manager.get()
        s["loop"] = value
        with pytest.raises(ValueError, match="nested deeper than 120"):
            manager.set(s)


def test_lone_surrogates_in_keys_or_values_are_refused_at_save(
    manager: session.SessionManager,
) -> None:
    for items in ({"k": "\ud800"}, {"\udfff": 1}, {"k": ["ok", {"x": "\ud83d"}]}):
        s = manager.get()
        s.update(items)
        with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError
            manager.set(s)


def test_huge_values_save_and_load_within_max_read_size() -> None:
    manager = session.SessionManager(SESSION_SECRET, max_read_size=64 * 1024 * 1024)
    s = manager.get()
    s["big"] = "x" * (20 * 1024 * 1024)
    s["many"] = list(range(200_000))
    s.update({f"k{i}": i for i in range(50_000)})
    manager.set(s)
    loaded = manager.get(s.session_id, s.hmac_digest)
    assert len(loaded["big"]) == 20 * 1024 * 1024 and loaded["many"][-1] == 199_999
    assert loaded["k49999"] == 49_999


def test_a_record_over_the_default_read_limit_loads_as_a_fresh_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = session.MemoryStore()
    writer = session.SessionManager(SESSION_SECRET, store=store, max_size=4 * 1024 * 1024)
    reader = session.SessionManager(SESSION_SECRET, store=store)
    s = writer.get()
    s["big"] = "x" * (2 * 1024 * 1024)
    writer.set(s)
    assert writer.get(s.session_id, s.hmac_digest)["big"] == s["big"], "max_size raises the limit"
    loaded = reader.get(s.session_id, s.hmac_digest)
    assert dict(loaded) == {} and loaded.session_id != s.session_id
    assert "over the read limit" in caplog.text and s.session_id not in caplog.text


@pytest.mark.parametrize(
    "secret, error",
    [
        (None, TypeError),
        (123, TypeError),
        (1.5, TypeError),
        ({"a": "b"}, TypeError),
        (bytearray(b"abc"), TypeError),
        (["ok", 1], TypeError),
        ([["nested"]], TypeError),
        ("", ValueError),
        (b"", ValueError),
        ([], ValueError),
        ((), ValueError),
        (["ok", ""], ValueError),
        ("\ud800", ValueError),
    ],
)
def test_bad_secrets_fail_clearly_at_construction(secret: Any, error: type[Exception]) -> None:
    for cls in (session.SessionManager, session.TornadoSessionManager):
        with pytest.raises(error):
            cls(secret)


def test_secret_errors_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match="secret must be a str or bytes"):
        session.SessionManager(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret number 1 is empty"):
        session.SessionManager(["new", ""])
    with pytest.raises(ValueError, match="no secret given"):
        session.SessionManager([])
