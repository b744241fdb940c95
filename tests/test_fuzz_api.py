"""Property tests (hypothesis) over the Python API: whatever arrives in a cookie or sits in the
store, loading gives the stored session or a clean fresh one, never another exception or a crash.

200 examples per property by default; `HYPOTHESIS_PROFILE=long` runs 20,000 (docs/soak-and-fuzz.md).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
import tornsession as session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.engine_app import Server
from support.stores import DictStore, saved_session

for profile, examples in (("default", 200), ("long", 20_000)):
    settings.register_profile(
        profile,
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
# The values round trip (the ``manager`` fixture) runs on these stores.
pytestmark = pytest.mark.store_kinds("memory", "file", "python")

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

COOKIE_SECRET = "fuzz-cookie-secret"
SESSION_SECRET = "fuzz-session-secret"
HEX = "0123456789abcdef"


# --- values -------------------------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)


def json_values(floats: st.SearchStrategy[float] | None = None) -> st.SearchStrategy[Any]:
    leaves = json_leaves if floats is None else (json_leaves.filter(_not_float) | floats)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.lists(inner, max_size=5).map(tuple)
            | st.dictionaries(st.text(), inner, max_size=5)
        ),
        max_leaves=25,
    )


def _not_float(value: Any) -> bool:
    return not isinstance(value, float)


def short_floats() -> st.SearchStrategy[float]:
    """Floats of at most 9 significant digits (arbitrary ones are covered separately)."""
    return st.builds(
        lambda m, e: float(f"{m}e{e}"),
        st.integers(-999_999_999, 999_999_999),
        st.integers(-15, 15),
    )


def normalized(value: Any) -> Any:
    """What JSON gives back: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    return value


class FakeHandler:
    """A handler whose cookies are whatever the test says; 'started', like one running get()."""

    def __init__(self, cookies: dict[str, Any]) -> None:
        self.cookies = cookies
        self.path_args: list[str] = []
        self.set_cookies: dict[str, str] = {}

    def get_secure_cookie(self, name: str) -> Any:
        return self.cookies.get(name)

    def set_secure_cookie(self, name: str, value: str, **kwargs: Any) -> None:
        self.set_cookies[name] = value


def is_fresh(s: session.Session, not_id: object = None) -> bool:
    sid = s.session_id
    return (
        dict(s) == {}
        and isinstance(sid, str)
        and len(sid) == 32
        and all(c in HEX for c in sid)
        and sid != not_id
    )


# --- cookies through the API --------------------------------------------------------------------

cookie_values = st.none() | st.binary(max_size=200) | st.text(max_size=200)


@given(session_id=cookie_values, digest=cookie_values)
def test_manager_get_with_arbitrary_cookie_bytes_is_fresh_or_invalid(
    session_id: Any, digest: Any
) -> None:
    manager = session.TornadoSessionManager(SESSION_SECRET, store=DictStore())
    handler = FakeHandler({"session_id": session_id, "hmac_digest": digest})
    if session_id is None:
        assert is_fresh(manager.get(handler))
    else:
        with pytest.raises(session.InvalidSessionException):
            manager.get(handler)
    # TornadoSession swallows the mismatch, as the original did.
    s = session.TornadoSession(manager, handler)
    assert is_fresh(s, not_id=session_id)


@given(
    session_id=st.one_of(
        st.text(alphabet=HEX + "ABCDEF/\\.\x00", min_size=30, max_size=34),
        st.binary(max_size=200),
        st.text(max_size=200),
    ),
    other=st.sampled_from([0, 1.5, [], {}, object()]),
)
def test_session_manager_get_with_arbitrary_ids_never_touches_the_store(
    session_id: Any, other: Any
) -> None:
    store = DictStore()
    manager = session.SessionManager(SESSION_SECRET, store=store)
    real = manager.get()
    # A digest that is genuine for the real session only.
    for digest in [real.hmac_digest, other, None]:
        with pytest.raises(session.InvalidSessionException):
            manager.get(session_id, digest)
    with pytest.raises(session.InvalidSessionException):
        manager.get(other, real.hmac_digest)
    assert store.data == {}


# --- values round trip --------------------------------------------------------------------------


@pytest.fixture
def manager(any_store: Any) -> session.SessionManager:
    return session.SessionManager(SESSION_SECRET, store=any_store)


@given(items=st.dictionaries(st.text(), json_values(floats=short_floats()), max_size=6))
def test_saved_json_values_load_back_equal(
    manager: session.SessionManager, items: dict[str, Any]
) -> None:
    s = saved_session(manager, **items)
    loaded = manager.get(s.session_id, s.hmac_digest)
    assert dict(loaded) == normalized(items)
    assert loaded.session_id == s.session_id
    # Saving what was loaded stores the same thing again.
    manager.set(loaded)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == normalized(items)


@given(items=st.dictionaries(st.text(), json_values(), max_size=6))
def test_saved_values_including_any_float_load_back_with_the_same_shape(
    manager: session.SessionManager, items: dict[str, Any]
) -> None:
    """Arbitrary finite floats come back bit for bit, with the same shape and types."""
    s = saved_session(manager, **items)
    loaded = dict(manager.get(s.session_id, s.hmac_digest))
    assert_close(loaded, normalized(items))
    assert loaded == normalized(items)


def assert_close(got: Any, want: Any) -> None:
    assert type(got) is type(want), (got, want)
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-15, abs=0.0), (got, want)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            assert_close(got[key], want[key])
    else:
        assert got == want


# --- anything in the store ----------------------------------------------------------------------


def envelopes() -> st.SearchStrategy[bytes]:
    """Records that are right, or wrong in one or more fields."""
    field = st.one_of(json_values(floats=short_floats()), st.just(1))
    version = st.one_of(st.just(1), st.integers(-5, 2**64), field)
    created = st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**63), -1), field)
    data = st.one_of(st.dictionaries(st.text(), json_values(floats=short_floats())), field)
    return st.builds(
        lambda v, c, d, drop: json.dumps(
            {k: x for k, x in {"v": v, "c": c, "d": d}.items() if k not in drop}
        ).encode(),
        version,
        created,
        data,
        st.sets(st.sampled_from(["v", "c", "d"]), max_size=1),
    )


stored_blobs = st.one_of(st.binary(max_size=300), envelopes())


def expected_from(blob: bytes) -> dict[str, Any] | None:
    """The data a blob must load as, or None when it must load as a fresh session."""
    try:
        record = json.loads(blob)
    except ValueError:
        return None
    if not isinstance(record, dict) or not {"v", "c", "d"} <= set(record):
        return None
    v, c, d = record["v"], record["c"], record["d"]
    valid = type(v) is int and v == 1 and type(c) is int and 0 <= c < 2**64 and isinstance(d, dict)
    return d if valid else None


def check_loaded(loaded: session.Session, session_id: str, blob: bytes) -> None:
    expected = expected_from(blob)
    if expected is None:
        assert is_fresh(loaded, not_id=session_id), (blob, dict(loaded))
    else:
        assert loaded.session_id == session_id
        assert dict(loaded) == expected


@given(blob=stored_blobs)
def test_any_bytes_in_a_python_store_load_as_that_record_or_a_fresh_session(blob: bytes) -> None:
    store = DictStore()
    manager = session.SessionManager(SESSION_SECRET, store=store)
    s = manager.get()
    store.data["tornsession:" + s.session_id] = blob
    check_loaded(manager.get(s.session_id, s.hmac_digest), s.session_id, blob)
    tornado_manager = session.TornadoSessionManager(SESSION_SECRET, store=store)
    handler = FakeHandler({"session_id": s.session_id.encode(), "hmac_digest": s.hmac_digest})
    check_loaded(tornado_manager.get(handler), s.session_id, blob)
    check_loaded(session.TornadoSession(tornado_manager, handler), s.session_id, blob)
    # The bad record is never overwritten by the fresh session.
    assert store.data["tornsession:" + s.session_id] == blob


@given(blob=stored_blobs)
def test_any_bytes_in_a_session_file_load_as_that_record_or_a_fresh_session(
    tmp_path: Path, blob: bytes
) -> None:
    folder = tmp_path / "sessions"
    manager = session.SessionManager(SESSION_SECRET, str(folder))
    s = manager.get()
    (folder / f"SESSION{s.session_id}").write_bytes(blob)
    check_loaded(manager.get(s.session_id, s.hmac_digest), s.session_id, blob)
    assert (folder / f"SESSION{s.session_id}").read_bytes() == blob


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.glob("corpus/records/*")))
def test_corpus_records_load_as_the_record_or_a_fresh_session(tmp_path: Path, path: Path) -> None:
    folder = tmp_path / "sessions"
    manager = session.SessionManager(SESSION_SECRET, str(folder))
    s = manager.get()
    blob = path.read_bytes()
    (folder / f"SESSION{s.session_id}").write_bytes(blob)
    loaded = manager.get(s.session_id, s.hmac_digest)
    if path.name.startswith("ok-"):
        assert loaded.session_id == s.session_id
        assert dict(loaded) == json.loads(blob)["d"]
    else:
        assert is_fresh(loaded, not_id=s.session_id)


# --- cookie headers over real HTTP --------------------------------------------------------------


class CounterHandler(tornado.web.RequestHandler):
    def initialize(self, manager: session.TornadoSessionManager) -> None:
        self.session = session.TornadoSession(manager, self)

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write({"n": self.session["n"]})


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    manager = session.TornadoSessionManager(SESSION_SECRET)
    app = tornado.web.Application(
        [(r"/", CounterHandler, {"manager": manager})], cookie_secret=COOKIE_SECRET
    )
    running = Server(app)
    yield running
    running.stop()


def raw_get(port: int, cookie: bytes | None) -> tuple[int, bytes, list[bytes]]:
    """GET / with exactly these Cookie header bytes; (status, body, Set-Cookie values)."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if cookie is not None:
        request += b"Cookie: " + cookie + b"\r\n"
    request += b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    set_cookies = [
        line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"set-cookie:")
    ]
    return status, body, set_cookies


# Header bytes: anything but the line breaks that would end the header.
header_bytes = st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(cookie=header_bytes)
def test_arbitrary_cookie_header_bytes_over_http_never_fail_the_request(
    server: Server, cookie: bytes
) -> None:
    status, body, _ = raw_get(server.port, cookie)
    # Tornado may refuse a malformed header line itself (400); a session problem is never a 500.
    assert status in (200, 400), (status, cookie, body)
    if status == 200:
        assert json.loads(body) == {"n": 1}


cookie_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda n: n not in ("session_id", "hmac_digest")
)
cookie_junk = st.binary(max_size=60).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b";", b"")
)


@given(
    before=st.lists(st.tuples(cookie_names, cookie_junk), max_size=5),
    after=st.lists(st.tuples(cookie_names, cookie_junk), max_size=5),
)
def test_genuine_cookies_among_arbitrary_others_keep_the_session(
    server: Server,
    before: list[tuple[str, bytes]],
    after: list[tuple[str, bytes]],
) -> None:
    status, body, set_cookies = raw_get(server.port, None)
    assert status == 200 and json.loads(body) == {"n": 1}
    genuine = b"; ".join(c.split(b";", 1)[0] for c in set_cookies)

    def pairs(items: list[tuple[str, bytes]]) -> list[bytes]:
        return [name.encode() + b"=" + value for name, value in items]

    cookie = b"; ".join([*pairs(before), genuine, *pairs(after)])
    status, body, _ = raw_get(server.port, cookie)
    assert status in (200, 400), (status, cookie, body)
    if status == 200:
        assert json.loads(body) == {"n": 2}, cookie
