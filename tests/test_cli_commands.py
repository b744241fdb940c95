"""`python -m tornsession` end-user, end-session and stats on real Redis, memcached, files and
SQLite; cleanup and migrate through it and through their old entry points; bad URLs and stores
that cannot do a command refused with exit 2 and a message (no traceback, no password)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import tornsession
from support.cli import SECRET, Jar, Visitor, manager, run, store_url
from tornsession import _core

FIXTURES = Path(__file__).parent / "fixtures" / "py2_sessions"


def logged_in(url: str, user: str | None, count: int) -> list[Visitor]:
    on = manager(url)
    made = []
    for n in range(count):
        handler = Jar()
        session = tornsession.TornadoSession(on, handler)
        session["n"] = n
        if user is not None:
            session.set_user(user)
        session.save()
        made.append(Visitor(dict(handler.cookies), user))
    return made


@pytest.mark.parametrize("kind", ["redis", "memcached", "sqlite", "file"])
def test_end_user_ends_every_session_of_that_user_only(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(request, tmp_path, kind, "end-user")
    ann, bob = logged_in(url, "ann", 3), logged_in(url, "bob", 1)
    done = run("end-user", url, "ann")
    assert done.returncode == 0, done.stderr
    if kind == "memcached":
        assert "memcached cannot count them; each one ends as it is next loaded" in done.stdout
    else:
        assert done.stdout == "ended 3 sessions of user 'ann'\n"
    on = manager(url)
    assert [v.open(on) for v in ann] == [None, None, None]
    assert bob[0].open(on) == {"n": 0}
    again = run("end-user", url, "ann")
    assert again.returncode == 0
    if kind != "memcached":
        assert again.stdout == "ended 0 sessions of user 'ann'\n"


def test_end_user_on_a_cookie_store_moves_the_users_generation_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    revocation = store_url(request, tmp_path, "redis", "revocation")
    url = f"cookie:?revocation={quote(revocation, safe='')}"
    ann, bob = logged_in(url, "ann", 2), logged_in(url, "bob", 1)
    done = run("end-user", url, "ann")
    assert done.returncode == 0, done.stderr
    assert "a cookie: store cannot count them; each one ends as it is next loaded" in done.stdout
    on = manager(url)
    # A sealed session has no id in a store: what the cookie opens to is what counts.
    assert [sealed_data(v, on) for v in ann] == [{}, {}]
    assert sealed_data(bob[0], on) == {"n": 0}


def sealed_data(visitor: Visitor, on: tornsession.TornadoSessionManager) -> dict[str, Any]:
    handler = Jar()
    handler.cookies = dict(visitor.cookies)
    return dict(tornsession.TornadoSession(on, handler))


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_end_session_takes_the_secret_from_the_environment(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(request, tmp_path, kind, "end-session")
    first, second, third = logged_in(url, "ann", 3)
    on = manager(url)
    hashed = [info.id for info in on.user_sessions("ann")]
    assert len(hashed) == 3

    done = run("end-session", url, hashed[0], TORNSESSION_SECRET=SECRET)
    assert (done.returncode, done.stdout) == (0, f"ended session {hashed[0]}\n"), done.stderr
    # A rotation: the secrets as a JSON list, newest first, in a variable named on the line.
    rotated = json.dumps([secrets.token_hex(32), SECRET])
    done = run("end-session", url, hashed[1], "--secret-env", "APP_KEYS", APP_KEYS=rotated)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(on.user_sessions("ann")) == 1

    unknown = run("end-session", url, hashed[0], TORNSESSION_SECRET=SECRET)
    assert unknown.returncode == 1
    assert "no session has the hashed id" in unknown.stdout
    wrong = run("end-session", url, hashed[2], TORNSESSION_SECRET=secrets.token_hex(32))
    assert wrong.returncode == 1 and "hashed with another secret" in wrong.stdout
    assert [v.open(on) is None for v in (first, second, third)].count(True) == 2

    env = {k: v for k, v in os.environ.items() if k != "TORNSESSION_SECRET"}
    missing = subprocess.run(
        [sys.executable, "-m", "tornsession", "end-session", url, hashed[2]],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "TORNSESSION_SECRET, which is not set" in missing.stderr
    bad_list = run("end-session", url, hashed[2], TORNSESSION_SECRET="[not json")
    assert bad_list.returncode == 2 and "not a JSON list of secrets" in bad_list.stderr


def test_end_session_on_memcached_says_what_works_there(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(request, tmp_path, "memcached", "end-session")
    done = run("end-session", url, "0" * 64, TORNSESSION_SECRET=SECRET)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "end-user ends all of a user's sessions" in done.stderr


def plant(store: Any, created: float, blob: bytes | None = None) -> None:
    """A record created at ``created`` (or ``blob`` as it is), under a new id."""
    record = blob or json.dumps({"v": 1, "c": int(created), "d": {"a": 1}}).encode()
    assert _core._store_copy_in(store, secrets.token_hex(16), record, 3600.0, None, None)


@pytest.mark.parametrize("kind", ["redis", "memcached", "file"])
def test_stats_counts_sessions_bytes_ages_and_owners(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(request, tmp_path, kind, "stats")
    logged_in(url, None, 4)
    logged_in(url, "ann", 2)
    logged_in(url, "bob", 1)
    store = tornsession.store_from_url(url)
    now = time.time()
    for age in (2 * 3600, 3 * 86400, 10 * 86400, 40 * 86400, 50 * 86400):
        plant(store, now - age)
    plant(store, now, b"(dp0\nS'user'\np1\nS'ann'\np2\ns.")  # an unconverted pickle
    options = ["--idle-timeout", "3600"] if kind == "file" else []

    done = run("stats", url, "--json", *options)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["sessions"] == 13 and stats["unreadable"] == 1
    assert (stats["owned"], stats["anonymous"], stats["users"]) == (3, 9, 2)
    assert stats["ages"] == {"<1h": 7, "<1d": 1, "<7d": 1, "<30d": 1, "older": 2}
    assert stats["bytes"] > 13 * 20

    text = run("stats", url, *options)
    assert text.returncode == 0 and text.stderr == ""
    assert "sessions    13\n" in text.stdout
    assert "created     <1h 7, <1d 1, <7d 1, <30d 1, older 2" in text.stdout


def test_stats_of_a_file_store_needs_the_apps_idle_timeout(tmp_path: Path) -> None:
    done = run("stats", f"file://{tmp_path}")
    assert done.returncode == 2 and "give --idle-timeout SECONDS" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["stats", "memory:"], "memory: holds the sessions of the process that made it"),
        (["stats", "cookie:"], "cookie: keeps sessions in the visitors' browsers"),
        (["end-user", "memory:", "ann"], "memory: holds the sessions"),
        (["end-user", "cookie:", "ann"], "through its revocation store: give the app's whole"),
        (["end-session", "cookie:", "0" * 64], "cookie: keeps sessions in the visitors'"),
        (["stats", "http://example.com"], "unknown scheme 'http'"),
        (["stats", "redis://ann:s3cret@127.0.0.1:1/0?bogus=1"], "takes no option 'bogus'"),
        (["end-user", "sqlite:relative.db", "ann"], "a path must be absolute"),
        (["copy", "--from", "memory:", "--to", "sqlite:///tmp/x.db"], "memory: holds"),
        (["copy", "--from", "sqlite:///tmp/a.db", "--to", "cookie:"], "cookie: keeps sessions"),
        (["copy", "--from", "redis://:s3cret@h:1/0?x=1", "--to", "memory:"], "no option 'x'"),
        (["copy", "--from", "sqlite:///tmp/a.db", "--to", "sqlite:///tmp/a.db"], "same store"),
        (["copy", "--from", "file:///tmp/a", "--to", "sqlite:///tmp/b.db"], "--idle-timeout"),
        (["copy", "--from", "sqlite:///tmp/a.db"], "--to"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        ([], "COMMAND"),
    ],
)
def test_bad_urls_and_stores_that_cannot_be_listed_are_usage_errors(
    args: list[str], says: str, tmp_path: Path
) -> None:
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []  # no state file, no store made


def test_a_store_that_is_down_fails_with_exit_1_and_a_message(tmp_path: Path) -> None:
    url = "redis://:s3cret@127.0.0.1:1/0?connect_timeout=0.2&timeout=0.2"
    for args in (
        ["stats", url],
        ["end-user", url, "ann"],
        ["copy", "--from", url, "--to", url + "&prefix=x:"],
    ):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
        assert "s3cret" not in done.stderr


def aged_file(folder: Path) -> tuple[Path, Path]:
    on = tornsession.SessionManager(SECRET, str(folder))
    kept, old = on.get(), on.get()
    for session in (kept, old):
        session["a"] = 1
        on.set(session)
    path = folder / f"SESSION{old.session_id}"
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    return folder / f"SESSION{kept.session_id}", path


@pytest.mark.parametrize("command", [["tornsession", "cleanup"], ["tornsession.cleanup"]])
def test_cleanup_runs_through_the_command_and_its_old_entry_point(
    command: list[str], tmp_path: Path
) -> None:
    kept, old = aged_file(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", *command, str(tmp_path), "--idle-timeout", "3600"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "deleted 1 expired sessions and 0 stale temporary files\n"
    assert kept.exists() and not old.exists()


@pytest.mark.parametrize("command", [["tornsession", "migrate"], ["tornsession.migrate"]])
def test_migrate_runs_through_the_command_and_its_old_entry_point(
    command: list[str], tmp_path: Path
) -> None:
    session_id = hashlib.sha256(b"migrate").hexdigest()[:32]
    path = tmp_path / f"SESSION{session_id}"
    shutil.copyfile(FIXTURES / "profile.pickle", path)
    dry = subprocess.run(
        [sys.executable, "-m", *command, "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run, nothing changed: would convert 1" in dry.stdout
    done = subprocess.run(
        [sys.executable, "-m", *command, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "converted 1, already current 0, left 0" in done.stdout
    assert path.read_bytes().startswith(b'{"k":')


def test_a_record_over_the_size_limit_is_counted_failed_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    url = f"file://{tmp_path}/files"
    logged_in(url, "ann", 3)
    huge = json.dumps({"v": 1, "c": int(time.time()), "d": {"x": "x" * (1 << 20)}})
    (tmp_path / "files" / f"SESSION{secrets.token_hex(16)}").write_text(huge)
    stats = run("stats", url, "--idle-timeout", "3600", "--json")
    assert stats.returncode == 1 and "1 records could not be read" in stats.stderr
    counted = json.loads(stats.stdout)
    assert (counted["sessions"], counted["failed"]) == (3, 1)
    copy = run(
        "copy",
        "--from",
        url,
        "--to",
        f"sqlite://{tmp_path}/t.db",
        "--idle-timeout",
        "3600",
        cwd=tmp_path,
    )
    assert copy.returncode == 1 and "Traceback" not in copy.stderr
    assert ", copied 3, " in copy.stdout and ", failed 1;" in copy.stdout
    assert copy.stderr.startswith("failed ")
