"""Opt-in protection against lost updates: detect_conflicts=True makes a save fail with
SessionConflict, writing nothing, when another writer saved the session since it was loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.any_store import STORE_KINDS
from support.stores import CasDictStore

pytestmark = pytest.mark.store_kinds(*STORE_KINDS, "cluster", python=CasDictStore)


def overlapping_saves(manager: tornsession.SessionManager) -> tuple[tornsession.Session, ...]:
    """A saved session ``{"n": 0}`` loaded twice; the first copy saved with ``n = 1``, the second
    changed to ``n = 2`` and not saved yet: (the session, the second copy)."""
    s = manager.get()
    s["n"] = 0
    manager.set(s)
    first = manager.get(s.session_id, s.hmac_digest)
    second = manager.get(s.session_id, s.hmac_digest)
    first["n"] = 1
    manager.set(first)
    second["n"] = 2
    return s, second


def test_the_second_of_two_overlapping_saves_raises_and_writes_nothing(any_store: Any) -> None:
    manager = tornsession.SessionManager("s", store=any_store, detect_conflicts=True)
    s, second = overlapping_saves(manager)
    with pytest.raises(tornsession.SessionConflict, match="another request"):
        manager.set(second)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"n": 1}
    # Loaded again, the change goes through.
    retry = manager.get(s.session_id, s.hmac_digest)
    retry["n"] = 2
    manager.set(retry)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"n": 2}


def test_without_detect_conflicts_the_last_writer_wins(any_store: Any) -> None:
    manager = tornsession.SessionManager("s", store=any_store)
    s, second = overlapping_saves(manager)
    manager.set(second)
    assert dict(manager.get(s.session_id, s.hmac_digest)) == {"n": 2}


def test_a_python_store_without_compare_and_set_is_refused_up_front() -> None:
    class Plain:
        def get(self, key: str) -> bytes | None:
            return None

        def set(self, key: str, value: bytes, ttl: int | None) -> None:
            pass

        def delete(self, key: str) -> None:
            pass

    with pytest.raises(TypeError, match="compare_and_set"):
        tornsession.SessionManager("s", store=Plain(), detect_conflicts=True)


INCREMENTER = textwrap.dedent(
    """
    import sys
    import tornsession

    kind, where, sid, digest, count = sys.argv[1:6]
    store = tornsession.FileStore(where) if kind == "file" else tornsession.SqliteStore(where)
    manager = tornsession.SessionManager("s", store=store, detect_conflicts=True)
    conflicts = 0
    for _ in range(int(count)):
        while True:
            s = manager.get(sid, digest)
            s["n"] += 1
            try:
                manager.set(s)
                break
            except tornsession.SessionConflict:
                conflicts += 1
    print(conflicts)
    """
)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_processes_that_retry_on_conflict_lose_no_increment(kind: str, tmp_path: Path) -> None:
    where = str(tmp_path / ("sessions" if kind == "file" else "sessions.db"))
    store = tornsession.FileStore(where) if kind == "file" else tornsession.SqliteStore(where)
    manager = tornsession.SessionManager("s", store=store, detect_conflicts=True)
    s = manager.get()
    s["n"] = 0
    manager.set(s)
    processes, count = 4, 60
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                INCREMENTER,
                kind,
                where,
                s.session_id,
                s.hmac_digest,
                str(count),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    conflicts = sum(int(child.communicate(timeout=120)[0]) for child in children)
    assert all(child.returncode == 0 for child in children)
    final = manager.get(s.session_id, s.hmac_digest)["n"]
    print(f"{kind}: {processes} processes x {count} increments, {conflicts} conflicts retried")
    assert final == processes * count
