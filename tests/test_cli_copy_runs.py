"""`python -m tornsession copy` as an operator runs it: interrupted half-way (kill -9, kill,
Ctrl-C) and run again to the same result with its counts verified; a dry run that writes
nothing; the progress bar in a real terminal (tmux) and one summary line without one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.cli import IDLE, RacingCopier, manager, populate, run, store_url
from support.servers import require_binary
from tornsession import _core
from tornsession._cli_copy import Copier
from tornsession._copy_state import CopyState

COUNT = 20_000
#: Journal lines (sessions recorded as copied) after which the copy is stopped.
STOP_AFTER = 3_000


def records(url: str) -> dict[str, bytes]:
    """Every live record the store holds, by id."""
    store = tornsession.store_from_url(url)
    found = {}
    for session_id in _core._store_session_ids(store):
        got = _core._store_load_listed(store, session_id, IDLE)
        if got is not None:
            found[session_id] = got[0]
    return found


def summary_counts(line: str) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"([a-z-]+) ([\d,]+)(?=[,;])", line)}


def journal_lines(folder: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in folder.glob("*.journal"))


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_an_interrupted_copy_finishes_when_run_again(
    stop: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = store_url(request, tmp_path, "redis", "source")
    target = store_url(request, tmp_path, "sqlite", "target")
    populate(source, COUNT)
    command = [sys.executable, "-m", "tornsession", "copy", "--from", source, "--to", target]
    copying = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while journal_lines(tmp_path) < STOP_AFTER:
            assert copying.poll() is None, "the copy ended before it could be stopped"
            time.sleep(0.005)
        copying.send_signal(getattr(signal, stop))
        out, err = copying.communicate(timeout=60)
    finally:
        copying.kill()
    if stop == "SIGKILL":
        assert copying.returncode == -signal.SIGKILL
    else:
        assert copying.returncode == 130, out + err
        assert "run the same command again to finish" in err and "Traceback" not in err
    copied_before = len(records(target))
    assert STOP_AFTER <= copied_before < COUNT

    again = run("copy", "--from", source, "--to", target, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    counts = summary_counts(again.stdout)
    assert counts["listed"] == COUNT and counts["failed"] == 0, counts
    # What the first run wrote is not written again; the rest is, and read back.
    assert counts["copied"] + counts["unchanged"] == COUNT, counts
    assert counts["copied"] == COUNT - copied_before == counts["verified"], counts
    assert records(target) == records(source)
    assert list(tmp_path.glob("*.journal")) == []
    assert len(next(tmp_path.glob(".tornsession-copy-*.json")).read_text()) > COUNT * 32

    third = run("copy", "--from", source, "--to", target, cwd=tmp_path)
    assert summary_counts(third.stdout)["unchanged"] == COUNT, third.stdout


def test_a_dry_run_writes_nothing(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = store_url(request, tmp_path, "file", "source")
    target = store_url(request, tmp_path, "redis", "target")
    populate(source, 300)
    args = ["copy", "--from", source, "--to", target, "--idle-timeout", str(IDLE)]
    dry = run(*args, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry run, nothing written: listed 300, would copy 300, ")
    assert records(target) == {}
    assert not list(tmp_path.glob(".tornsession-copy-*"))
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 0 and summary_counts(done.stdout)["copied"] == 300
    # A dry run after a copy reads the state, still writing nothing.
    state = next(tmp_path.glob(".tornsession-copy-*.json"))
    before = state.read_bytes()
    dry = run(*args, "--dry-run", cwd=tmp_path)
    assert ", unchanged 300, " in dry.stdout and state.read_bytes() == before


def in_tmux(tmux: str, socket: str, command: list[str], cwd: Path) -> str:
    """Runs ``command`` in a new tmux window 160 columns wide; the pane's text once it ended."""
    shell = " ".join(f"'{part}'" for part in command) + "; echo EXIT=$?; sleep 60"
    base = [tmux, "-L", socket, "-f", "/dev/null"]
    subprocess.run(
        [*base, "new-session", "-d", "-x", "160", "-y", "20", "-c", str(cwd), shell],
        check=True,
        env={**os.environ, "TERM": "xterm"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            pane = subprocess.run(
                [*base, "capture-pane", "-p"], capture_output=True, text=True, check=True
            ).stdout
            if "EXIT=" in pane or time.monotonic() > deadline:
                return pane
            time.sleep(0.1)
    finally:
        subprocess.run([*base, "kill-server"], check=False, capture_output=True)


def test_the_progress_bar_shows_in_a_terminal_and_one_line_without(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    tmux = require_binary("tmux")
    source = store_url(request, tmp_path, "redis", "source")
    target = store_url(request, tmp_path, "sqlite", "target")
    populate(source, 3_000)
    command = [sys.executable, "-m", "tornsession", "copy", "--from", source, "--to", target]
    pane = in_tmux(tmux, f"tornsession-{uuid.uuid4().hex[:8]}", command, tmp_path)
    lines = [line for line in pane.splitlines() if line.strip()]
    assert "EXIT=0" in lines, pane
    bar = next(line for line in lines if line.startswith("copy "))
    assert re.fullmatch(r"copy 3,000/3,000 \[#+\] 100% [\d,]+/s ETA 0:00 *", bar), bar
    assert lines[lines.index(bar) + 1].startswith("listed 3,000, copied 3,000, "), pane

    other: Any = store_url(request, tmp_path, "sqlite", "other")
    piped = run("copy", "--from", source, "--to", other, cwd=tmp_path)
    assert piped.stderr == "" and "\r" not in piped.stdout
    assert piped.stdout.count("\n") == 1 and piped.stdout.startswith("listed 3,000, copied 3,000")


def test_a_write_of_the_app_between_the_copys_read_and_write_wins(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = store_url(request, tmp_path, "sqlite", "source")
    target = store_url(request, tmp_path, "redis", "target")
    (visitor,) = populate(source, 1)
    stores = tornsession.store_from_url(source), tornsession.store_from_url(target)
    state = CopyState(tmp_path / "state.json", source, target, writable=True)
    first = Copier(*stores, state, idle_timeout=IDLE).run([visitor.session_id])
    assert first.counts["copied"] == 1 and first.ok

    visitor.save(manager(source), cart="changed in the source")
    second = RacingCopier(
        *stores, state, lambda: visitor.save(manager(target), cart="changed by the app")
    )
    report = second.run([visitor.session_id])
    # The copy read the target, the app wrote it, the copy's write was refused and it decided
    # again: both changed in the same minute, so the target's (the app's) is kept.
    assert second.raced == 1 and report.ok, report
    assert report.counts["kept"] == 1 and report.counts["copied"] == 0, report
    assert (visitor.open(manager(target)) or {})["cart"] == "changed by the app"


def test_a_newer_target_record_kept_and_then_ended_there_is_not_copied_back(
    tmp_path: Path,
) -> None:
    from tornsession.migrate import encode_record

    source, target = f"sqlite://{tmp_path}/source.db", f"sqlite://{tmp_path}/target.db"
    session_id = uuid.uuid4().hex
    older = encode_record(100, {"where": "old app"}, session_id)
    newer = encode_record(200, {"where": "new app"}, session_id)
    source_store = tornsession.store_from_url(source)
    target_store = tornsession.store_from_url(target)
    assert _core._store_copy_in(source_store, session_id, older, None, None)
    assert _core._store_copy_in(target_store, session_id, newer, None, None)
    first = run("copy", "--from", source, "--to", target, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert summary_counts(first.stdout)["kept"] == 1
    assert _core._store_delete_listed(target_store, session_id)  # the visitor logs out there
    second = run("copy", "--from", source, "--to", target, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert summary_counts(second.stdout)["skipped-ended"] == 1
    assert _core._store_load_listed(target_store, session_id) is None, "never copied back"
