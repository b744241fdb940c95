"""Listing a store's records (issue 22, under `python -m tornsession copy` and `stats`): every
store that can list names exactly its session records (never its index or counter entries),
reads each with the time it has left, writes a copy back with its owner's index, and the
original module's pickles kept in memcached under their raw ids are listed too."""

from __future__ import annotations

import pickle
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.servers import RedisServer, ServerProcess
from tornsession import _core

SECRET = "listing-test-secret-0123456789abcdef"


def saved_sessions(store: Any, count: int, idle: float | None = 600) -> dict[str, str | None]:
    """`count` sessions saved through a manager, every third owned; their ids and owners."""
    manager = tornsession.SessionManager(SECRET, store=store, idle_timeout=idle)
    made: dict[str, str | None] = {}
    for n in range(count):
        session = manager.get()
        session["n"] = n
        owner = f"user-{n % 5}" if n % 3 == 0 else None
        if owner:
            session.set_user(owner)
        manager.set(session)
        made[session.session_id] = owner
    return made


def store_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "file":
        return tornsession.FileStore(tmp_path / "files")
    if kind == "sqlite":
        return tornsession.SqliteStore(tmp_path / "s.db")
    if kind == "memory":
        return tornsession.MemoryStore()
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return tornsession.RedisStore(redis.url, prefix=f"list-{tmp_path.name}:")
    if kind == "cluster":
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        return tornsession.RedisClusterStore([n.url for n in nodes], prefix=f"l{tmp_path.name}:")
    servers: list[ServerProcess] = request.getfixturevalue("memcached_servers")
    return tornsession.MemcachedStore(
        [f"127.0.0.1:{s.port}" for s in servers], prefix=f"l{tmp_path.name}:"
    )


KINDS = ["file", "sqlite", "memory", "redis", "cluster", "memcached"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_listing_names_every_session_record_and_nothing_else(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = store_of(kind, tmp_path, request)
    made = saved_sessions(store, 60)
    manager = tornsession.SessionManager(SECRET, store=store, idle_timeout=600)
    if kind == "memcached":
        manager.destroy_user_sessions("nobody")  # a generation counter: not a session
    assert sorted(_core._store_session_ids(store)) == sorted(made)
    for session_id in made:
        listed = _core._store_load_listed(store, session_id, 600)
        assert listed is not None
        blob, left = listed
        assert blob == _core._store_load(store, session_id, 1 << 20)
        assert left is not None and 590 <= left <= 600, left


@pytest.mark.parametrize("kind", KINDS)
def test_a_copied_record_opens_with_its_owner_listed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = tornsession.SqliteStore(tmp_path / "source.db")
    made = saved_sessions(source, 12)
    target = store_of(kind, tmp_path, request)
    for session_id in made:
        listed = _core._store_load_listed(source, session_id, 600)
        assert listed is not None
        assert _core._store_copy_in(target, session_id, listed[0], listed[1], None, 600)
        assert not _core._store_copy_in(target, session_id, listed[0], listed[1], None, 600)
    manager = tornsession.SessionManager(SECRET, store=target, idle_timeout=600)
    before = tornsession.SessionManager(SECRET, store=source, idle_timeout=600)
    if kind != "memcached":  # memcached keeps no index to list
        for user in {u for u in made.values() if u}:
            assert sorted(s.id for s in manager.user_sessions(user)) == sorted(
                s.id for s in before.user_sessions(user)
            )
    ended = next(i for i, u in made.items() if u == "user-0")
    assert manager.destroy_user_sessions("user-0") >= 1 or kind == "memcached"
    assert _core._store_load_listed(target, ended, 600) is None, "ended stays ended"
    some = next(i for i, u in made.items() if u is None)
    assert _core._store_delete_listed(target, some)
    assert _core._store_load_listed(target, some, 600) is None


def test_a_file_copy_keeps_its_last_use(tmp_path: Path) -> None:
    source = tornsession.SqliteStore(tmp_path / "s.db")
    [session_id] = saved_sessions(source, 1, idle=600)
    files = tornsession.FileStore(tmp_path / "files")
    blob, left = _core._store_load_listed(source, session_id, 600) or (b"", None)
    assert _core._store_copy_in(files, session_id, blob, 100.0, None, 600)
    mtime = (tmp_path / "files" / f"SESSION{session_id}").stat().st_mtime
    assert 495 <= time.time() - mtime <= 505, "last used 500 s ago: 100 s left of 600"
    _, left = _core._store_load_listed(files, session_id, 600) or (b"", None)
    assert left is not None and 95 <= left <= 100
    assert _core._store_load_listed(files, session_id, None) == (blob, None)


def test_the_original_modules_pickles_in_memcached_are_listed_under_their_raw_ids(
    memcached_servers: list[ServerProcess],
) -> None:
    server = memcached_servers[0]
    raw_id = "5f4dcc3b5aa765d61d8327deb882cf99"  # an md5, as the original module made them
    data = pickle.dumps({"user": "ann"}, protocol=2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"set {raw_id} 1 0 {len(data)}\r\n".encode() + data + b"\r\n")
        assert sock.recv(100) == b"STORED\r\n"
    store = tornsession.MemcachedStore([f"127.0.0.1:{server.port}"], prefix="")
    assert raw_id in _core._store_session_ids(store)
    assert _core._store_load_listed(store, raw_id) == (data, None)


def test_stores_that_cannot_list_say_which_can(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="RedisClusterStore"):
        _core._store_session_ids(tornsession.CookieStore())
    with pytest.raises(TypeError, match="Python store"):
        _core._store_session_ids({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a session id"):
        _core._store_load_listed(tornsession.MemoryStore(), "nope")
    with pytest.raises(ValueError, match="idle_timeout"):
        _core._store_load_listed(tornsession.MemoryStore(), "0" * 32, -1.0)
