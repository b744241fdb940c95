"""Kill soak (`make soak`, issue 18): many visitors through `SessionMixin` over real HTTP while
the store is SIGKILLed and restarted every N requests, on every store.

    python tests/kill_soak.py [--stores memory,file,sqlite,redis,memcached] [--requests 200000]
        [--sessions 20000] [--kill-every 20000] [--clients 16] [--json PATH]

(or as environment variables: KILL_SOAK_STORES, KILL_SOAK_REQUESTS, KILL_SOAK_SESSIONS,
KILL_SOAK_KILL_EVERY, KILL_SOAK_CLIENTS). The app is tests/apps/outage_app.py (GET /visit) in its
own process. What is killed:

- redis: a real redis-server with `appendonly yes`, `appendfsync always`, restarted on its port;
- memcached: a real memcached, restarted on its port (it starts empty: volatile);
- sqlite and file: the app process itself, restarted on the same files, stores `durable=True`;
- memory: the app process, which loses every session by design (volatile).

CLIENTS threads each hold one keep-alive connection and take turns over their own share of the
SESSIONS visitors (a cookie jar and a unique marker each), so one connection carries many
visitors' requests, and each visitor's requests are sequential. The app keeps the marker in a new
session and echoes the session's marker and counter. The client checks every 2xx answer:

- crossed: the marker is another visitor's;
- acknowledged writes lost: the counter is not above the last 2xx-acknowledged counter (a fresh
  session counts every acknowledged increment as lost); a counter more than one above it is
  allowed only by as many failed requests since (their write landed, their answer did not),
  beyond that it is "unexplained". On memory and memcached a fresh session after a kill is the
  design ("n/a (volatile)"); a loss with no kill in between still counts;
- hung: no answer within HANG seconds (the socket waits 30 s);
- non-2xx (a status, or no answer: 0), split by whether the request overlapped a kill window:
  from just before the SIGKILL until the restarted store serves (Redis: `loading:0`; the app:
  it prints its port). After a failure in a window the client waits for the restart.

RSS of the app process: once warm (WARMUP requests into the first life) and the peak of samples
taken just before each kill and at the end (the app-killed stores: each life's last moment).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # bench.loopback, run as a script

import redis
from support.processes import RunningApp, rss_mb
from support.servers import HOST, ServerProcess, launch, memcached_argv, redis_maker

from bench.loopback import memcached_pid

STORES = ("memory", "file", "sqlite", "redis", "memcached")
VOLATILE = {"memory", "memcached"}  # a restart empties them by design
APP_KILLED = {"memory", "file", "sqlite"}  # the app process is what is killed
HANG = 5.0
SOCKET_TIMEOUT = 30.0
STORE_TIMEOUT = 1.0  # the app's connect_timeout and timeout for Redis and memcached
READY_TIMEOUT = 60.0


@dataclass
class Config:
    requests: int = 200_000
    sessions: int = 20_000
    kill_every: int = 20_000
    clients: int = 16

    @property
    def warmup(self) -> int:
        return min(2_000, self.kill_every // 2)


@dataclass
class Report:
    store: str
    requests: int = 0
    sessions_used: int = 0
    kills: int = 0
    seconds: float = 0.0
    crossed: int = 0
    lost: int = 0  # acknowledged increments missing at a later read
    lost_volatile: int = 0  # memory and memcached: missing after a kill (by design)
    unexplained: int = 0  # a counter above the last acknowledged + the failed requests since
    hung: int = 0
    non2xx_in_window: int = 0
    non2xx_outside: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "status in|out" -> count
    max_latency: float = 0.0
    max_window: float = 0.0  # longest kill-to-serving time
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    outside_examples: list[str] = field(default_factory=list)

    @property
    def volatile(self) -> bool:
        return self.store in VOLATILE

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rss_ratio(self) -> float:
        return self.rss_peak_mb / self.rss_start_mb if self.rss_start_mb else 0.0

    def lines(self) -> list[str]:
        lost = f"{self.lost}"
        if self.volatile:
            lost = f"n/a (volatile; {self.lost_volatile} reset by kills, {self.lost} otherwise)"
        return [
            f"== {self.store}: {self.requests:,} requests, {self.sessions_used:,} sessions, "
            f"{self.kills} kills, {self.seconds:.1f} s, {self.rate:,.0f} req/s",
            f"   crossed sessions:          {self.crossed}",
            f"   acknowledged writes lost:  {lost}",
            f"   unexplained counters:      {self.unexplained}",
            f"   hung (> {HANG:.0f} s):             {self.hung}  (max latency "
            f"{self.max_latency:.3f} s)",
            f"   non-2xx in kill windows:   {self.non2xx_in_window}  (longest window "
            f"{self.max_window:.2f} s)",
            f"   non-2xx outside them:      {self.non2xx_outside}",
            f"   statuses:                  {dict(sorted(self.statuses.items()))}",
            f"   app RSS:                   {self.rss_start_mb:.1f} MB warm -> "
            f"{self.rss_end_mb:.1f} MB end, peak {self.rss_peak_mb:.1f} MB "
            f"({self.rss_ratio:.2f}x)",
            *(f"   outside a window: {e}" for e in self.outside_examples),
        ]


class Target:
    """The app process and, for Redis and memcached, the store server; `kill_and_restart()`
    SIGKILLs whichever the store's run kills and waits until it serves again."""

    def __init__(self, store: str, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self.server: ServerProcess | None = None
        args = ["--store", store, "--timeout", str(STORE_TIMEOUT)]
        if store == "redis":
            aof = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)]
            self.server = launch(redis_maker(need("redis-server"), folder, *aof))
            self.check_redis_persistence()
            args += ["--url", f"redis://{HOST}:{self.server.port}/0"]
        elif store == "memcached":
            binary = need("memcached")
            self.server = launch(
                lambda port: ServerProcess(
                    memcached_argv(binary, port), port, folder, memcached_pid
                )
            )
            args += ["--servers", self.server.address]
        elif store == "file":
            args += ["--path", str(folder / "sessions"), "--durable"]
        elif store == "sqlite":
            args += ["--path", str(folder / "sessions.db"), "--durable"]
        self.args = args
        self.app = RunningApp(*args)

    def check_redis_persistence(self) -> None:
        assert self.server is not None
        config = redis.Redis(host=HOST, port=self.server.port).config_get("append*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "always", config

    def wait_redis_loaded(self) -> None:
        """Until the restarted Redis has replayed its append-only file (`loading:0`)."""
        assert self.server is not None
        client = redis.Redis(host=HOST, port=self.server.port, socket_timeout=5)
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                try:
                    if client.info("persistence")["loading"] == 0:
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("Redis did not finish loading its append-only file")
                time.sleep(0.01)
        finally:
            client.close()

    def kill_and_restart(self) -> None:
        if self.server is None:
            self.app.kill()
            self.app = RunningApp(*self.args)
            return
        self.server.kill()
        self.server.start()
        if self.store == "redis":
            self.wait_redis_loaded()
            self.check_redis_persistence()

    def stop(self) -> None:
        self.app.stop()
        if self.server is not None:
            self.server.kill()


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} is not installed (scripts/install-system-deps.sh installs it)")
    return path


class Run:
    """What the clients and the kill thread share."""

    def __init__(self, config: Config, target: Target, progress: bool = False) -> None:
        self.config = config
        self.progress = progress  # a line per kill
        self.target = target
        self.lock = threading.Lock()
        self.sent = 0  # requests claimed by clients
        self.done = 0  # requests answered or failed
        self.kills = 0  # kills begun: read at each request's start
        self.up = threading.Event()  # cleared from just before a kill until it serves again
        self.up.set()
        self.kill_due = threading.Event()
        self.finished = threading.Event()
        self.windows: list[tuple[float, float]] = []  # (before the SIGKILL, serving again)
        self.rss_samples: list[float] = []
        self.rss_start = 0.0
        self.window_start = 0.0  # the open window's start, while `up` is clear
        self.started = time.monotonic()
        self.error: BaseException | None = None

    def claim(self) -> bool:
        with self.lock:
            if self.sent >= self.config.requests or self.error is not None:
                return False
            self.sent += 1
            return True

    def complete(self) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if done == self.config.warmup:
            self.rss_start = rss_mb(self.target.app.pid)
        if done % self.config.kill_every == 0 and done < self.config.requests:
            self.kill_due.set()

    def in_window(self, started: float, ended: float) -> bool:
        # `up` first: the kill thread appends a window before it sets `up`.
        open_window = [] if self.up.is_set() else [(self.window_start, float("inf"))]
        windows = open_window + list(self.windows)
        return any(started < end and ended > start for start, end in windows)

    def killer(self) -> None:
        """Kills and restarts the target each time `complete()` says it is due."""
        try:
            while True:
                self.kill_due.wait()
                self.kill_due.clear()
                if self.finished.is_set():
                    return
                self.rss_samples.append(rss_mb(self.target.app.pid))
                self.window_start = time.monotonic()
                self.up.clear()
                with self.lock:
                    self.kills += 1
                self.target.kill_and_restart()
                self.windows.append((self.window_start, time.monotonic()))
                self.up.set()
                if self.progress:
                    elapsed = self.window_start - self.started
                    print(
                        f"   {self.target.store}: kill {self.kills} after {self.done:,} requests, "
                        f"{self.done / elapsed:,.0f} req/s, back in "
                        f"{self.windows[-1][1] - self.window_start:.2f} s",
                        flush=True,
                    )
        except BaseException as error:  # the clients stop; run_store raises it
            self.error = error
            self.up.set()


class Visitor:
    """One session: its cookies, its marker, and what the client has seen acknowledged."""

    __slots__ = ("acked", "acked_life", "cookies", "failed_since", "marker")

    def __init__(self, marker: str) -> None:
        self.cookies: dict[str, str] = {}
        self.marker = marker
        self.acked = 0  # the last 2xx-acknowledged counter
        self.acked_life = 0  # kills begun when that request started
        self.failed_since = 0  # failed requests since then (their writes may have landed)


class Connection:
    """A keep-alive HTTP/1.1 connection for GET requests to the app.

    Hand-written rather than http.client: that costs ~1 ms of this process's CPU per request
    (header parsing through the email package, SimpleCookie), which capped the soak at ~800
    requests per second on 2 cores; this is a tenth of it. Enough for Tornado's answers: a
    status line, headers, a Content-Length body.
    """

    def __init__(self, app: RunningApp) -> None:
        self.app = app  # the app process it was opened to
        self.socket = socket.create_connection((HOST, app.port), timeout=SOCKET_TIMEOUT)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str, cookie: str) -> tuple[int, bytes, list[str]]:
        """(status, body, Set-Cookie values); OSError when the connection fails or closes."""
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n"
        if cookie:
            request += f"Cookie: {cookie}\r\n"
        self.socket.sendall((request + "\r\n").encode())
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.receive()
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = self.buffer[end + 4 :]
        status = int(head[0].split(" ", 2)[1])
        length = 0
        set_cookies = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "set-cookie":
                set_cookies.append(value.strip())
        while len(self.buffer) < length:
            self.receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body, set_cookies

    def receive(self) -> None:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionResetError("the app closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.socket.close()


class Client:
    """One keep-alive connection, taking turns over its own visitors."""

    def __init__(self, run: Run, report: Report, visitors: list[Visitor]) -> None:
        self.run = run
        self.report = report
        self.visitors = visitors
        self.connection: Connection | None = None
        self.counts: Counter[str] = Counter()
        self.outside: list[str] = []
        self.max_latency = 0.0

    def loop(self) -> None:
        try:
            turn = 0
            while self.run.claim():
                self.visit(self.visitors[turn % len(self.visitors)])
                turn += 1
        finally:
            if self.connection is not None:
                self.connection.close()

    def request(self, visitor: Visitor) -> tuple[int, bytes, list[str]]:
        if self.connection is None:
            self.connection = Connection(self.run.target.app)
        cookie = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
        return self.connection.get(f"/visit?m={visitor.marker}", cookie)

    def visit(self, visitor: Visitor) -> None:
        run = self.run
        life = run.kills
        started = time.monotonic()
        to_killed_app = False
        try:
            status, body, set_cookies = self.request(visitor)
        except OSError:
            if self.connection is not None:
                # A connection to an app process since killed fails because of that kill,
                # whenever the client gets to use it.
                to_killed_app = self.connection.app is not run.target.app
                self.connection.close()
            self.connection = None  # reconnects, to the restarted app's port
            status, body, set_cookies = 0, b"", []
        ended = time.monotonic()
        latency = ended - started
        self.max_latency = max(self.max_latency, latency)
        if latency > HANG:
            self.counts["hung"] += 1
        if not 200 <= status < 300:
            visitor.failed_since += 1
            inside = to_killed_app or run.in_window(started, ended)
            self.counts[f"{status} {'in' if inside else 'out'}"] += 1
            if not inside and len(self.outside) < 5:
                self.outside.append(f"{status} after {latency:.3f} s: {body[:120]!r}")
            run.complete()
            if not run.up.is_set():
                run.up.wait(READY_TIMEOUT)  # the next request goes after the restart
            return
        for header in set_cookies:
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if value in ("", '""') or "1970" in attributes:  # Tornado's clear_cookie
                visitor.cookies.pop(name, None)
            else:
                visitor.cookies[name] = value
        self.counts[f"{status} {'in' if run.in_window(started, ended) else 'out'}"] += 1
        self.check(visitor, json.loads(body), life, run.kills)
        run.complete()

    def check(self, visitor: Visitor, answer: dict[str, Any], life: int, life_end: int) -> None:
        """`life` and `life_end`: kills begun when the request started and when it ended."""
        if answer["marker"] != visitor.marker:
            self.counts["crossed"] += 1
            return
        count = int(answer["count"])
        if count <= visitor.acked:
            # Volatile: fresh by design if a kill began between the acknowledged request's start
            # and this one's end.
            if self.report.volatile and answer["fresh"] and life_end > visitor.acked_life:
                self.counts["lost_volatile"] += visitor.acked
            else:
                self.counts["lost"] += visitor.acked - count + 1
        elif count > visitor.acked + 1 + visitor.failed_since:
            self.counts["unexplained"] += count - visitor.acked - 1 - visitor.failed_since
        visitor.acked = count
        visitor.acked_life = life
        visitor.failed_since = 0


def run_store(store: str, config: Config, folder: Path, progress: bool = False) -> Report:
    """One store's soak; the report of what the clients saw (`progress`: a line per kill)."""
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(store)
    target = Target(store, folder)
    run = Run(config, target, progress)
    tag = secrets.token_hex(4)
    visitors = [Visitor(f"{store}-{tag}-{i}") for i in range(config.sessions)]
    clients = [Client(run, report, visitors[i :: config.clients]) for i in range(config.clients)]
    killer = threading.Thread(target=run.killer, daemon=True)
    killer.start()
    started = run.started = time.monotonic()
    threads = [threading.Thread(target=c.loop) for c in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report.seconds = time.monotonic() - started
        run.rss_samples.append(rss_mb(target.app.pid))
        report.rss_end_mb = run.rss_samples[-1]
    finally:
        run.finished.set()
        run.kill_due.set()
        killer.join(READY_TIMEOUT)
        target.stop()
    if run.error is not None:
        raise RuntimeError(f"{store}: the kill thread failed") from run.error
    counts: Counter[str] = Counter()
    for client in clients:
        counts.update(client.counts)
        report.outside_examples.extend(client.outside[: 5 - len(report.outside_examples)])
        report.max_latency = max(report.max_latency, client.max_latency)
    report.requests = run.done
    report.sessions_used = min(config.sessions, run.done)
    report.kills = len(run.windows)
    report.crossed = counts.pop("crossed", 0)
    report.lost = counts.pop("lost", 0)
    report.lost_volatile = counts.pop("lost_volatile", 0)
    report.unexplained = counts.pop("unexplained", 0)
    report.hung = counts.pop("hung", 0)
    report.statuses = dict(counts)
    for key, n in counts.items():
        status, where = key.split()
        if not status.startswith("2"):
            if where == "in":
                report.non2xx_in_window += n
            else:
                report.non2xx_outside += n
    report.max_window = max((end - start for start, end in run.windows), default=0.0)
    report.rss_start_mb = run.rss_start
    report.rss_peak_mb = max(run.rss_samples)
    return report


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Config()
    parser.add_argument("--stores", default=os.environ.get("KILL_SOAK_STORES", ",".join(STORES)))
    parser.add_argument(
        "--requests", type=int, default=env_int("KILL_SOAK_REQUESTS", default.requests)
    )
    parser.add_argument(
        "--sessions", type=int, default=env_int("KILL_SOAK_SESSIONS", default.sessions)
    )
    parser.add_argument(
        "--kill-every", type=int, default=env_int("KILL_SOAK_KILL_EVERY", default.kill_every)
    )
    parser.add_argument(
        "--clients", type=int, default=env_int("KILL_SOAK_CLIENTS", default.clients)
    )
    parser.add_argument("--dir", help="working folder (default: a new one in /tmp)")
    parser.add_argument("--json", help="also write the reports here")
    args = parser.parse_args()
    config = Config(args.requests, args.sessions, args.kill_every, args.clients)
    stores = [s for s in args.stores.split(",") if s]
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}; known: {', '.join(STORES)}")
    import tempfile

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kill-soak-"))
    print(f"kill soak: {asdict(config)}, warm-up {config.warmup}, folder {base}", flush=True)
    reports = []
    for store in stores:
        report = run_store(store, config, base / store, progress=True)
        reports.append(report)
        print("\n".join(report.lines()), flush=True)
    if args.json:
        out = [{**asdict(r), "rate": r.rate, "rss_ratio": r.rss_ratio} for r in reports]
        Path(args.json).write_text(json.dumps({"config": asdict(config), "stores": out}, indent=1))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
