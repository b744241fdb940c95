"""SqliteStore (and the file store) against real files, real processes and real HTTP."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import tornsession

SECRET = "sqlite-test-secret"


def manager(path: Path, idle_timeout: float | None = None) -> tornsession.SessionManager:
    return tornsession.SessionManager(
        SECRET, store=tornsession.SqliteStore(path), idle_timeout=idle_timeout
    )


def row(path: Path, session_id: str) -> tuple[bytes, float | None] | None:
    with closing(sqlite3.connect(path)) as db:
        found = db.execute(
            "SELECT blob, expires_at FROM tornsession_sessions WHERE id = ?", (session_id,)
        ).fetchone()
    return None if found is None else (found[0], found[1])


def test_sqlite_round_trip_through_the_manager(tmp_path: Path) -> None:
    m = manager(tmp_path / "s.db")
    s = m.get()
    s["k"] = 1
    s["name"] = "ünïcode"
    m.set(s)
    loaded = manager(tmp_path / "s.db").get(s.session_id, s.hmac_digest)
    assert dict(loaded) == {"k": 1, "name": "ünïcode"}
    assert row(tmp_path / "s.db", s.session_id) is not None


def test_sqlite_store_uses_wal_journal(tmp_path: Path) -> None:
    tornsession.SqliteStore(tmp_path / "s.db")
    with closing(sqlite3.connect(tmp_path / "s.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_expires_at_follows_idle_timeout_and_expired_row_is_not_loaded(
    tmp_path: Path,
) -> None:
    m = manager(tmp_path / "s.db", idle_timeout=1)
    s = m.get()
    s["k"] = 1
    before = time.time()
    m.set(s)
    found = row(tmp_path / "s.db", s.session_id)
    assert found is not None
    expires_at = found[1]
    assert expires_at is not None
    assert before + 1 <= expires_at <= time.time() + 1
    assert m.get(s.session_id, s.hmac_digest)["k"] == 1
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    assert "k" not in m.get(s.session_id, s.hmac_digest)


def test_sqlite_without_idle_timeout_rows_never_expire(tmp_path: Path) -> None:
    m = manager(tmp_path / "s.db")
    s = m.get()
    s["k"] = 1
    m.set(s)
    found = row(tmp_path / "s.db", s.session_id)
    assert found is not None and found[1] is None


def test_sqlite_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    try:
        tornsession.SqliteStore(tmp_path / "no-such-folder" / "s.db")
    except tornsession.SessionStoreError as e:
        assert "SqliteStore(" in str(e)
    else:
        raise AssertionError("no error for a path that cannot be opened")


WORKER = textwrap.dedent(
    """
    import json, sys, time
    import tornsession
    path, tag, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    m = tornsession.SessionManager("sqlite-test-secret", store=tornsession.SqliteStore(path))
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        s = m.get()
        s["worker"] = tag
        s["i"] = i
        m.set(s)
        print(json.dumps([s.session_id, s.hmac_digest, tag, i]), flush=True)
    """
)


def test_sqlite_several_processes_saving_at_once_lose_no_session(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    tornsession.SqliteStore(path)  # create the file and table once, as an app would
    start_at = time.time() + 1.5  # all workers start saving at the same moment
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"w{n}", "150", str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    saved = []
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        saved += [json.loads(line) for line in out.splitlines()]
    assert len(saved) == 4 * 150
    m = manager(path)
    for session_id, digest, tag, i in saved:
        assert dict(m.get(session_id, digest)) == {"worker": tag, "i": i}


KILLED_WORKER = textwrap.dedent(
    """
    import json, sys
    import tornsession
    m = tornsession.SessionManager("sqlite-test-secret", store=tornsession.SqliteStore(sys.argv[1]))
    i = 0
    while True:
        s = m.get()
        s["i"] = i
        s["padding"] = "x" * 2000
        m.set(s)
        print(json.dumps([s.session_id, s.hmac_digest, i]), flush=True)
        i += 1
    """
)


def test_sqlite_sigkill_mid_save_keeps_database_readable_and_acknowledged_saves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "killed.db"
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    acknowledged = []
    for line in worker.stdout:
        acknowledged.append(json.loads(line))
        if len(acknowledged) >= 300:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    # Lines already written before the kill are acknowledged saves too.
    acknowledged += [json.loads(line) for line in worker.stdout.read().splitlines() if line]
    worker.stdout.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    m = manager(path)
    for session_id, digest, i in acknowledged:
        assert m.get(session_id, digest)["i"] == i
    s = m.get()
    s["after"] = True
    m.set(s)  # still writable
    assert m.get(s.session_id, s.hmac_digest)["after"] is True
