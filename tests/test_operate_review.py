"""An attacker's and a hostile environment's review of the operating features (`python -m
tornsession copy/stats/end-user/end-session/migrate`, store listing, the copy's state file,
metrics), against the installed build, on real servers and files.

A test marked ``# FINDING:`` fails on purpose until the bug it names is fixed; the others pin
behaviour that was probed and found right."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import tornsession
from support.cli import IDLE, RacingCopier, Visitor, manager, populate, run, store_url
from tornsession import _core
from tornsession._cli_copy import Copier
from tornsession._copy_state import CopyState

SECRET = "operate-review-secret-0123456789abcdef"


def records(url: str, idle: float | None = IDLE) -> dict[str, bytes]:
    """Every live record the store ``url`` names, by id."""
    store = tornsession.store_from_url(url)
    found = {}
    for session_id in _core._store_session_ids(store):
        got = _core._store_load_listed(store, session_id, idle)
        if got is not None:
            found[session_id] = got[0]
    return found


def no_traceback(done: Any) -> None:
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def record_for(session_id: str, **fields: Any) -> bytes:
    """A record the way tornsession writes one (bound to its id), with ``fields`` over it."""
    from tornsession.migrate import encode_record

    blob = json.loads(encode_record(int(time.time()), {"n": 1}, session_id))
    blob.update(fields)
    return json.dumps(blob).encode()


# --- the URL's password -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        # A password holding '@' or '&' must be percent-encoded in a URL, as here.
        "redis://user:p%40ssHUNTER2@127.0.0.1:1/x",
        "redis://user:p%40ssHUNTER2@127.0.0.1:1/0?timeout=abc",
        "redis+sentinel://127.0.0.1:1/mymaster?password=a%26HUNTER2&bogus=1",
    ],
)
def test_a_percent_encoded_password_is_never_printed(url: str, tmp_path: Path) -> None:
    # FINDING: _masked() percent-decodes the URL *before* masking, so a password holding an
    # encoded '@' (%40) or '&' (%26) is cut at that character and its tail is printed in the
    # usage error: "store URL 'redis://user:***@ssHUNTER2@127.0.0.1:1/x'". Masking must work
    # on the URL as given (or mask up to the last '@').
    for args in (
        ["stats", url],
        ["end-user", url, "ann"],
        ["copy", "--from", url, "--to", url + "1"],
    ):
        done = run(*args, cwd=tmp_path, timeout=30)
        assert done.returncode == 2, (args, done.stderr)
        no_traceback(done)
        assert "HUNTER2" not in done.stderr + done.stdout, done.stderr


def test_a_store_error_never_prints_the_password(tmp_path: Path) -> None:
    url = "redis://user:HUNTER2@127.0.0.1:1/0"
    populate(f"sqlite://{tmp_path}/s.db", 2)
    for args in (
        ["stats", url],
        ["end-user", url, "ann"],
        ["copy", "--from", url, "--to", f"sqlite://{tmp_path}/t.db"],
        ["copy", "--from", f"sqlite://{tmp_path}/s.db", "--to", url],
    ):
        done = run(*args, cwd=tmp_path, timeout=30)
        no_traceback(done)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "HUNTER2" not in done.stderr + done.stdout
    done = run("end-session", url, "a" * 32, cwd=tmp_path, timeout=30, TORNSESSION_SECRET=SECRET)
    assert done.returncode == 1 and "HUNTER2" not in done.stderr + done.stdout
    for state in tmp_path.glob(".tornsession-copy-*"):
        assert b"HUNTER2" not in state.read_bytes()


# --- the copy's state file and journal -----------------------------------------------------


def copy_args(source: str, target: str, *more: str) -> list[str]:
    return ["copy", "--from", source, "--to", target, "--idle-timeout", str(IDLE), *more]


@pytest.mark.parametrize("planted", [".json.tmp", ".json.journal"])
def test_a_planted_symlink_beside_the_state_is_never_written_through(
    planted: str, tmp_path: Path
) -> None:
    # FINDING: CopyState.compact() opens PATH.tmp with O_CREAT|O_TRUNC and sync() opens
    # PATH.journal with O_CREAT|O_APPEND, both without O_NOFOLLOW (and O_EXCL for the .tmp):
    # a symlink planted there (the default state sits in the current folder under a name
    # anyone can compute from the two URLs) makes the copy truncate and overwrite, or append
    # to, whatever file it points to, with the operator's rights (often root).
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 3)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    work = tmp_path / "work"
    work.mkdir()
    state = work / "state"
    os.symlink(victim, work / ("state" + planted))
    done = run(*copy_args(source, target, "--state", str(state) + ".json"), cwd=work, timeout=60)
    no_traceback(done)
    assert victim.read_text() == "precious\n", "the copy wrote through a planted symlink"


def test_a_state_symlinked_to_another_file_is_refused_and_left(tmp_path: Path) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 3)
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    state = tmp_path / "state.json"
    os.symlink(victim, state)
    done = run(*copy_args(source, target, "--state", str(state)), cwd=tmp_path, timeout=60)
    no_traceback(done)
    # Refused before it is even read (a symlink in the state's place is never followed).
    assert done.returncode == 2 and "move it away" in done.stderr, done.stderr
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert records(target) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"format":1,"from":"x","to":"y","copied":{}}',
        b'{"format":2,"from":"sqlite:///a","to":"sqlite:///b","copied":{}}',
        b'{"format":1,"from":"sqlite:///a","to":"sqlite:///b","copied":[]}',
        b"[1,2,3]",
        b"null",
        b'{"format":1}' + b" " * 100,
    ],
)
def test_a_corrupt_state_is_a_usage_error_that_writes_nothing(
    content: bytes, tmp_path: Path
) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 2)
    state = tmp_path / "state.json"
    state.write_bytes(content)
    done = run(*copy_args(source, target, "--state", str(state)), cwd=tmp_path, timeout=60)
    no_traceback(done)
    assert done.returncode == 2, done.stderr
    assert state.read_bytes() == content
    assert records(target) == {}


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000], ids=["latin", "deep"]
)
def test_a_state_that_is_not_utf8_or_nests_deep_is_a_usage_error(
    content: bytes, tmp_path: Path
) -> None:
    # FINDING: CopyState._load() catches ValueError/KeyError/TypeError around json.loads but
    # reads the file with read_text(encoding="utf-8") outside it, and json.loads of a deeply
    # nested document raises RecursionError: a state file that is not UTF-8 (UnicodeDecodeError)
    # or nests deep crashes `copy` with a traceback instead of the "not the state of a
    # tornsession copy" usage error (exit 2).
    test_a_corrupt_state_is_a_usage_error_that_writes_nothing(content, tmp_path)


def test_a_fifo_planted_as_the_state_never_hangs_the_copy(tmp_path: Path) -> None:
    # FINDING: CopyState._load() reads the state with Path.read_text(), which opens a FIFO
    # and waits for a writer forever: a FIFO planted at the (predictable) default state path,
    # ./.tornsession-copy-<hash>.json, hangs every copy run in that folder.
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 2)
    state = tmp_path / "state.json"
    os.mkfifo(state)
    try:
        done = run(*copy_args(source, target, "--state", str(state)), cwd=tmp_path, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("copy hung reading a FIFO planted as its state file")
    no_traceback(done)
    assert done.returncode == 2


def test_a_journal_of_another_copy_is_refused(tmp_path: Path) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 2)
    state = tmp_path / "state.json"
    journal = tmp_path / "state.json.journal"
    journal.write_text(json.dumps({"from": "redis://10.0.0.1/0", "to": target}) + "\n")
    done = run(*copy_args(source, target, "--state", str(state)), cwd=tmp_path, timeout=60)
    no_traceback(done)
    assert done.returncode == 2 and "not of this one" in done.stderr
    assert records(target) == {}


def test_the_state_and_its_journal_are_private(tmp_path: Path) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    target = f"sqlite://{tmp_path}/target.db"
    populate(source, 3)
    done = run(*copy_args(source, target), cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    (state,) = tmp_path.glob(".tornsession-copy-*.json")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.journal"))


# --- what a dry run and a read-only command leave behind ---------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_a_dry_run_creates_no_target_store(kind: str, tmp_path: Path) -> None:
    # FINDING: `copy --dry-run` opens the target with store_from_url, which makes a FileStore's
    # folder and a SqliteStore's database file: the "nothing written" dry run leaves an empty
    # store (a new folder, a 16 KiB database) where the target URL points.
    source = f"sqlite://{tmp_path}/source.db"
    populate(source, 2)
    target_path = tmp_path / ("target.db" if kind == "sqlite" else "target-files")
    target = f"{kind}://{target_path}"
    done = run(*copy_args(source, target, "--dry-run"), cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("dry run, nothing written"), done
    assert not target_path.exists(), "a dry run created the target store"


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_a_mistyped_source_path_is_an_error_not_an_empty_store(kind: str, tmp_path: Path) -> None:
    # FINDING: `stats` and `copy --from` on a file:/sqlite: path that does not exist (a typo)
    # create an empty store there and succeed with "sessions 0" / "listed 0, copied 0": an
    # operator who switches the app to the target after such a "successful" copy logs every
    # visitor out. A store to read from that does not exist must be an error (exit 2), and a
    # command that only reads must create nothing.
    typo = tmp_path / ("sesions.db" if kind == "sqlite" else "sesions")
    url = f"{kind}://{typo}"
    stats = run("stats", url, "--idle-timeout", str(IDLE), cwd=tmp_path, timeout=60)
    copy = run(*copy_args(url, f"sqlite://{tmp_path}/target.db"), cwd=tmp_path, timeout=60)
    assert not typo.exists(), "a read-only command created the store it was to read"
    assert stats.returncode == 2, stats.stdout
    assert copy.returncode == 2, copy.stdout


# --- planted files in a FileStore's folder -------------------------------------------------


def planted_folder(tmp_path: Path) -> tuple[Path, list[Visitor], Path]:
    """A FileStore folder with two real sessions and every kind of planted entry named like a
    record; the outside file a planted symlink points at."""
    folder = tmp_path / "files"
    real = populate(f"file://{folder}", 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    ids = [f"{n:032x}" for n in range(1, 8)]
    secret_record = outside / "record"
    secret_record.write_bytes(record_for(ids[0], d={"stolen": "yes"}))
    os.symlink(secret_record, folder / f"SESSION{ids[0]}")
    os.symlink("/dev/zero", folder / f"SESSION{ids[1]}")
    os.mkfifo(folder / f"SESSION{ids[2]}")
    (folder / f"SESSION{ids[3]}").mkdir()
    with open(folder / f"SESSION{ids[4]}", "wb") as huge:
        huge.truncate(64 << 20)  # sparse: 64 MiB of zeros, over any read limit
    os.symlink(outside, folder / f"SESSION{ids[5]}")  # a symlink to a folder
    (folder / f"SESSION{ids[6].upper().replace('0', 'A')}").write_bytes(b"{}")
    (folder / f"SESSION{ids[6]}.tmp").write_bytes(record_for(ids[6]))
    os.close(os.open(os.fsencode(folder) + b"/SESSION\xff\xfe" + b"a" * 30, os.O_CREAT, 0o600))
    return folder, real, secret_record


def test_planted_entries_in_a_file_store_are_never_read_as_sessions(tmp_path: Path) -> None:
    folder, real, secret = planted_folder(tmp_path)
    url = f"file://{folder}"
    started = time.monotonic()
    stats = run("stats", url, "--idle-timeout", str(IDLE), "--json", cwd=tmp_path, timeout=30)
    no_traceback(stats)
    counted = json.loads(stats.stdout)
    assert counted["sessions"] == 2, counted
    # The three symlinks, the FIFO, the folder and the huge file are named like records: the store
    # refuses each, stats counts them failed and exits 1 without reading any.
    assert counted["failed"] == 6 and stats.returncode == 1, counted

    target = f"sqlite://{tmp_path}/target.db"
    copy = run(*copy_args(url, target), cwd=tmp_path, timeout=30)
    no_traceback(copy)
    assert copy.returncode == 1 and "failed 6" in copy.stdout, copy.stdout
    copied = records(target)
    assert sorted(copied) == sorted(v.session_id for v in real)
    assert not any(b"stolen" in blob for blob in copied.values())
    assert time.monotonic() - started < 20
    assert secret.read_bytes().count(b"stolen") == 1


def test_a_symlink_planted_in_a_file_target_is_never_written_through(tmp_path: Path) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    (visitor,) = populate(source, 1)
    folder = tmp_path / "target-files"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, folder / f"SESSION{visitor.session_id}")
    copy = run(*copy_args(source, f"file://{folder}"), cwd=tmp_path, timeout=30)
    no_traceback(copy)
    assert copy.returncode == 1 and "failed 1" in copy.stdout, copy.stdout
    assert victim.read_text() == "precious\n"
    assert os.path.islink(folder / f"SESSION{visitor.session_id}")


# --- records that are JSON, but hostile ---------------------------------------------------------


def plant_records(folder: Path, blobs: list[bytes]) -> list[str]:
    folder.mkdir(exist_ok=True)
    ids = []
    for n, blob in enumerate(blobs):
        session_id = f"{0xABC000 + n:032x}"
        (folder / f"SESSION{session_id}").write_bytes(blob.replace(b"ID", session_id.encode()))
        ids.append(session_id)
    return ids


ODD_RECORDS = [
    b'{"v":1,"c":-99999999999,"d":{}}',
    b'{"v":1,"c":"yesterday","d":{}}',
    b'{"v":1,"c":true,"d":{},"u":["a"]}',
    b'{"v":1,"c":1e308,"d":{},"u":{"x":1}}',
    b'{"v":1,"c":NaN,"d":{}}',
    b'{"v":1,"c":-Infinity,"d":{}}',
    b'{"v":1,"c":5,"d":{},"u":"' + b"U" * (900 << 10) + b'"}',
    b'{"v":1,"c":5,"c":6,"d":{},"u":"dup","u":"dup2"}',
    b"[]",
    b'"a string"',
    b"\x80\x04\x95pickle",
    b"",
    b'{"v":1,"c":1' + b"0" * 5000 + b',"d":{}}',  # over Python's int digits limit: ValueError
]


def test_odd_records_are_counted_not_crashed_on(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    plant_records(folder, ODD_RECORDS)
    url = f"file://{folder}"
    stats = run("stats", url, "--idle-timeout", str(IDLE), "--json", cwd=tmp_path, timeout=30)
    no_traceback(stats)
    assert stats.returncode == 0, stats.stderr
    counted = json.loads(stats.stdout)
    assert counted["sessions"] == len(ODD_RECORDS)
    assert counted["owned"] == 2 and counted["users"] == 2, counted
    target = f"sqlite://{tmp_path}/target.db"
    copy = run(*copy_args(url, target), cwd=tmp_path, timeout=30)
    no_traceback(copy)
    assert copy.returncode == 0, copy.stdout + copy.stderr


@pytest.mark.parametrize(
    "blob",
    [
        b'{"v":1,"c":1' + b"0" * 400 + b',"d":{}}',
        b'{"v":1,"c":5,"d":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["c-too-large-for-a-float", "nested-100000-deep"],
)
def test_stats_survives_a_planted_record(blob: bytes, tmp_path: Path) -> None:
    # FINDING: _cli_stats.gather() computes `now - record["c"]` for any int "c" (a 400-digit
    # one raises OverflowError: int too large to convert to float) and parses each record with
    # json.loads catching only ValueError/KeyError/TypeError (a record nested 100,000 deep
    # raises RecursionError): one planted record crashes `stats` with a traceback instead of
    # being counted unreadable. The codec itself refuses data nested over 120 levels, so such
    # a record is never tornsession's.
    folder = tmp_path / "files"
    plant_records(folder, [blob])
    populate(f"file://{folder}", 1)
    stats = run("stats", f"file://{folder}", "--idle-timeout", str(IDLE), "--json", cwd=tmp_path)
    no_traceback(stats)
    counted = json.loads(stats.stdout)
    assert counted["sessions"] == 2 and counted["unreadable"] == 1, counted


def test_copy_survives_a_deeply_nested_planted_record(tmp_path: Path) -> None:
    # FINDING: _copy_plan.written_at() parses every record with json.loads catching only
    # ValueError; a record nested 100,000 deep raises RecursionError on a worker thread, which
    # future.result() re-raises out of Copier.run: the whole copy dies with a traceback
    # (exit 1, state never compacted, the sessions after it never copied), on every run, so one
    # planted record blocks a store's migration for good.
    folder = tmp_path / "files"
    plant_records(folder, [b'{"v":1,"c":5,"d":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"])
    real = populate(f"file://{folder}", 20)
    target = f"sqlite://{tmp_path}/target.db"
    copy = run(*copy_args(f"file://{folder}", target), cwd=tmp_path, timeout=60)
    no_traceback(copy)
    assert {v.session_id for v in real} <= set(records(target))


# --- the second run, after the switch ---------------------------------------------------------


def redis_key_of(url: str, session_id: str) -> tuple[Any, str]:
    """A redis-py client on the store ``url`` names and the key of ``session_id`` there."""
    base, _, query = url.partition("?prefix=")
    return redis_client.Redis.from_url(base), f"{query}{session_id}"


def test_a_session_expired_in_the_old_store_but_used_in_the_new_one_is_not_ended(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # FINDING: decide() ends a session in the target when the source no longer holds it and
    # the target's record is byte for byte the one copied ("untouched"). But a session the app
    # only *reads* in the target after the switch keeps its bytes (anonymous sessions carry no
    # "last seen" stamp) while its expiry moves on there, and the same session, no longer read
    # in the old store, expires there. The second `copy` (the documented one, after the
    # deploy) then deletes a session the app is using: the visitor is logged out / loses the
    # cart. Expiry in the old store after the switch is not the app ending it; the target's
    # time left (moved on since the copy) shows it was used.
    source = store_url(request, tmp_path, "redis", "source")
    target = store_url(request, tmp_path, "redis", "target")
    visitor = populate(source, 2)[1]  # anonymous, the manager's idle timeout
    assert visitor.user is None
    first = run(*copy_args(source, target), cwd=tmp_path, timeout=60)
    assert first.returncode == 0 and "copied 2" in first.stdout, first.stdout

    # Time passes (3.5 s here, past the copy's 2 s of slack; 50 minutes in life): the app,
    # switched to the target, reads the session there (its expiry moves on to a full hour from
    # now); nobody reads it in the old store, where it expires.
    old, old_key = redis_key_of(source, visitor.session_id)
    new, new_key = redis_key_of(target, visitor.session_id)
    time.sleep(3.5)
    assert visitor.open(manager(target)) is not None
    assert new.pttl(new_key) > 3_599_000, "the read moved the expiry on in the new store"
    old.pexpire(old_key, 1)  # it expires there
    while old.exists(old_key):
        time.sleep(0.005)

    second = run(*copy_args(source, target), cwd=tmp_path, timeout=60)
    assert second.returncode == 0, second.stderr
    assert visitor.open(manager(target)) is not None, second.stdout


def test_a_write_of_the_app_racing_the_end_of_a_session_is_kept(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # FINDING: for Action.DELETE (ended in the source, untouched in the target), Copier.one()
    # calls _store_delete_listed unconditionally after deciding on the target's record as read:
    # a save of the app in the target between that read and the delete (the visitor active
    # there after the switch) is deleted with it, although the contract says a session used in
    # the target since is kept. Writes are conditional (expected=); the delete is not.
    source = store_url(request, tmp_path, "sqlite", "source")
    target = store_url(request, tmp_path, "redis", "target")
    (visitor,) = populate(source, 1)
    stores = tornsession.store_from_url(source), tornsession.store_from_url(target)
    state = CopyState(tmp_path / "state.json", source, target, writable=True)
    first = Copier(*stores, state, idle_timeout=IDLE).run([visitor.session_id])
    assert first.counts["copied"] == 1 and first.ok
    _core._store_delete_listed(stores[0], visitor.session_id)  # ended in the old store

    racing = RacingCopier(
        *stores, state, lambda: visitor.save(manager(target), cart="bought in the new store")
    )
    report = racing.run([])
    assert racing.raced == 1
    assert (visitor.open(manager(target)) or {}).get("cart") == "bought in the new store", report
