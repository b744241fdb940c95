"""Side-by-side benchmarks of tornsession, the original module and the peers; writes BENCHMARKS.md.

    python -m bench.run                # full run: 3 rounds of 5 s per measurement, profile, scale
    python -m bench.run --quick        # smoke run: 1 round of 1 s, no profile, no scale
    python -m bench.run --no-scale     # without the 1,000,000-session part (about 30 s)
    python -m bench.run --old-python ../old/.venv/bin/python --old-label v0.3.0
                                       # also the drop-in variants under an earlier release
    python -m bench.run --issue20 --old-python ../old/.venv-old/bin/python --old-label 59dd2f6
                                       # issue 20's variants and their old twins only
    python -m bench.run --issue21 --no-scale --no-profile
                                       # mixin MemoryStore beside mixin and drop-in CookieStore
    python -m bench.run --issue22 --no-scale --no-profile
                                       # mixin MemoryStore with metrics on and off

Run it from the repository root with the interpreter that has tornsession installed (``make
bench`` uses .venv). It installs wrk, redis-server and memcached with apt-get when missing,
makes ``bench/.venv-peers`` with the peers (bench/requirements-peers.txt) and the same Tornado,
starts Redis and memcached on free loopback ports, starts one bench/app.py process per variant,
and measures them round robin with wrk (-c8 -t2, keep-alive) in two workloads: one session
cookie (and a lost-increment check), and many sessions (``--sessions N``, default 2000, made
before the rounds, one request per session in turn: wrk_many.lua). Raw results go to
bench/results/*.json (one file per part, so a later run without the scale part keeps the last
scale figures), the report to BENCHMARKS.md.

With ``--old-python``, the ``old-tornsession-<store>`` variants run this bench/app.py's drop-in
handlers under that interpreter (an earlier tornsession installed in it, the same Tornado), in
the same round robin as the others, so old and new are compared within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import tornado
import tornado.web

from bench.app import (
    COMPACT_VARIANTS,
    COOKIE_VARIANTS,
    DROP_IN_VARIANTS,
    FLOOR_ASYNCIO_REDIS,
    FLOOR_DICT,
    NO_METRICS_VARIANTS,
    NONE_WITH_COOKIE,
    NOT_AVAILABLE_STATUS,
    OLD_VARIANTS,
    PEER_VARIANTS,
    SECRET,
    VARIANTS,
)
from bench.inprocess import IMPLS
from bench.servers import HOST, Process, free_port, start_memcached, start_redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".venv-peers"
RESULTS = BENCH / "results"
LUA = BENCH / "wrk_report.lua"
LUA_MANY = BENCH / "wrk_many.lua"
WRK_THREADS = 2
NO_SESSION = ("none", NONE_WITH_COOKIE, "cookies-only")  # no session store: no counter to check
# The session travels in its cookie, which wrk sends back unchanged: every write starts from the
# same sealed counter, so "lost increments" would count every write. Not checked.
NO_COUNTER = (*NO_SESSION, *COOKIE_VARIANTS)
# Issue 20's set (`--issue20`): the no-session app with and without a session's Cookie header,
# the floors, and the tornsession variants its targets name (their old twins with --old-python).
ISSUE20_VARIANTS = (
    "none",
    NONE_WITH_COOKIE,
    FLOOR_DICT,
    FLOOR_ASYNCIO_REDIS,
    "floor-redis",
    *COMPACT_VARIANTS,
    "tornsession-mixin-memory",
    "tornsession-mixin-sqlite",
    "tornsession-mixin-redis",
    "tornsession-mixin-memcached",
    *(v for v in DROP_IN_VARIANTS if v != "tornsession-file"),
)
# Issue 21's set (`--issue21`): the mixin on MemoryStore beside the mixin and the drop-in on
# CookieStore (and the no-session app every share is taken of).
ISSUE21_VARIANTS = (
    "none",
    "tornsession-mixin-memory",
    "tornsession-mixin-cookie",
    "tornsession-cookie",
)
# Issue 22's set (`--issue22`): the mixin on MemoryStore with its metrics on and off.
ISSUE22_VARIANTS = ("none", "tornsession-mixin-memory", *NO_METRICS_VARIANTS)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- setup -------------------------------------------------------------------------------------


def install_system_deps() -> None:
    """wrk, redis-server and memcached from Debian's packages, only when missing."""
    missing = [
        package
        for binary, package in (
            ("wrk", "wrk"),
            ("redis-server", "redis-server"),
            ("memcached", "memcached"),
        )
        if shutil.which(binary) is None
    ]
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )
    for service in ("redis-server", "memcached"):  # the packages start daemons; we start our own
        subprocess.run([*sudo, "service", service, "stop"], capture_output=True, check=False)


def peers_python() -> str:
    """bench/.venv-peers's python, made (or updated) with the pinned peers and our Tornado."""
    python = PEERS_VENV / "bin" / "python"
    wanted = (BENCH / "requirements-peers.txt").read_text() + f"tornado=={tornado.version}\n"
    stamp = PEERS_VENV / "installed-requirements.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    log(f"making {PEERS_VENV.relative_to(ROOT)} (torndsession, pycket, tornado {tornado.version})")
    venv.create(PEERS_VENV, with_pip=True, clear=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(wanted)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", f.name], check=True)
    os.unlink(f.name)
    stamp.write_text(wanted)
    return str(python)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "tornado": tornado.version,
        "wrk": " ".join(wrk_version[:2]),
        "redis": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "memcached": subprocess.run(
            ["memcached", "-V"], capture_output=True, text=True
        ).stdout.strip(),
        "kernel": platform.release(),
    }


# --- HTTP helpers ------------------------------------------------------------------------------


def http_get(port: int, path: str, cookie: str = "") -> tuple[int, bytes, list[str]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, response.read(), response.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def cookie_header(set_cookies: list[str]) -> str:
    """Set-Cookie headers as the Cookie header a browser would send back."""
    jar: SimpleCookie = SimpleCookie()
    for header in set_cookies:
        jar.load(header)
    return "; ".join(f"{name}={morsel.coded_value}" for name, morsel in jar.items())


def browser_cookie() -> str:
    """A Cookie header like a browser's with a new tornsession session (its two signed cookies,
    366 bytes, the issue's "330-byte Cookie header"): what NONE_WITH_COOKIE is sent."""
    session_id = tornado.web.create_signed_value(SECRET, "session_id", os.urandom(16).hex())
    digest = tornado.web.create_signed_value(SECRET, "hmac_digest", os.urandom(32).hex())
    return f'session_id="{session_id.decode()}"; hmac_digest="{digest.decode()}"'


def new_session_cookie(port: int, variant: str = "") -> str:
    """A first /write request's Set-Cookie headers as a Cookie header."""
    if variant == NONE_WITH_COOKIE:
        return browser_cookie()
    status, _, set_cookies = http_get(port, "/write")
    if status != 200:
        raise RuntimeError(f"port {port}: /write answered {status}")
    return cookie_header(set_cookies)


def new_session_cookies(
    port: int, count: int, path: Path, has_session: bool, variant: str = ""
) -> None:
    """``count`` new sessions, one /write each on one keep-alive connection, their Cookie
    headers one per line in ``path`` (the no-session app sets none: empty lines; the
    cookies-only one the same cookies every time; NONE_WITH_COOKIE is sent browser_cookie()s)."""
    if variant == NONE_WITH_COOKIE:
        path.write_text("\n".join(browser_cookie() for _ in range(count)) + "\n")
        return
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    lines = []
    try:
        for _ in range(count):
            conn.request("GET", "/write")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"port {port}: /write answered {response.status}")
            lines.append(cookie_header(response.headers.get_all("Set-Cookie") or []))
            if response.will_close:
                conn.close()
    finally:
        conn.close()
    if has_session and len(set(lines)) != len(lines):
        raise RuntimeError(f"port {port}: {count} new sessions gave repeated cookies")
    path.write_text("\n".join(lines) + "\n")


def sum_of_counters(port: int, cookie_file: Path) -> int:
    """The counters of all sessions in ``cookie_file``, added up (one keep-alive connection)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    total = 0
    try:
        for line in cookie_file.read_text().splitlines():
            conn.request("GET", "/read", headers={"Cookie": line})
            response = conn.getresponse()
            text = response.read().decode()
            if response.status != 200:
                raise RuntimeError(f"port {port}: /read answered {response.status}")
            total += int(text) if text.isdigit() else 0
            if response.will_close:
                conn.close()
    finally:
        conn.close()
    return total


def read_counter(port: int, cookie: str) -> int:
    status, body, _ = http_get(port, "/read", cookie)
    if status != 200:
        raise RuntimeError(f"port {port}: /read answered {status}")
    text = body.decode()
    return int(text) if text.isdigit() else 0


def run_wrk(
    port: int, path: str, cookie: str, seconds: int, cookie_file: Path | None = None
) -> dict[str, Any]:
    """wrk on one session (``cookie``), or cycling through the sessions in ``cookie_file``."""
    lua = LUA if cookie_file is None else LUA_MANY
    argv = ["wrk", "-c8", f"-t{WRK_THREADS}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua)]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    argv.append(f"http://{HOST}:{port}{path}")
    if cookie_file is not None:
        argv += ["--", str(cookie_file), str(WRK_THREADS)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# --- the parts ---------------------------------------------------------------------------------


class Apps:
    """One bench/app.py process per variant, all started up front and idle between turns."""

    def __init__(
        self,
        variants: list[str],
        pythons: dict[str, str],
        redis: Process,
        mc: Process,
        tmp: Path,
    ):
        self.procs: dict[str, Process] = {}
        self.logs: list[Any] = []
        try:
            for variant in variants:
                python = pythons.get(variant, sys.executable)
                port = free_port()
                data = tmp / variant
                data.mkdir()
                argv = [python, "-m", "bench.app", "--variant", variant, "--port", str(port)]
                argv += ["--redis-port", str(redis.port), "--memcached-port", str(mc.port)]
                argv += ["--data-dir", str(data)]
                self.procs[variant] = Process(variant, argv, port, ROOT)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def measure_variant(
    variant: str, port: int, seconds: int, has_session: bool, cookie_file: Path | None
) -> dict[str, Any]:
    """Writing then reading handler on one new session (lost increments of the writing run),
    then, with ``cookie_file``, writing and reading cycling through its many sessions (lost
    increments: wrk's completed writes minus the growth of all the sessions' counters)."""
    cookie = new_session_cookie(port, variant)
    before = read_counter(port, cookie)
    write = run_wrk(port, "/write", cookie, seconds)
    time.sleep(0.2)  # requests wrk gave up on at the end may still be in the server
    after = read_counter(port, cookie)
    write["counter_before"] = before
    write["counter_after"] = after
    counted = has_session and variant not in NO_COUNTER
    write["lost"] = max(0, write["requests"] - (after - before)) if counted else 0
    read = run_wrk(port, "/read", cookie, seconds)
    result = {"write": write, "read": read}
    if cookie_file is not None:
        before = sum_of_counters(port, cookie_file) if counted else 0
        many_write = run_wrk(port, "/write", "", seconds, cookie_file)
        if counted:
            time.sleep(0.2)  # as above
            growth = sum_of_counters(port, cookie_file) - before
            many_write["lost"] = max(0, many_write["requests"] - growth)
        else:
            many_write["lost"] = 0
        result["many_write"] = many_write
        result["many_read"] = run_wrk(port, "/read", "", seconds, cookie_file)
    return result


def end_to_end(args: argparse.Namespace, apps: Apps, tmp: Path) -> dict[str, Any]:
    variants = list(apps.procs)
    log(f"warming up {len(variants)} variants")
    cookie_files: dict[str, Path | None] = {}
    for variant in variants:
        port = apps.procs[variant].port
        cookie = new_session_cookie(port, variant)
        run_wrk(port, "/write", cookie, 1)
        run_wrk(port, "/read", cookie, 1)
        cookie_files[variant] = None
        if args.sessions:
            started = time.monotonic()
            path = tmp / f"{variant}.cookies"
            new_session_cookies(port, args.sessions, path, variant not in NO_SESSION, variant)
            cookie_files[variant] = path
            log(f"{variant}: {args.sessions} sessions in {time.monotonic() - started:.1f} s")
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        # round robin, starting one further each round, so no variant always runs first
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        this: dict[str, Any] = {}
        for variant in order:
            has_session = variant not in NO_SESSION
            this[variant] = measure_variant(
                variant, apps.procs[variant].port, args.seconds, has_session, cookie_files[variant]
            )
            m = this[variant]
            w, rd = m["write"], m["read"]
            many = (
                f"  many: write {m['many_write']['rps']:6.0f} read {m['many_read']['rps']:6.0f}"
                if "many_write" in m
                else ""
            )
            log(
                f"round {r + 1}/{args.rounds} {variant:27} write {w['rps']:6.0f} req/s "
                f"(lost {w['lost']}) read {rd['rps']:6.0f}{many}"
            )
        rounds.append(this)
    return {
        "rounds": rounds,
        "seconds": args.seconds,
        "sessions": args.sessions,
        "summary": summarize(rounds, variants),
        "not_available": args.not_available,
    }


def summarize(rounds: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in variants:
        row: dict[str, Any] = {}
        kinds = ("write", "read", "many_write", "many_read")
        for kind in (k for k in kinds if k in rounds[0][variant]):
            rps = [r[variant][kind]["rps"] for r in rounds]
            base = [r["none"][kind]["rps"] for r in rounds] if "none" in variants else rps
            ratios = [a / b for a, b in zip(rps, base, strict=True)]
            errors = sum(
                r[variant][kind][k]
                for r in rounds
                for k in ("connect", "read", "write", "status", "timeout")
            )
            row[kind] = {
                "rps_median": statistics.median(rps),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "errors": errors,
                "non2xx": sum(r[variant][kind]["status"] for r in rounds),
            }
        row["lost"] = sum(r[variant]["write"]["lost"] for r in rounds)
        row["writes"] = sum(r[variant]["write"]["requests"] for r in rounds)
        if "many_write" in rounds[0][variant]:
            row["many_lost"] = sum(r[variant]["many_write"].get("lost", 0) for r in rounds)
            row["many_writes"] = sum(r[variant]["many_write"]["requests"] for r in rounds)
        out[variant] = row
    return out


def json_of(module: str, *args: str, python: str = sys.executable, timeout: float) -> Any:
    """Runs ``python -m module --json ARGS`` here; what its last output line says (JSON)."""
    argv = [python, "-m", module, "--json", *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_process(args: argparse.Namespace, peers: str, redis: Process, mc: Process) -> Any:
    results: dict[str, Any] = {}
    for python, impls in (
        (sys.executable, [i for i in IMPLS if i not in PEER_VARIANTS]),
        (peers, [i for i in IMPLS if i in PEER_VARIANTS]),
    ):
        argv = ["--seconds", str(args.timeit_seconds)]
        argv += ["--redis-port", str(redis.port), "--memcached-port", str(mc.port)]
        for impl in impls:
            argv += ["--impl", impl]
        log(f"in process: {' '.join(impls)}")
        results.update(json_of("bench.inprocess", *argv, python=python, timeout=900))
    return results


def scale(redis: Process) -> Any:
    log("scale: 1,000,000 sessions in MemoryStore and Redis, 100,000 in a FileStore")
    return json_of("bench.scale", "--redis-port", str(redis.port), timeout=3600)


def profile(args: argparse.Namespace) -> Any:
    log("profiling tornsession-memory with cProfile")
    return json_of("bench.profile", "--seconds", str(args.seconds), timeout=600)


def unavailable(variants: list[str], pythons: dict[str, str], tmp: Path) -> dict[str, str]:
    """The variants whose interpreter's tornsession lacks what they need (bench.app --check
    exits NOT_AVAILABLE_STATUS), with its reason: left out of the run, reported as such."""
    out: dict[str, str] = {}
    for variant in variants:
        if variant.removeprefix("old-") not in (
            *COMPACT_VARIANTS,
            *COOKIE_VARIANTS,
            *NO_METRICS_VARIANTS,
        ):
            continue
        argv = [pythons.get(variant, sys.executable), "-m", "bench.app", "--variant", variant]
        argv += ["--port", "0", "--check", "--data-dir", str(tmp)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if done.returncode == NOT_AVAILABLE_STATUS:
            out[variant] = done.stdout.strip().removeprefix("not available: ")
            log(f"{variant}: not available ({out[variant]})")
        elif done.returncode != 0:
            raise RuntimeError(f"{variant}: bench.app --check failed:\n{done.stderr}")
    return out


def old_tornsession(python: str) -> dict[str, str]:
    """The version and Tornado of the earlier tornsession under ``--old-python``."""
    code = "import tornado, tornsession; print(tornsession.__version__, tornado.version)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    version, tornado_version = done.stdout.split()
    if tornado_version != tornado.version:
        raise SystemExit(
            f"--old-python has Tornado {tornado_version}, this interpreter {tornado.version}: "
            "install the same version there so only tornsession differs"
        )
    return {"python": python, "version": version}


def save(part: str, data: Any, meta: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {**meta, "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    (RESULTS / f"{part}.json").write_text(json.dumps({"meta": meta, "data": data}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, no profile/scale")
    parser.add_argument("--rounds", type=int, default=3, help="round robin rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk measurement")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: all")
    parser.add_argument(
        "--sessions",
        type=int,
        default=2000,
        help="sessions of the many-session workload (default 2000; 0: one-session only)",
    )
    parser.add_argument(
        "--issue20",
        action="store_true",
        help="issue 20's variants (and their old twins with --old-python), 2000 sessions, 3 rounds",
    )
    parser.add_argument(
        "--issue21",
        action="store_true",
        help="mixin MemoryStore, mixin CookieStore and drop-in CookieStore side by side",
    )
    parser.add_argument(
        "--issue22",
        action="store_true",
        help="mixin MemoryStore with its metrics on and off side by side",
    )
    parser.add_argument("--no-scale", action="store_true", help="skip the 1M-session part")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile profile")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument(
        "--old-python",
        help="an interpreter with an earlier tornsession: adds the old-tornsession-* variants",
    )
    parser.add_argument(
        "--old-label", default="old", help="what the earlier tornsession is, for the report"
    )
    args = parser.parse_args()
    args.timeit_seconds = 0.2
    if args.quick:
        args.rounds, args.seconds, args.timeit_seconds = 1, 1, 0.05
        args.no_profile = args.no_scale = True
    variants = args.variant or [v for v in VARIANTS if args.old_python or v not in OLD_VARIANTS]
    if args.issue20 and not args.variant:
        old_twins = [f"old-{v}" for v in ISSUE20_VARIANTS if f"old-{v}" in OLD_VARIANTS]
        variants = [*ISSUE20_VARIANTS, *(old_twins if args.old_python else [])]
    if sum((args.issue20, args.issue21, args.issue22)) > 1:
        parser.error("--issue20, --issue21 and --issue22 are separate sets: give one")
    if args.issue21 and not args.variant:
        variants = list(ISSUE21_VARIANTS)
    if args.issue22 and not args.variant:
        variants = list(ISSUE22_VARIANTS)
    if "none" not in variants:
        variants.insert(0, "none")
    if not args.old_python and set(variants) & set(OLD_VARIANTS):
        parser.error("the old-tornsession-* variants need --old-python")
    started = time.monotonic()
    install_system_deps()
    peers = peers_python()
    pythons = {v: peers for v in PEER_VARIANTS}
    old: dict[str, str] = {}
    if args.old_python:
        old = {**old_tornsession(args.old_python), "label": args.old_label}
        pythons.update({v: args.old_python for v in OLD_VARIANTS})
    meta: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(["python", "-m", "bench.run", *sys.argv[1:]]),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "old": old,
    }
    with tempfile.TemporaryDirectory(prefix="tornsession-bench-") as tmp_name:
        tmp = Path(tmp_name)
        args.not_available = unavailable(variants, pythons, tmp)
        variants = [v for v in variants if v not in args.not_available]
        redis = start_redis(tmp)
        mc = start_memcached(tmp)
        apps: Apps | None = None
        try:
            log(f"redis on {redis.port}, memcached on {mc.port}")
            apps = Apps(variants, pythons, redis, mc, tmp)
            save("end_to_end", end_to_end(args, apps, tmp), meta)
            apps.stop()
            apps = None
            if not args.no_profile:
                save("profile", profile(args), meta)
            save("in_process", in_process(args, peers, redis, mc), meta)
            if not args.no_scale:
                save("scale", scale(redis), meta)
        finally:
            if apps is not None:
                apps.stop()
            redis.stop()
            mc.stop()
    elapsed = time.monotonic() - started
    log(f"done in {elapsed / 60:.1f} min")
    if not args.no_report:
        from bench.report import write_report

        write_report(ROOT / "BENCHMARKS.md", RESULTS, elapsed)
        log("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
