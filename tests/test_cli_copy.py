"""`python -m tornsession copy` between every ordered pair of File, SQLite, Redis, Redis Cluster
and memcached (issue 22, item 2): 20,000 sessions written through a real manager, the app
writing and ending sessions on the source during the first copy, then the switch (a session
ended in the target, one ended and one changed in the source) and a second copy; every live
session opens in the target with the same data, owners' lists and time left."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.cli import IDLE, KINDS, Visitor, manager, new_visitor, populate, run, store_url
from tornsession import _core

COUNT = 20_000
# A handful that crosses every kind both ways in `make check`; the rest in `make test`.
FAST = {
    ("file", "redis"),
    ("redis", "sqlite"),
    ("sqlite", "memcached"),
    ("memcached", "cluster"),
    ("cluster", "file"),
}
PAIRS = [
    pytest.param(a, b, id=f"{a}-to-{b}", marks=() if (a, b) in FAST else pytest.mark.slow)
    for a in KINDS
    for b in KINDS
    if a != b
]
#: How far apart the time left on the source and on the target may be, in seconds.
TIME_LEFT_SLACK = 5


class App(threading.Thread):
    """The app on the source while the first copy runs: new visitors, saves, logouts."""

    def __init__(self, url: str, visitors: list[Visitor]) -> None:
        super().__init__(daemon=True)
        self.on = manager(url)
        self.visitors = visitors
        self.made: list[Visitor] = []
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                pick = rng.random()
                if pick < 0.4:
                    self.made.append(new_visitor(self.on, COUNT + self.writes, rng))
                elif pick < 0.8:
                    rng.choice(self.visitors).save(self.on, touched=self.writes)
                else:
                    rng.choice(self.visitors).end(self.on)
                self.writes += 1
                time.sleep(0.001)
        except BaseException as error:
            self.error = error


def counts(summary: str) -> dict[str, int]:
    """The counts of copy's summary line, by name."""
    return {
        name: int(number.replace(",", ""))
        for name, number in re.findall(r"([a-z-]+) ([\d,]+)(?=[,;])", summary)
    }


def copy(source: str, target: str, cwd: Path) -> dict[str, int]:
    done = run("copy", "--from", source, "--to", target, "--idle-timeout", str(IDLE), cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "" and len(done.stdout.splitlines()) == 1, done.stdout + done.stderr
    return counts(done.stdout)


def time_left(store: Any, session_id: str) -> float | None:
    got = _core._store_load_listed(store, session_id, IDLE)
    assert got is not None, session_id
    return got[1]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_copy_moves_every_live_session_and_a_second_run_after_the_switch_finishes(
    source_kind: str, target_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = store_url(request, tmp_path, source_kind, "source")
    target = store_url(request, tmp_path, target_kind, "target")
    started = time.monotonic()
    visitors = populate(source, COUNT)
    populated = time.monotonic()

    app = App(source, visitors)
    app.start()
    first = copy(source, target, tmp_path)
    app.stop.set()
    app.join()
    assert app.error is None and app.writes > 50, app.error
    copied = time.monotonic()
    assert first["listed"] >= COUNT * 0.9 and first["failed"] == 0, first
    assert first["verified"] == first["copied"] >= COUNT * 0.9, first

    # The switch: the app now serves from the target; meanwhile things happened on both sides.
    on_source, on_target = manager(source), manager(target)
    everyone = visitors + app.made
    live = [v for v in everyone if v.open(on_source) is not None]
    anonymous = [v for v in live if v.user is None]
    owned = [v for v in live if v.user is not None]
    ended_in_target, ended_in_source, changed = anonymous[0], owned[0], anonymous[1]
    ended_in_target.end(on_target)
    ended_in_source.end(on_source)
    changed.save(on_source, after="the switch")
    second = copy(source, target, tmp_path)
    switched = time.monotonic()
    assert second["failed"] == 0 and second["skipped-ended"] >= 1, second
    assert second["deleted"] >= 1 and second["copied"] >= 1, second

    source_store, target_store = on_source_store(source), on_source_store(target)
    for session_id in _core._store_session_ids(source_store):
        if session_id == ended_in_target.session_id:
            continue
        before, after = time_left(source_store, session_id), time_left(target_store, session_id)
        assert (before is None) == (after is None), session_id
        if before is not None and after is not None:
            assert abs(before - after) <= TIME_LEFT_SLACK, (session_id, before, after)

    assert ended_in_target.open(on_target) is None
    assert ended_in_target.open(on_source) is not None
    assert ended_in_source.open(on_target) is None
    assert changed.open(on_target) == changed.open(on_source) != None  # noqa: E711
    opened = 0
    for visitor in everyone:
        if visitor is ended_in_target:
            continue
        data = visitor.open(on_source)
        assert visitor.open(on_target) == data, visitor.session_id
        opened += data is not None
    assert opened >= COUNT * 0.8

    if "memcached" not in (source_kind, target_kind):  # memcached lists no user's sessions
        for user in {v.user for v in everyone if v.user is not None}:
            listed = [(s.id, s.created) for s in on_source.user_sessions(user)]
            assert [(s.id, s.created) for s in on_target.user_sessions(user)] == listed, user
    print(
        f"{source_kind}->{target_kind}: populate {populated - started:.1f} s, first copy "
        f"{copied - populated:.1f} s ({app.writes} app writes), second "
        f"{switched - copied:.1f} s, checks {time.monotonic() - switched:.1f} s"
    )


def on_source_store(url: str) -> Any:
    return tornsession.store_from_url(url)
