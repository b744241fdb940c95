"""FileStore.cleanup() and `python -m tornsession.cleanup`: expired files go, live ones stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tornsession
from support.stores import saved_session


def saved(manager: tornsession.SessionManager) -> tornsession.Session:
    return saved_session(manager, a=1)


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_cleanup_deletes_idle_files_and_keeps_active_ones(tmp_path: Path) -> None:
    store = tornsession.FileStore(tmp_path)
    manager = tornsession.SessionManager("s", store=store, idle_timeout=60)
    old, fresh = saved(manager), saved(manager)
    age(tmp_path / f"SESSION{old.session_id}", 120)
    with pytest.raises(ValueError, match="idle_timeout"):
        store.cleanup()  # no manager has loaded through this store with its timeout yet
    manager.get(fresh.session_id, fresh.hmac_digest)  # a load: the store learns the timeout
    assert store.cleanup() == (1, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"SESSION{fresh.session_id}"]


def test_cleanup_command(tmp_path: Path) -> None:
    manager = tornsession.SessionManager("s", str(tmp_path))
    old, fresh = saved(manager), saved(manager)
    age(tmp_path / f"SESSION{old.session_id}", 3600)
    command = [sys.executable, "-m", "tornsession.cleanup", str(tmp_path), "--idle-timeout", "1800"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 expired sessions and 0 stale temporary files" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == [f"SESSION{fresh.session_id}"]
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "tornsession.cleanup",
            str(tmp_path / "nope"),
            "--idle-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "not a folder" in missing.stderr
