"""Migrating the original module's pickles an app's own copy kept in memcached (issue 22): the
raw keys are listed with ``lru_crawler metadump`` on real servers, each pickle (real CPython 2.7
ones) is converted without running anything and written under tornsession's prefix with the
time it had left, and the app's visitors then open their sessions; the warning a pickle gives
advises the migration only where converting would help."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tornsession
from support.servers import ServerProcess
from test_migrate import FIXTURES, SECRET, original_digest, original_id, plant
from tornsession import _core, migrate


def put_raw(server: ServerProcess, key: str, blob: bytes, exptime: int = 0) -> None:
    """A value set as python-memcached sets a pickled dict: flags 1, the pickle as bytes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"set {key} 1 {exptime} {len(blob)}\r\n".encode() + blob + b"\r\n")
        assert sock.recv(100) == b"STORED\r\n"


def url_of(servers: list[ServerProcess]) -> str:
    return "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def test_pickles_under_raw_ids_in_memcached_migrate_and_open(
    memcached_factory: Callable[[], ServerProcess],
) -> None:
    # Servers of its own: the raw keys of the original module have no prefix to keep apart.
    memcached_servers = [memcached_factory(), memcached_factory()]
    profile, values = original_id(), original_id()
    put_raw(memcached_servers[0], profile, (FIXTURES / "profile.pickle").read_bytes(), 3600)
    put_raw(memcached_servers[1], values, (FIXTURES / "stdlib_values.pickle").read_bytes())
    called = original_id()
    put_raw(memcached_servers[0], called, (FIXTURES / "app_object.pickle").read_bytes())
    put_raw(memcached_servers[0], "not-a-session-key", b"whatever")
    url = url_of(memcached_servers)

    dry = migrate.migrate_memcached(url, dry_run=True)
    assert (dry.converted, dry.left) == (2, 1)
    store = tornsession.MemcachedStore([f"127.0.0.1:{s.port}" for s in memcached_servers])
    assert _core._store_load_listed(store, profile) is None, "a dry run writes nothing"

    report = migrate.migrate_memcached(url)
    assert (report.converted, report.current, report.left) == (2, 0, 1)
    [left] = [f for f in report.files if f.outcome == "left"]
    assert left.name == called and "class" in left.reason, left.reason
    manager = tornsession.SessionManager(SECRET, store=store)
    opened = manager.get(profile, original_digest(profile))
    assert opened["user"] == "jürgen" and opened["visits"] == 42
    converted = dict(manager.get(values, original_digest(values)))
    assert converted and all(not isinstance(v, bytes) for v in converted.values()), converted
    listed = _core._store_load_listed(store, profile)
    assert listed is not None and listed[1] is not None and 3500 < listed[1] <= 3600
    again = migrate.migrate_memcached(url)
    assert (again.converted, again.current, again.left) == (0, 2, 1), "run again: nothing twice"


def test_the_command_migrates_memcached_and_refuses_what_it_cannot(
    memcached_factory: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    memcached_servers = [memcached_factory()]
    session_id = original_id()
    put_raw(memcached_servers[0], session_id, (FIXTURES / "profile.pickle").read_bytes())
    target = tmp_path / "sessions.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tornsession", "migrate", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    done = run("--from", url_of(memcached_servers), "--to", f"sqlite://{target}")
    assert done.returncode == 0, done.stderr
    assert "converted 1, already current 0, left 0" in done.stdout
    manager = tornsession.SessionManager(SECRET, store=tornsession.SqliteStore(target))
    assert manager.get(session_id, original_digest(session_id))["visits"] == 42
    for args, says in [
        (("--from", "redis://127.0.0.1:1"), "memcached://"),
        ((str(tmp_path), "--from", url_of(memcached_servers)), "either SESSION_DIR or --from"),
        ((str(tmp_path), "--to", "memory:"), "--to goes with --from"),
        (("--from", "memcached://127.0.0.1:1"), "error:"),
    ]:
        failed = run(*args)
        assert failed.returncode in (1, 2), (args, failed.stdout)
        assert says in failed.stderr, (args, failed.stderr)
        assert "Traceback" not in failed.stderr


def warnings_for(
    manager: tornsession.SessionManager, session_id: str, caplog: pytest.LogCaptureFixture
) -> list[str]:
    with caplog.at_level(logging.WARNING, logger="tornsession"):
        assert dict(manager.get(session_id, original_digest(session_id))) == {}
    return [r.getMessage() for r in caplog.records if r.name == "tornsession"]


def test_a_pickle_in_a_session_folder_advises_converting_that_folder(
    session_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = plant(session_dir, "profile.pickle")
    manager = tornsession.SessionManager(SECRET, session_dir)
    [message] = warnings_for(manager, path.name[len("SESSION") :], caplog)
    assert f"python -m tornsession migrate {session_dir}" in message, message
    assert manager.metrics()["loads"]["unreadable"] == 1


def test_a_pickle_in_memcached_advises_migrate_from_memcached(
    memcached_servers: list[ServerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    session_id = original_id()
    put_raw(memcached_servers[0], session_id, (FIXTURES / "profile.pickle").read_bytes())
    store = tornsession.MemcachedStore([f"127.0.0.1:{memcached_servers[0].port}"], prefix="")
    [message] = warnings_for(tornsession.SessionManager(SECRET, store=store), session_id, caplog)
    assert f"migrate --from memcached://127.0.0.1:{memcached_servers[0].port}" in message


def test_a_pickle_where_no_migration_helps_gives_no_advice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tornsession.SqliteStore(tmp_path / "s.db")
    session_id = original_id()
    pickle = (FIXTURES / "profile.pickle").read_bytes()
    assert _core._store_copy_in(store, session_id, pickle, None, None)
    [message] = warnings_for(tornsession.SessionManager(SECRET, store=store), session_id, caplog)
    assert "pickle" in message and "migrate" not in message, message
