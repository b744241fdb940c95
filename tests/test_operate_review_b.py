"""The review of tests/test_operate_review.py, continued: `migrate --from memcached` with
hostile pickles, a hostile memcached answering the listing, Redis keys under the prefix that are
not sessions, copying a store into itself, end-session/end-user with odd arguments, metrics, and
a logout racing a copy.

A test marked ``# FINDING:`` fails on purpose until the bug it names is fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import tornsession
from support.cli import IDLE, Jar, RacingCopier, Visitor, manager, populate, run, store_url
from test_operate_review import (
    SECRET,
    copy_args,
    no_traceback,
    records,
)
from tornsession import _core
from tornsession._cli_copy import Copier
from tornsession._copy_state import CopyState

# --- migrate --from memcached ------------------------------------------------------------------


def put_raw(port: int, key: str, blob: bytes, exptime: int = 0) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"set {key} 1 {exptime} {len(blob)}\r\n".encode() + blob + b"\r\n")
        assert sock.recv(100) == b"STORED\r\n"


def migrate_run(*args: str, cwd: Path) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "tornsession", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_migrate_from_memcached_never_runs_a_pickle_and_goes_on_past_garbage(
    memcached_factory: Any, tmp_path: Path
) -> None:
    import pickle

    server = memcached_factory()
    marker = tmp_path / "pwned"
    ids = [f"{n:031x}f" for n in range(1, 9)]

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    class EvalEvil:
        def __reduce__(self) -> Any:
            return (eval, (f"open({str(marker)!r}, 'w')",))

    put_raw(server.port, ids[0], pickle.dumps({"a": Evil()}, protocol=2))
    put_raw(server.port, ids[1], pickle.dumps(Evil(), protocol=0))
    put_raw(server.port, ids[2], pickle.dumps({"b": EvalEvil()}, protocol=4))
    put_raw(server.port, ids[3], b"\x80\x02}q\x00(" * 1000)  # a torn pickle
    put_raw(server.port, ids[4], b"not a pickle at all")
    put_raw(server.port, ids[5], b"\x80\x02" + b"(" * 200_000 + b".")  # marks nested deep
    put_raw(server.port, ids[6], pickle.dumps({"fine": [1, 2, 3]}, protocol=2))
    put_raw(server.port, ids[7], b"]" * 50_000 + b".")
    target = tmp_path / "target.db"
    done = migrate_run(
        "--from",
        f"memcached://127.0.0.1:{server.port}",
        "--to",
        f"sqlite://{target}",
        "--objects-as-dicts",
        cwd=tmp_path,
    )
    no_traceback(done)
    assert not marker.exists(), "a pickle ran code"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "converted 1, already current 0, left 7" in done.stdout, done.stdout
    assert set(records(f"sqlite://{target}")) == {ids[6]}


def test_migrate_from_memcached_into_a_store_of_its_own_process_is_refused(
    memcached_factory: Any, tmp_path: Path
) -> None:
    # FINDING: `migrate --from memcached://... --to memory:` (or `cookie:`, whose records live
    # in browsers) is accepted: the pickles are "converted" into a MemoryStore inside the
    # command's own process, which exits; it reports "converted 1" with exit 0 and nothing was
    # written anywhere (copy, stats and end-session refuse memory: for exactly this reason).
    import pickle

    server = memcached_factory()
    session_id = "ab" * 16
    put_raw(server.port, session_id, pickle.dumps({"visits": 3}, protocol=2))
    done = migrate_run(
        "--from", f"memcached://127.0.0.1:{server.port}", "--to", "memory:", cwd=tmp_path
    )
    no_traceback(done)
    assert done.returncode == 2, done.stdout
    cookie = migrate_run(
        "--from", f"memcached://127.0.0.1:{server.port}", "--to", "cookie:", cwd=tmp_path
    )
    no_traceback(cookie)
    assert cookie.returncode == 2, cookie.stdout + cookie.stderr


def test_migrate_from_a_store_that_is_not_memcached_is_a_usage_error(tmp_path: Path) -> None:
    for url in ["redis://127.0.0.1:1/0", f"file://{tmp_path}/x", "memory:", "cookie:", "bogus://"]:
        done = migrate_run("--from", url, cwd=tmp_path)
        no_traceback(done)
        assert done.returncode == 2, (url, done.stdout, done.stderr)


# --- a hostile memcached answering the listing -----------------------------------------------


class FakeMemcached:
    """A TCP server on loopback that answers `lru_crawler metadump all` with ``dump`` (bytes
    sent as they are) and every meta get with EN (no such item)."""

    def __init__(self, dump: bytes) -> None:
        import socketserver
        import threading

        outer = self
        self.dump = dump
        self.dumps = 0

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    if line.startswith(b"lru_crawler metadump"):
                        outer.dumps += 1
                        self.wfile.write(outer.dump)
                        self.wfile.flush()
                        if not outer.dump.endswith(b"END\r\n"):
                            return  # closes mid-dump
                    elif line.startswith(b"mg "):
                        self.wfile.write(b"EN\r\n")
                    elif line.startswith(b"mn"):
                        self.wfile.write(b"MN\r\n")
                    else:
                        self.wfile.write(b"ERROR\r\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_memcached() -> Any:
    made: list[FakeMemcached] = []

    def start(dump: bytes) -> FakeMemcached:
        made.append(FakeMemcached(dump))
        return made[-1]

    yield start
    for server in made:
        server.close()


@pytest.mark.parametrize(
    ("dump", "says"),
    [
        (b"HELLO THERE\r\n", "answered"),
        (b"key=p%3A" + b"a" * 32 + b" exp=-1\r\n", "closed the connection mid-dump"),
        (b"key=" + b"x" * 10_000 + b"\r\nEND\r\n", "too long"),
        (b"\xff\xfe\x00\x01\r\n", "answered"),
        (b"CLIENT_ERROR lru crawler disabled\r\n", "LRU crawler"),
    ],
    ids=["garbage", "no-end", "long-line", "binary", "disabled"],
)
def test_a_listing_of_a_hostile_memcached_fails_cleanly(
    dump: bytes, says: str, fake_memcached: Any, tmp_path: Path
) -> None:
    server = fake_memcached(dump)
    done = run("stats", f"memcached://127.0.0.1:{server.port}?prefix=p:", cwd=tmp_path, timeout=20)
    no_traceback(done)
    assert done.returncode == 1 and says in done.stderr, done.stderr


def test_only_keys_that_decode_to_the_prefix_and_a_session_id_are_listed(
    fake_memcached: Any,
) -> None:
    valid = "0123456789abcdef" * 2
    encoded_digits = "".join(f"%{ord(c):02x}" for c in valid)
    future = int(time.time()) + 3600
    lines = [
        f"key=p%3A{valid} exp=-1 la=1 cas=1 fetch=no cls=1 size=70",  # listed
        f"key=p%3A{encoded_digits} exp={future}",  # the same id, encoded: once
        f"key=p%3A{'1' * 32} exp=1",  # long expired: not listed
        f"key=p%3A{'2' * 32}%00 exp=-1",  # a NUL after the id
        f"key=p%3A{'3' * 32}%ff exp=-1",  # not UTF-8
        f"key=p%3A..%2F{'4' * 28} exp=-1",
        f"key=p%3Auser%3A%7B{'5' * 32}%7D exp=-1",  # a user generation
        f"key=p%253A{'6' * 32} exp=-1",  # 'p%3A' literally: another prefix
        f"key=P%3A{'7' * 32} exp=-1",
        f"key=p%3A{'8' * 32} exp=soon",  # a bad field: the line is skipped
        f"key=p%3A{'A' * 32} exp=-1",  # upper case: not an id
        f"key=p%3A{'b' * 32} exp=-1 key=p%3A{'c' * 32}",  # two keys: the last one
        "key= exp=-1",
        "key=%zz exp=-1",
    ]
    server = fake_memcached(("\r\n".join(lines) + "\r\nEND\r\n").encode())
    store = tornsession.MemcachedStore([f"127.0.0.1:{server.port}"], prefix="p:")
    listed = _core._store_session_ids(store)
    assert sorted(listed) == sorted([valid, "c" * 32]), listed
    assert server.dumps == 2  # the union of two dumps


# --- Redis keys under the prefix that are not sessions ----------------------------------------


def test_redis_keys_under_the_prefix_that_are_not_sessions_are_never_listed(
    redis_server: Any, tmp_path: Path
) -> None:
    prefix = f"a*[?\\{tmp_path.name}:"  # glob characters, matched literally
    url = f"{redis_server.url}?prefix={prefix}"
    made = populate(url, 6)  # two of them owned: a user index under the prefix
    raw = redis_client.Redis.from_url(redis_server.url)
    valid = "ab" * 16
    raw.set(f"{prefix}foo", b"{}")
    raw.set(f"{prefix}".encode() + b"\xff\xfe" + b"a" * 30, b"{}")
    raw.set(f"{prefix}{valid}x", b"{}")
    raw.set(f"{prefix}{valid.upper()}", b"{}")
    raw.set(f"{prefix}user:{valid}", b"{}")
    raw.set(f"{prefix[:-1]}X{valid}", b"{}")  # another prefix one character off
    raw.set(f"aXb{tmp_path.name}:{valid}", b"{}")  # what the unescaped glob would match
    hostile = "cd" * 16
    raw.hset(f"{prefix}{hostile}", "not", "a string")  # named like a session, of another type
    store = tornsession.store_from_url(url)
    listed = set(_core._store_session_ids(store))
    assert listed == {v.session_id for v in made} | {hostile}
    stats = run("stats", url, "--json", cwd=tmp_path, timeout=30)
    no_traceback(stats)
    counted = json.loads(stats.stdout)
    assert (counted["sessions"], counted["failed"]) == (6, 1), counted
    assert stats.returncode == 1, stats.stderr
    target = f"sqlite://{tmp_path}/t.db"
    copy = run(*copy_args(url, target), cwd=tmp_path, timeout=30)
    no_traceback(copy)
    assert copy.returncode == 1 and "failed 1" in copy.stdout, copy.stdout
    assert set(records(target)) == {v.session_id for v in made}
    assert raw.type(f"{prefix}{hostile}") == b"hash"


def test_a_store_errors_cause_survives_the_password_masking(
    redis_server: Any, tmp_path: Path
) -> None:
    # FINDING: the commands pass every error message through masked(), whose userinfo regex
    # `(://[^/?#@:]*:)[^@]*@` takes "://127.0.0.1:" for "://user:" and eats everything up to
    # the next '@' anywhere later in the message. Redis script errors end "on @user_script:1",
    # so `stats` prints "RedisStore('redis://127.0.0.1:***@user_script:1." - the port, the db
    # and the cause (WRONGTYPE ...) are gone; the operator cannot tell what failed.
    prefix = f"wt-{tmp_path.name}:"
    url = f"{redis_server.url}?prefix={prefix}"
    populate(url, 1)
    redis_client.Redis.from_url(redis_server.url).hset(f"{prefix}{'cd' * 16}", "a", "b")
    stats = run("stats", url, cwd=tmp_path, timeout=30)
    assert stats.returncode == 1
    assert "WRONGTYPE" in stats.stderr and f":{redis_server.port}/0" in stats.stderr, stats.stderr
    copy = run(*copy_args(url, f"sqlite://{tmp_path}/t.db"), cwd=tmp_path, timeout=30)
    assert copy.returncode == 1
    assert "WRONGTYPE" in copy.stderr, copy.stderr


# --- copying a store into itself ------------------------------------------------------------


def test_a_store_copied_into_itself_under_another_spelling_loses_nothing(
    redis_server: Any, tmp_path: Path
) -> None:
    prefix = f"self-{tmp_path.name}:"
    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix={prefix}"
    same = f"redis://localhost:{redis_server.port}?prefix={prefix}"
    made = populate(url, 30)
    before = records(url)
    for _ in range(2):
        done = run(*copy_args(url, same), cwd=tmp_path, timeout=60)
        no_traceback(done)
        assert done.returncode == 0 and "copied 0" in done.stdout, done.stdout
    assert records(url) == before
    on = manager(url)
    assert all(v.open(on) is not None for v in made)
    done = run(*copy_args(url, " " + url + " "), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "the same store" in done.stderr


def test_a_file_store_copied_into_itself_through_a_symlinked_path_loses_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "files"
    made = populate(f"file://{folder}", 10)
    os.symlink(folder, tmp_path / "alias")
    before = records(f"file://{folder}")
    for other in (f"file://{folder}/", f"file://{tmp_path}/alias", f"file://{folder}/./"):
        done = run(*copy_args(f"file://{folder}", other), cwd=tmp_path, timeout=60)
        no_traceback(done)
        assert done.returncode == 0 and "copied 0" in done.stdout, done.stdout
    assert records(f"file://{folder}") == before
    on = manager(f"file://{folder}")
    assert all(v.open(on) is not None for v in made)


# --- end-session and end-user with odd arguments ----------------------------------------------


@pytest.mark.parametrize(
    "hashed_id",
    ["", "x", "../../../etc/passwd", "a" * 100_000, "\u00e9" * 64, "0" * 64, "*", "user:{a}"],
    ids=["empty", "short", "path", "huge", "unicode", "zeros", "glob", "index-key"],
)
def test_end_session_with_a_malformed_id_ends_nothing(
    hashed_id: str, redis_server: Any, tmp_path: Path
) -> None:
    url = f"{redis_server.url}?prefix=end-{tmp_path.name}:"
    on = manager(url)
    handler = Jar()
    session = tornsession.TornadoSession(on, handler)
    session.set_user("ann")
    session["n"] = 1
    session.save()
    ann = Visitor(dict(handler.cookies), "ann")
    done = run("end-session", url, hashed_id, cwd=tmp_path, timeout=30, TORNSESSION_SECRET=SECRET)
    no_traceback(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert ann.open(on) == {"n": 1}
    assert len(records(url)) == 1


def test_end_session_with_the_right_id_but_another_secret_ends_nothing(
    redis_server: Any, tmp_path: Path
) -> None:
    from support.cli import SECRET as APP_SECRET

    url = f"{redis_server.url}?prefix=end2-{tmp_path.name}:"
    on = manager(url)
    handler = Jar()
    session = tornsession.TornadoSession(on, handler)
    session.set_user("ann")
    session["n"] = 1
    session.save()
    (info,) = on.user_sessions("ann")
    wrong = run("end-session", url, info.id, cwd=tmp_path, TORNSESSION_SECRET="another-" * 5)
    assert wrong.returncode == 1 and len(on.user_sessions("ann")) == 1
    for bad in ("[]", "[1]", '[""]', "[", '["a",'):
        refused = run("end-session", url, info.id, cwd=tmp_path, TORNSESSION_SECRET=bad)
        no_traceback(refused)
        assert refused.returncode == 2 and bad not in refused.stdout, (bad, refused.stderr)
    rotated = json.dumps(["newer-secret-" * 3, APP_SECRET])
    done = run("end-session", url, info.id, cwd=tmp_path, TORNSESSION_SECRET=rotated)
    assert done.returncode == 0, done.stderr
    assert on.user_sessions("ann") == []


@pytest.mark.parametrize("user", ["", "*", "a" * 10_000, "\u00e9\u4e2d", "{x}", "user:{x}"])
def test_end_user_with_odd_user_ids_ends_only_that_user(
    user: str, redis_server: Any, tmp_path: Path
) -> None:
    url = f"{redis_server.url}?prefix=eu-{tmp_path.name}:"
    made = populate(url, 6)
    done = run("end-user", url, user, cwd=tmp_path, timeout=30)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout.startswith("ended 0 sessions"), done.stdout
    on = manager(url)
    assert all(v.open(on) is not None for v in made)


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_count_exactly_under_eight_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    on = tornsession.SessionManager(SECRET, store=tornsession.SqliteStore(tmp_path / "m.db"))
    per_thread = 150

    def work(thread: int) -> None:
        for n in range(per_thread):
            session = on.get()
            session["n"] = (thread, n)
            on.set(session)  # written
            again = on.get(session.session_id, session.hmac_digest)  # found
            on.set(again)  # unchanged

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    counts = on.metrics()
    total = 8 * per_thread
    assert counts["fresh"] == total
    assert counts["saves"] == {"written": total, "unchanged": total, "dropped": 0}
    assert counts["loads"]["found"] == total and sum(counts["loads"].values()) == total
    assert counts["latency"]["save"]["count"] == total
    assert counts["latency"]["load"]["count"] == total
    for histogram in counts["latency"].values():
        buckets = [count for _, count in histogram["buckets"]]
        assert buckets == sorted(buckets), "cumulative"
        assert buckets[-1] == histogram["count"] and histogram["buckets"][-1][0] == float("inf")


def test_a_python_store_that_raises_is_counted_unavailable() -> None:
    class Broken:
        def get(self, key: str) -> bytes | None:
            raise RuntimeError("down")

        def set(self, key: str, value: bytes, ttl: int | None) -> None:
            raise OSError("disk full")

        def delete(self, key: str) -> None:
            raise ValueError("nope")

    on = tornsession.SessionManager(SECRET, store=Broken())
    session = on.get()
    session["a"] = 1
    with pytest.raises(tornsession.SessionStoreError):
        on.set(session)
    elsewhere = tornsession.SessionManager(SECRET)
    known = elsewhere.get()
    known["b"] = 2
    elsewhere.set(known)
    with pytest.raises(tornsession.SessionStoreError):
        on.get(known.session_id, known.hmac_digest)
    counts = on.metrics()
    assert counts["store_errors"]["unavailable"] == 2, counts["store_errors"]
    assert counts["saves"]["written"] == 0 and counts["loads"]["found"] == 0


def test_the_prometheus_exposition_is_valid_and_register_twice_is_refused() -> None:
    import re

    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families
    from tornsession import metrics

    on = tornsession.SessionManager(SECRET)
    session = on.get()
    session["a"] = 1
    on.set(session)
    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(registry, manager=on)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.register(registry, manager=on)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.register(registry)  # the process's totals next to a manager's: same names
    text = prometheus_client.generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    name = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    assert families and all(name.match(n) and n.startswith("tornsession_") for n in families)
    saves = {s.labels["result"]: s.value for s in families["tornsession_saves"].samples}
    assert saves["written"] == 1
    buckets = [
        s
        for s in families["tornsession_store_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["operation"] == "save"
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 1
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)
    registry.unregister(collector)
    assert "tornsession_" not in prometheus_client.generate_latest(registry).decode()


def test_a_logout_in_the_target_racing_a_copy_over_it_stays_ended(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = store_url(request, tmp_path, "sqlite", "source")
    target = store_url(request, tmp_path, "redis", "target")
    (visitor,) = populate(source, 1)
    stores = tornsession.store_from_url(source), tornsession.store_from_url(target)
    state = CopyState(tmp_path / "state.json", source, target, writable=True)
    assert Copier(*stores, state, idle_timeout=IDLE).run([visitor.session_id]).ok
    visitor.save(manager(source), cart="changed in the old store")  # to be copied over

    racing = RacingCopier(
        *stores,
        state,
        lambda: visitor.end(manager(target)),  # logged out in the new store
    )
    report = racing.run([visitor.session_id])
    assert racing.raced == 1 and report.ok, report
    assert report.counts["skipped-ended"] == 1, report
    assert visitor.open(manager(target)) is None
    assert manager(target).user_sessions(visitor.user or "") == []
    # And a later run does not bring it back either.
    again = Copier(*stores, state, idle_timeout=IDLE).run([visitor.session_id])
    assert again.counts["skipped-ended"] == 1 and visitor.open(manager(target)) is None
