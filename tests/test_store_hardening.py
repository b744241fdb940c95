"""Issue 12, store hardening over the Python API: save_if_exists, the read limit, hostile
FileStore records, no session id in any store error or log line, durability options, the
MemoryStore's bounds and eviction, key order, and extreme numbers (ValueError, never a panic)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.any_store import StoreOpener
from support.servers import RedisServer, ServerProcess
from support.stores import AtomicDictStore, DictStore, saved_session
from tornsession._core import _store_load, _store_save_if_exists

SECRET = "store-hardening-secret"
ABSENT = "0123456789abcdef0123456789abcdef"


def record(**data: Any) -> bytes:
    """A valid stored record holding ``data``."""
    import json

    return json.dumps({"v": 1, "c": int(time.time()), "d": data}).encode()


def saved(manager: tornsession.SessionManager, **items: Any) -> tornsession.Session:
    return saved_session(manager, **(items or {"n": 1}))


@pytest.fixture(
    params=[
        "memory",
        "file",
        "file-durable",
        "sqlite",
        "redis",
        "redis-cluster",
        "memcached",
        "python",
        "atomic",
    ]
)
def store(request: pytest.FixtureRequest) -> Any:
    kind: str = request.param
    if kind == "file-durable":
        return StoreOpener("file", request)(durable=True)
    if kind == "atomic":
        return AtomicDictStore()
    return StoreOpener(kind.removeprefix("redis-"), request)()


# --- 1. save_if_exists ---------------------------------------------------------------------------


def test_save_if_exists_writes_only_over_an_existing_record(store: Any) -> None:
    manager = tornsession.SessionManager(SECRET, store=store)
    assert _store_save_if_exists(store, ABSENT, record(k=1), 60) is False
    assert _store_load(store, ABSENT, 1 << 20) is None, "nothing was written"
    s = saved(manager, n=1)
    assert _store_save_if_exists(store, s.session_id, record(k=2), 60) is True
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"k": 2}


def test_python_stores_use_set_if_exists_when_they_have_it() -> None:
    atomic, plain = AtomicDictStore(), DictStore()
    for store in (atomic, plain):
        store.data[f"tornsession:{ABSENT}"] = b"old"
        store.calls.clear()
        assert _store_save_if_exists(store, ABSENT, b"new", None)
        assert store.data[f"tornsession:{ABSENT}"] == b"new"
    assert atomic.calls == ["set_if_exists"]
    assert plain.calls == ["get", "set"], "the documented, non-atomic fallback"
    plain.data.clear()
    plain.calls.clear()
    assert not _store_save_if_exists(plain, ABSENT, b"new", None)
    assert plain.calls == ["get"] and not plain.data


# --- 2. the read limit ---------------------------------------------------------------------------


def test_loads_refuse_records_over_the_limit(store: Any) -> None:
    manager = tornsession.SessionManager(SECRET, store=store)
    s = saved(manager, big="x" * 1000)
    blob = _store_load(store, s.session_id, 1 << 20)
    assert blob is not None
    assert _store_load(store, s.session_id, len(blob)) == blob
    with pytest.raises(tornsession.SessionStoreError, match="more than the") as caught:
        _store_load(store, s.session_id, len(blob) - 1)
    assert s.session_id not in str(caught.value)


# --- 3. hostile FileStore records ----------------------------------------------------------------


def replace_record(folder: Path, sid: str, make: Callable[[Path], None]) -> None:
    path = folder / f"SESSION{sid}"
    path.unlink()
    make(path)


HOSTILE: dict[str, Callable[[Path], None]] = {
    "fifo": lambda p: os.mkfifo(p),
    "symlink-to-dev-zero": lambda p: p.symlink_to("/dev/zero"),
    "directory": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_record_is_a_fresh_session_with_a_warning_and_never_blocks(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = tornsession.SessionManager(SECRET, store=tornsession.FileStore(tmp_path))
    s = saved(manager, n=1)
    replace_record(tmp_path, s.session_id, HOSTILE[kind])
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(manager.get(s.session_id, s.hmac_digest)), daemon=True
    )
    with caplog.at_level(logging.DEBUG):
        worker.start()
        worker.join(timeout=10)
    assert not worker.is_alive(), f"blocked on a {kind}"
    fresh = result[0]
    assert dict(fresh) == {} and fresh.session_id != s.session_id
    assert any(r.levelno == logging.WARNING for r in caplog.records), caplog.text
    assert s.session_id not in caplog.text


def test_running_out_of_file_descriptors_fails_the_request(tmp_path: Path) -> None:
    """EMFILE is the store failing, not a lost session: SessionStoreError, nothing fresh."""
    script = textwrap.dedent(
        f"""
        import os, resource
        import tornsession
        manager = tornsession.SessionManager("s", store=tornsession.FileStore({str(tmp_path)!r}))
        s = manager.get(); s["n"] = 1; manager.set(s)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            manager.get(s.session_id, s.hmac_digest)
        except tornsession.SessionStoreError as e:
            assert s.session_id not in str(e), e
            print("store error:", e)
        else:
            print("no error")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("store error:"), done.stdout
    assert "Too many open files" in done.stdout, done.stdout


# --- 4. no raw session id in errors or logs ------------------------------------------------------


class Leaky(DictStore):
    """A store whose failures quote the key, as many clients' exceptions do."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def get(self, key: str) -> bytes | None:
        if self.broken:
            raise KeyError(f"cannot get {key}")
        return super().get(key)

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        if self.broken:
            raise RuntimeError(f"cannot set {key!r}: down")
        super().set(key, value, ttl)


def assert_no_id_anywhere(
    manager: tornsession.SessionManager,
    s: tornsession.Session,
    caplog: pytest.LogCaptureFixture,
    expect_error: bool,
) -> None:
    """Loads and saves `s` on a broken store; the id appears in no exception and no log line."""
    sid = s.session_id
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        try:
            manager.get(sid, s.hmac_digest)  # may succeed: WAL readers pass a writer's lock
        except tornsession.SessionStoreError as e:
            seen.append(repr(e) + repr(e.__cause__) + repr(e.__context__))
        s["changed"] = time.monotonic_ns()  # unchanged sessions are not written
        try:
            manager.set(s)
        except tornsession.SessionStoreError as e:
            seen.append(repr(e) + repr(e.__cause__) + repr(e.__context__))
    assert seen or not expect_error, "the broken store raised nothing"
    for text in [*seen, caplog.text]:
        assert sid not in text, text


def test_python_store_errors_quoting_the_key_do_not_reveal_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Leaky()
    manager = tornsession.SessionManager(SECRET, store=store)
    s = saved(manager)
    store.broken = True
    assert_no_id_anywhere(manager, s, caplog, expect_error=True)
    with pytest.raises(tornsession.SessionStoreError) as caught:
        _store_save_if_exists(store, s.session_id, b"x", None)
    assert s.session_id not in str(caught.value)
    assert "cannot get tornsession:" in str(caught.value), "the cause is kept, id hashed"


@pytest.mark.parametrize("breakage", ["directory", "fifo", "folder-gone"])
def test_file_store_errors_do_not_reveal_the_id(
    tmp_path: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "sessions"
    manager = tornsession.SessionManager(SECRET, store=tornsession.FileStore(folder))
    s = saved(manager)
    if breakage == "folder-gone":
        # Every record path now runs through a file: ENOTDIR, the store is broken.
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        folder.write_text("in the way")
        assert_no_id_anywhere(manager, s, caplog, expect_error=True)
    else:
        replace_record(folder, s.session_id, HOSTILE[breakage])
        assert_no_id_anywhere(manager, s, caplog, expect_error=False)


def test_a_locked_sqlite_database_does_not_reveal_the_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sessions.db"
    manager = tornsession.SessionManager(SECRET, store=tornsession.SqliteStore(path, timeout=0.05))
    s = saved(manager)
    # Another process: POSIX locks do not conflict within one process, and Python's SQLite is
    # not the store's (bundled) one, so a second connection here would not block anything.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "c.execute('DELETE FROM tornsession_sessions')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert_no_id_anywhere(manager, s, caplog, expect_error=True)
    finally:
        holder.communicate(timeout=10)


def test_a_killed_redis_server_does_not_reveal_the_id(
    redis_factory: Callable[[], RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    store = tornsession.RedisStore(server.url, timeout=0.5, connect_timeout=0.5)
    manager = tornsession.SessionManager(SECRET, store=store)
    s = saved(manager)
    server.kill()
    assert_no_id_anywhere(manager, s, caplog, expect_error=True)


def test_a_killed_memcached_server_does_not_reveal_the_id(
    memcached_factory: Callable[[], ServerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_factory()
    store = tornsession.MemcachedStore([server.address], timeout=0.5, connect_timeout=0.5)
    manager = tornsession.SessionManager(SECRET, store=store)
    s = saved(manager)
    server.kill()
    assert_no_id_anywhere(manager, s, caplog, expect_error=True)


# --- 5. durability -------------------------------------------------------------------------------


def test_durable_file_store(tmp_path: Path) -> None:
    plain = tornsession.FileStore(tmp_path / "a")
    durable = tornsession.FileStore(tmp_path / "b", durable=True)
    assert (plain.durable, durable.durable) == (False, True)
    assert not repr(plain).endswith("durable=True)")
    assert repr(durable).endswith(", durable=True)")
    manager = tornsession.SessionManager(SECRET, store=durable)
    s = saved(manager, n=5)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"n": 5}


def test_durable_sqlite_store_syncs_fully(tmp_path: Path) -> None:
    plain = tornsession.SqliteStore(tmp_path / "a.db")
    durable = tornsession.SqliteStore(tmp_path / "b.db", timeout=2.0, durable=True)
    assert (plain.durable, durable.durable) == (False, True)
    assert (plain._synchronous(), durable._synchronous()) == (1, 2)
    assert repr(durable).endswith(", durable=True)")
    manager = tornsession.SessionManager(SECRET, store=durable)
    s = saved(manager, n=6)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"n": 6}


# --- 6. MemoryStore bounds -----------------------------------------------------------------------


def test_a_returning_visitor_outlives_a_flood_of_one_shot_sessions() -> None:
    store = tornsession.MemoryStore(max_sessions=5000)
    manager = tornsession.SessionManager(SECRET, store=store)
    regular = saved(manager, who="regular")
    for _ in range(2):
        assert manager.get(regular.session_id, regular.hmac_digest)["who"] == "regular"
    first = saved(manager, i=-1)
    for i in range(5100):
        saved(manager, i=i)
    assert len(store) == 5000
    assert dict(manager.get(regular.session_id, regular.hmac_digest)) == {"who": "regular"}
    assert dict(manager.get(first.session_id, first.hmac_digest)) == {}, "one-shot: evicted"


def test_the_byte_bound_evicts_when_exceeded() -> None:
    store = tornsession.MemoryStore(max_bytes=10_000)
    assert store.max_bytes == 10_000 and store.max_sessions == 100_000
    manager = tornsession.SessionManager(SECRET, store=store)
    sessions = [saved(manager, pad="x" * 1000) for _ in range(20)]
    assert 5 <= len(store) < 10
    assert dict(manager.get(sessions[0].session_id, sessions[0].hmac_digest)) == {}
    assert manager.get(sessions[-1].session_id, sessions[-1].hmac_digest)["pad"] == "x" * 1000
    assert "max_bytes=10000" in repr(store)


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_bytes": -1}, {"max_sessions": -5}])
def test_memory_store_bounds_must_be_positive(kwargs: dict[str, int]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        tornsession.MemoryStore(**kwargs)


def test_memory_store_max_bytes_cannot_be_none() -> None:
    with pytest.raises(TypeError):
        tornsession.MemoryStore(max_bytes=None)  # type: ignore[arg-type]


# --- 7. key order --------------------------------------------------------------------------------


@pytest.mark.store_kinds("memory", "file", "sqlite")
def test_keys_keep_their_order_through_save_and_load(any_store: Any) -> None:
    manager = tornsession.SessionManager(SECRET, store=any_store)
    s = manager.get()
    s["b"] = 1
    s["a"] = 2
    s["nested"] = {"z": 1, "y": {"d": 1, "c": 2}}
    manager.set(s)
    loaded = manager.get(s.session_id, s.hmac_digest)
    assert list(loaded) == ["b", "a", "nested"]
    assert list(loaded["nested"]) == ["z", "y"] and list(loaded["nested"]["y"]) == ["d", "c"]


# --- 8. extreme numbers --------------------------------------------------------------------------

FLOATS = [1e300, -1e300, math.inf, -math.inf, math.nan, -1.0, 0.0, 1e-300, 5e-324, 2.0**64]
INTS = [-(2**63), -1, 0, 2**31, 2**63 - 1]


def constructors(tmp_path: Path) -> dict[str, Callable[[Any], Any]]:
    return {
        "SqliteStore.timeout": lambda v: tornsession.SqliteStore(tmp_path / "x.db", timeout=v),
        "RedisStore.connect_timeout": lambda v: tornsession.RedisStore(
            "redis://127.0.0.1:1/0", connect_timeout=v
        ),
        "RedisStore.timeout": lambda v: tornsession.RedisStore("redis://127.0.0.1:1/0", timeout=v),
        "RedisClusterStore.connect_timeout": lambda v: tornsession.RedisClusterStore(
            ["redis://127.0.0.1:1"], connect_timeout=v
        ),
        "RedisClusterStore.timeout": lambda v: tornsession.RedisClusterStore(
            ["redis://127.0.0.1:1"], timeout=v
        ),
        "MemcachedStore.connect_timeout": lambda v: tornsession.MemcachedStore(
            ["127.0.0.1:1"], connect_timeout=v
        ),
        "MemcachedStore.timeout": lambda v: tornsession.MemcachedStore(["127.0.0.1:1"], timeout=v),
        "FileStore.cleanup.idle_timeout": lambda v: tornsession.FileStore(tmp_path).cleanup(v),
    }


INT_OPTIONS: dict[str, Callable[[int], Any]] = {
    "MemoryStore.max_sessions": lambda v: tornsession.MemoryStore(max_sessions=v),
    "MemoryStore.max_bytes": lambda v: tornsession.MemoryStore(max_bytes=v),
    "RedisStore.pool_size": lambda v: tornsession.RedisStore("redis://127.0.0.1:1/0", pool_size=v),
    "RedisClusterStore.pool_size": lambda v: tornsession.RedisClusterStore(
        ["redis://127.0.0.1:1"], pool_size=v
    ),
    "MemcachedStore.pool_size": lambda v: tornsession.MemcachedStore(["127.0.0.1:1"], pool_size=v),
}


@pytest.mark.parametrize("value", FLOATS, ids=repr)
@pytest.mark.parametrize(
    "option",
    [
        "SqliteStore.timeout",
        "RedisStore.connect_timeout",
        "RedisStore.timeout",
        "RedisClusterStore.connect_timeout",
        "RedisClusterStore.timeout",
        "MemcachedStore.connect_timeout",
        "MemcachedStore.timeout",
        "FileStore.cleanup.idle_timeout",
    ],
)
def test_extreme_seconds_are_a_value_error_naming_the_option_or_work(
    tmp_path: Path, option: str, value: float
) -> None:
    # A PanicException is a BaseException: it would escape this `except` and fail the test.
    try:
        constructors(tmp_path)[option](value)
    except ValueError as e:
        assert option.rsplit(".", 1)[1] in str(e), e


@pytest.mark.parametrize("value", INTS, ids=repr)
@pytest.mark.parametrize("option", list(INT_OPTIONS))
def test_extreme_counts_are_a_value_error_naming_the_option_or_work(
    option: str, value: int
) -> None:
    try:
        INT_OPTIONS[option](value)
    except ValueError as e:
        assert option.rsplit(".", 1)[1] in str(e), e


@pytest.mark.parametrize(
    ("value", "code"), [("1e300", 0), ("inf", 2), ("nan", 2), ("-1", 2), ("1e-300", 0)]
)
def test_the_cleanup_command_takes_extreme_timeouts_without_a_traceback(
    tmp_path: Path, value: str, code: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tornsession.cleanup", str(tmp_path), "--idle-timeout", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr
