"""python -m tornsession.migrate: the original pickled session files, converted in place."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import tornsession
from tornsession import migrate

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "py2_sessions"
SECRET = "the-original-session-secret"

PROFILE_DATA = {
    "user": "jürgen",
    "email": "jürgen@example.org",
    "visits": 42,
    "big": 12345678901234567,
    "ratio": 1.5,
    "admin": True,
    "banned": False,
    "last_error": None,
    "cart": [{"sku": "A-1", "qty": 2}, {"sku": "café", "qty": 1}],
    "point": [3, 4],
    "prefs": {"lang": "de", "tags": ["a", "b", 7]},
    "flash": "Grüße ☃ \U0001f600",
}


def original_id() -> str:
    """The original module's id: md5(secret + str(uuid4())).hexdigest()."""
    return hashlib.md5((SECRET + str(uuid.uuid4())).encode()).hexdigest()


def original_digest(session_id: str) -> str:
    """The original module's digest: hmac.new(session_id, secret, sha1).hexdigest()."""
    return hmac.new(session_id.encode(), SECRET.encode(), hashlib.sha1).hexdigest()


def plant(folder: Path, fixture: str, session_id: str | None = None) -> Path:
    """Copies a Python 2 pickle into folder as SESSION<id>, as the original module named it."""
    path = folder / f"SESSION{session_id or original_id()}"
    shutil.copyfile(FIXTURES / fixture, path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tornsession.migrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_python2_session_is_converted_and_opens_with_the_original_cookie(
    session_dir: Path,
) -> None:
    path = plant(session_dir, "profile.pickle")
    session_id = path.name[len("SESSION") :]
    mtime = 1_600_000_000
    os.utime(path, (mtime, mtime))

    result = run_cli(str(session_dir))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "converted 1, already current 0, left 0" in result.stdout
    assert path.read_bytes() == migrate.encode_record(mtime, PROFILE_DATA, session_id)
    # Sessions whose cookies carry the original's digest open after migration.
    manager = tornsession.SessionManager(SECRET, session_dir)
    session = manager.get(session_id, original_digest(session_id))
    assert dict(session) == PROFILE_DATA
    assert session.session_id == session_id
    # ... and with tornsession's own digest too.
    resigned = manager.get(session_id, session.hmac_digest)
    assert dict(resigned) == PROFILE_DATA


def test_converted_files_keep_mode_and_modification_time(session_dir: Path) -> None:
    path = plant(session_dir, "profile.pickle")
    path.chmod(0o640)
    os.utime(path, (1_500_000_000, 1_600_000_000))

    assert migrate.main([str(session_dir)]) == 0

    after = path.stat()
    assert after.st_mode & 0o777 == 0o640
    assert after.st_mtime == 1_600_000_000
    assert not [p for p in session_dir.iterdir() if p.name.startswith(".tmp")]


def test_the_written_record_matches_what_the_core_writes_byte_for_byte(session_dir: Path) -> None:
    manager = tornsession.SessionManager(SECRET, session_dir)
    session = manager.get()
    data = {"z": 1, "a": [1, 2.5, None, True], "é": {"y": "☃", "b": "ctl\x01\n"}, "n": -(2**63)}
    session.update(data)
    manager.set(session)
    stored = (session_dir / f"SESSION{session.session_id}").read_bytes()
    created = int(stored.split(b'"c":')[1].split(b",")[0])
    assert migrate.encode_record(created, data, session.session_id) == stored


def test_a_pickle_that_runs_a_command_is_never_loaded(session_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = {
        "os_system": f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),
        "posix_system": f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode(),
        # inside a dict, the way a planted session would look
        "in_dict": f"(dp0\nS'user'\ncposix\nsystem\n(S'touch {marker}'\ntRs.".encode(),
        # the value is a class instance whose state would be set by a callable
        "build": f"(dp0\nS'x'\n(cos\nsystem\nS'touch {marker}'\nos.".encode(),
    }
    paths = {}
    for name, blob in payloads.items():
        path = session_dir / f"SESSION{original_id()}"
        path.write_bytes(blob)
        paths[name] = path

    result = run_cli(str(session_dir))

    assert not marker.exists()
    assert result.returncode == 1
    for name, path in paths.items():
        assert path.read_bytes() == payloads[name], name
        assert f"left {path.name}: " in result.stdout
    assert "calls posix.system, which is never run" in result.stdout
    assert f"left {paths['in_dict'].name}: key 'user': calls posix.system" in result.stdout
    assert "converted 0, already current 0, left 4" in result.stdout


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        (
            "app_object.pickle",
            "key 'user': holds an object of class myapp.models.User, which is never loaded",
        ),
        (
            "old_style_object.pickle",
            "key 'cart': holds an object of class myapp.cart.Cart, which is never loaded",
        ),
        ("list_top.pickle", "the pickle holds a list, not a dict of session items"),
        ("huge_long.pickle", "key 'n': holds an int beyond 64 bits"),
        ("nan.pickle", "key 'x': holds NaN or infinity"),
        ("int_key.pickle", "key 'scores': holds a dict with a int key"),
    ],
)
def test_what_json_cannot_hold_is_reported_by_key_and_left_as_it_was(
    session_dir: Path, capsys: pytest.CaptureFixture[str], fixture: str, message: str
) -> None:
    path = plant(session_dir, fixture)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns

    assert migrate.main([str(session_dir)]) == 1

    out = capsys.readouterr().out
    assert f"left {path.name}: {message}" in out
    assert "converted 0, already current 0, left 1" in out
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_files_already_in_tornsession_format_are_untouched(session_dir: Path) -> None:
    manager = tornsession.SessionManager(SECRET, session_dir)
    session = manager.get()
    session["user"] = "ann"
    manager.set(session)
    path = session_dir / f"SESSION{session.session_id}"
    before = path.read_bytes()
    os.utime(path, (1_000_000_000, 1_000_000_000))
    plant(session_dir, "profile.pickle")

    result = run_cli(str(session_dir))

    assert result.returncode == 0
    assert "converted 1, already current 1, left 0" in result.stdout
    assert path.read_bytes() == before
    assert path.stat().st_mtime == 1_000_000_000
    # A second run finds everything current.
    again = run_cli(str(session_dir))
    assert again.returncode == 0
    assert "converted 0, already current 2, left 0" in again.stdout


def test_dry_run_reports_and_changes_nothing(session_dir: Path) -> None:
    good = plant(session_dir, "profile.pickle")
    bad = plant(session_dir, "app_object.pickle")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (good, bad)}

    result = run_cli("--dry-run", str(session_dir))

    assert result.returncode == 1
    assert "dry run, nothing changed: would convert 1, already current 0, left 1" in result.stdout
    assert f"left {bad.name}: key 'user'" in result.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (good, bad)} == before
    assert sorted(p.name for p in session_dir.iterdir()) == sorted([good.name, bad.name])


def test_usage_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    missing = run_cli(str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert f"error: no such folder: {tmp_path / 'nope'}" in missing.stderr

    a_file = tmp_path / "file"
    a_file.write_text("x")
    not_dir = run_cli(str(a_file))
    assert not_dir.returncode == 2
    assert "error: not a folder" in not_dir.stderr

    no_args = run_cli()
    assert no_args.returncode == 2
    assert "SESSION_DIR" in no_args.stderr


def test_an_empty_folder_exits_0(session_dir: Path) -> None:
    result = run_cli(str(session_dir))
    assert result.returncode == 0
    assert "converted 0, already current 0, left 0" in result.stdout


def test_latin1_strings_are_decoded_and_noted(session_dir: Path) -> None:
    path = plant(session_dir, "latin1.pickle")
    session_id = path.name[len("SESSION") :]

    result = run_cli(str(session_dir))

    assert result.returncode == 0
    assert f"note {path.name}: key 'city': bytes that are not UTF-8 decoded as Latin-1" in (
        result.stdout
    )
    manager = tornsession.SessionManager(SECRET, session_dir)
    assert dict(manager.get(session_id, original_digest(session_id))) == {"city": "München"}


def test_other_files_are_ignored_and_bad_names_or_garbage_are_left(session_dir: Path) -> None:
    (session_dir / "README").write_text("not a session")
    bad_name = session_dir / "SESSIONnot-an-id"
    shutil.copyfile(FIXTURES / "profile.pickle", bad_name)
    garbage = session_dir / f"SESSION{original_id()}"
    garbage.write_bytes(b"\x00\x01 not a pickle")
    empty = session_dir / f"SESSION{original_id()}"
    empty.write_bytes(b"")
    link = session_dir / f"SESSION{original_id()}"
    link.symlink_to(FIXTURES / "profile.pickle")

    result = run_cli(str(session_dir))

    assert result.returncode == 1
    assert f"left {bad_name.name}: the name is not SESSION + a 32-hex-digit session id" in (
        result.stdout
    )
    assert f"left {garbage.name}: not a readable pickle" in result.stdout
    assert f"left {empty.name}: not a readable pickle" in result.stdout
    assert f"left {link.name}: a symbolic link, not followed" in result.stdout
    assert "README" not in result.stdout
    assert "converted 0, already current 0, left 4" in result.stdout
    assert link.is_symlink()


def test_shared_references_that_would_explode_in_json_are_refused(session_dir: Path) -> None:
    # l0 = [1]; l1 = [l0, l0]; l2 = [l1, l1]; ... 2**40 leaves once written out as JSON.
    # Each level is memoized, popped (0), and referenced twice by the next (g); the last stays.
    levels = [b"(lp1\nI1\na"]
    for level in range(2, 42):
        levels.append(f"(lp{level}\ng{level - 1}\nag{level - 1}\na".encode())
    parts = [b"(dp0\nS'bomb'\n", b"0".join(levels), b"s."]
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(b"".join(parts))

    result = run_cli(str(session_dir))

    assert result.returncode == 1
    assert "key 'bomb': holds more than 1000000 values once expanded" in result.stdout


@pytest.mark.parametrize(
    ("pickled", "refusal"),
    [
        (b"(dp0\nS'loop'\n(lp1\ng1\nas.", "key 'loop': holds values nested deeper than 120 levels"),
        (b"(dp0\nS'x'\nVa\\ud800b\ns.", "key 'x': holds a string with a lone surrogate"),
    ],
    ids=["a list holding itself", "a lone surrogate"],
)
def test_a_session_the_migration_cannot_represent_is_refused_not_a_crash(
    session_dir: Path, pickled: bytes, refusal: str
) -> None:
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(pickled)
    result = run_cli(str(session_dir))
    assert result.returncode == 1
    assert refusal in result.stdout


def test_the_sample_output_in_the_docs_is_what_the_command_prints(session_dir: Path) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "migrate-and-testing.md").read_text()
    expected = docs.split("```text\n", 1)[1].split("```", 1)[0]
    plant(session_dir, "profile.pickle", "5f1c9a0e7b2d4c8e9a1b3d5f7e9c1a2b")
    plant(session_dir, "latin1.pickle", "0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    plant(session_dir, "app_object.pickle", "d41d8cd98f00b204e9800998ecf8427e")
    plant(session_dir, "set.pickle", "9e107d9d372bb6826bd81d3542a419d6")

    result = run_cli(str(session_dir))

    assert result.returncode == 1
    assert result.stdout == expected
