"""FileStore under SIGKILL and under concurrent writers from several processes: a session file is
always one complete record someone wrote, never a torn or mixed one.

Bounded: the kill loop stops after KILLS kills or KILL_SECONDS seconds, whichever comes first,
but never before MIN_KILLS (`CRASH_KILLS=2000 CRASH_SECONDS=600` for a long run,
docs/soak-and-fuzz.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import tornsession as session

SECRET = "crash-test-secret"
KILLS = int(os.environ.get("CRASH_KILLS", "200"))
KILL_SECONDS = float(os.environ.get("CRASH_SECONDS", "25"))
WORKERS = 4
# The fewest kills that make a run count: a loaded machine (tests in parallel) takes longer to
# reach them rather than stopping short at KILL_SECONDS.
MIN_KILLS = min(KILLS, 40)

# The child: saves each of its sessions over and over with growing, self-checking data,
# announcing on stdout each value before ("W seq") and after ("D seq") the save.
WRITER = textwrap.dedent(
    """
    import sys
    import tornsession as session

    folder, secret, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pairs = [p.split(":") for p in sys.argv[4:]]
    manager = session.SessionManager(secret, folder)
    sessions = [manager.get(sid, digest) for sid, digest in pairs]
    out = sys.stdout
    out.write("ready\\n")
    out.flush()
    seq = start
    while True:
        seq += 1
        for index, s in enumerate(sessions):
            s.clear()
            s.update(payload(seq, index))
            out.write(f"W {seq}\\n")
            out.flush()
            manager.set(s)
            out.write(f"D {seq}\\n")
            out.flush()
    """
)
PAYLOAD = textwrap.dedent(
    """
    def payload(seq, index):
        size = (seq * 7919) % 400_000
        return {"seq": seq, "index": index, "fill": f"{seq}|" * (size // 8), "tail": seq}
    """
)
CHILD = PAYLOAD + WRITER
ns: dict[str, Any] = {}
exec(PAYLOAD, ns)
payload = ns["payload"]


def check_record(blob: bytes, index: int) -> int:
    """The seq of a complete, self-consistent record in tornsession's format."""
    record = json.loads(blob)
    assert set(record) == {"k", "v", "c", "d"} and record["v"] == 1 and isinstance(record["c"], int)
    data = record["d"]
    assert data == payload(data["seq"], index), "mixed or torn record"
    seq: int = data["seq"]
    return seq


def check_folder(folder: Path, sessions: list[tuple[str, str]], allowed: list[set[int]]) -> int:
    """Every SESSION file valid and holding an allowed seq; returns the temp files left over."""
    leftovers = 0
    names = {f"SESSION{sid}" for sid, _ in sessions}
    for path in folder.iterdir():
        if path.name.startswith(".tmp-"):
            leftovers += 1
            continue
        assert path.name in names, f"unexpected file {path.name}"
    manager = session.SessionManager(SECRET, str(folder))
    for index, (sid, digest) in enumerate(sessions):
        path = folder / f"SESSION{sid}"
        if not path.exists():
            assert 0 in allowed[index], "a session file vanished"
            continue
        seq = check_record(path.read_bytes(), index)
        assert seq in allowed[index], (seq, allowed[index])
        # And tornsession itself loads it as that data.
        loaded = manager.get(sid, digest)
        assert loaded.session_id == sid and loaded["seq"] == seq
    return leftovers


class Worker:
    """One folder with three sessions, and the child currently writing them."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        manager = session.SessionManager(SECRET, str(folder))
        self.sessions = []
        for index in range(3):
            # Stored before the children start: an id without a record would load as a new
            # session (with a new id) in the child.
            s = manager.get()
            s.update(payload(0, index))
            manager.set(s)
            self.sessions.append((s.session_id, s.hmac_digest))
        self.last_done = [0, 0, 0]  # the seq each session's file must hold at least
        self.child: subprocess.Popen[str] | None = None
        self.kills = 0
        self.in_flight_kills = 0
        self.leftovers = 0

    def spawn(self) -> None:
        start = max(self.last_done)
        argv = [sys.executable, "-c", CHILD, str(self.folder), SECRET, str(start)]
        argv += [f"{sid}:{digest}" for sid, digest in self.sessions]
        self.child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        assert self.child is not None and self.child.stdout is not None
        assert self.child.stdout.readline() == "ready\n"

    def kill_and_check(self) -> None:
        assert self.child is not None and self.child.stdout is not None
        self.child.send_signal(signal.SIGKILL)
        self.child.wait(10)
        lines = self.child.stdout.read().split("\n")
        self.child.stdout.close()
        self.child = None
        self.kills += 1
        # Replay the announcements: which seq each session may hold now.
        allowed = [{seq} for seq in self.last_done]
        writes = 0
        in_flight = False
        for line in lines:
            if not line.startswith(("W ", "D ")) or line.count(" ") != 1:
                continue  # a line cut by the kill
            kind, seq = line.split()
            index = writes % 3
            if kind == "W":
                allowed[index] = {max(allowed[index]), int(seq)}
                in_flight = True
            else:
                allowed[index] = {int(seq)}
                writes += 1
                in_flight = False
        self.in_flight_kills += in_flight
        self.leftovers = check_folder(self.folder, self.sessions, allowed)
        for index in range(3):
            path = self.folder / f"SESSION{self.sessions[index][0]}"
            if path.exists():
                self.last_done[index] = check_record(path.read_bytes(), index)


def test_sigkill_during_saves_never_leaves_a_torn_or_mixed_session_file(tmp_path: Path) -> None:
    workers = [Worker(tmp_path / f"w{i}") for i in range(WORKERS)]
    rng = random.Random(1234)
    deadline = time.monotonic() + KILL_SECONDS
    kills = 0
    try:
        while kills < KILLS and (time.monotonic() < deadline or kills < MIN_KILLS):
            for worker in workers:
                worker.spawn()
            for worker in workers:
                worker.wait_ready()
            time.sleep(rng.uniform(0.0, 0.15))
            for worker in workers:
                worker.kill_and_check()
                kills += 1
    finally:
        for worker in workers:
            if worker.child is not None:
                worker.child.kill()
                worker.child.wait()
    in_flight = sum(w.in_flight_kills for w in workers)
    leftovers = sum(w.leftovers for w in workers)
    print(
        f"\ncrash consistency: {kills} SIGKILLs, {in_flight} mid-save (announced, unconfirmed), "
        f"{leftovers} .tmp- leftovers (killed mid-write), every SESSION file valid"
    )
    assert kills >= MIN_KILLS, f"only {kills} kills"
    assert in_flight > 0, "no kill landed during a save: the test proves nothing"


CONCURRENT = textwrap.dedent(
    """
    import sys
    import tornsession as session

    folder, secret, sid, digest, writer, rounds = sys.argv[1:7]
    writer, rounds = int(writer), int(rounds)
    manager = session.SessionManager(secret, folder)
    s = manager.get(sid, digest)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()  # go
    for i in range(rounds):
        s.clear()
        size = 1000 + (i * 104729 + writer * 7) % 300_000
        s.update({"writer": writer, "i": i, "fill": chr(65 + writer) * size})
        manager.set(s)
    """
)


def check_concurrent(blob: bytes, rounds: int) -> tuple[int, int]:
    record = json.loads(blob)
    data = record["d"]
    writer, i = data["writer"], data["i"]
    size = 1000 + (i * 104729 + writer * 7) % 300_000
    assert data == {"writer": writer, "i": i, "fill": chr(65 + writer) * size}, "mixed record"
    assert 0 <= i < rounds
    return writer, i


def test_concurrent_writers_in_several_processes_leave_exactly_one_writers_payload(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sessions"
    manager = session.SessionManager(SECRET, str(folder))
    s = manager.get()
    s.update({"writer": 0, "i": 0, "fill": "A" * 1000})  # writer 0's first payload
    manager.set(s)  # stored first, so every writer opens this same session
    writers, rounds = 6, 150
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONCURRENT,
                str(folder),
                SECRET,
                s.session_id,
                s.hmac_digest,
                str(w),
                str(rounds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    path = folder / f"SESSION{s.session_id}"
    reads = 0
    seen_writers: set[int] = set()
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        # Read the file the whole time they write: every read is one whole payload.
        deadline = time.monotonic() + 60
        while any(c.poll() is None for c in children):
            assert time.monotonic() < deadline, "writers did not finish in 60 s"
            if path.exists():
                writer, _ = check_concurrent(path.read_bytes(), rounds)
                seen_writers.add(writer)
                loaded = manager.get(s.session_id, s.hmac_digest)
                assert loaded.session_id == s.session_id, "a reader saw a corrupt file"
                check_concurrent(json.dumps({"v": 1, "c": 0, "d": dict(loaded)}).encode(), rounds)
                reads += 2
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait(10)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
    assert all(c.returncode == 0 for c in children)
    writer, i = check_concurrent(path.read_bytes(), rounds)
    # The last rename wins: some writer's final payload, whole.
    assert i == rounds - 1, (writer, i)
    assert [p.name for p in folder.iterdir()] == [path.name], "temporary files left behind"
    print(
        f"\nconcurrent writers: {writers} processes x {rounds} saves, {reads} reads all whole, "
        f"{len(seen_writers)} writers seen, final payload writer {writer}"
    )
