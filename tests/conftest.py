"""Shared fixtures: app servers in their own processes, spoken to over real HTTP on loopback."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from bench.loopback import free_port as free_port  # for the tests that import it from here
from bench.loopback import listening_port

REPO = Path(__file__).resolve().parent.parent

# Real Redis and Memcached servers for the store tests (tests/servers.py).
pytest_plugins = ["servers"]

# The apps the tests start use short throwaway secrets on purpose (the seed app keeps its own);
# the warning they give is checked in tests/test_options.py.
os.environ["PYTHONWARNINGS"] = "ignore:a session secret is shorter than 32 bytes"


class AppProcess:
    """A Python app module run as `python -m MODULE --port 0 ...` until stopped: the app binds
    a port the system picks and prints it ("listening on PORT"), so no other server can answer
    in its place."""

    def __init__(self, module: str, *args: str) -> None:
        self.module = module
        self.args = args
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> AppProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", "0", *self.args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = listening_port(self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()
        self.process = None

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class RunningApp:
    """tests/apps/outage_app.py in its own process, its output read continuously (a full pipe
    would block the app) into ``lines``."""

    def __init__(self, *args: str) -> None:
        self.app = AppProcess("tests.apps.outage_app", *args).start()
        assert self.app.process is not None and self.app.process.stdout is not None
        self.port = self.app.port
        self.pid = self.app.process.pid
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stdout = self.app.process.stdout if self.app.process is not None else None
        assert stdout is not None
        try:
            for line in stdout:
                self.lines.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        if self.app.process is not None:
            self.app.process.kill()
            self.app.process.wait(timeout=10)
        self.stop()

    def stop(self) -> None:
        process = self.app.process
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        self.reader.join(10)
        self.app.stop()


class Browser:
    """One visitor: a keep-alive connection and a cookie jar, as a browser keeps them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.last_set_cookie: list[str] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode()
        self.last_set_cookie = response.headers.get_all("Set-Cookie") or []
        for header in self.last_set_cookie:
            for name, morsel in SimpleCookie(header).items():
                if (morsel["expires"] and "1970" in morsel["expires"]) or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.coded_value
        return response.status, text

    def get(self, path: str) -> tuple[int, str]:
        return self.request("GET", path)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    """Collects Browser objects made in a test and closes their connections afterwards."""
    made: list[Browser] = []
    yield made
    for browser in made:
        browser.close()


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


@pytest.fixture
def seed_app(session_dir: Path) -> Iterator[AppProcess]:
    app = AppProcess("tests.apps.seed_app", "--session-dir", str(session_dir)).start()
    yield app
    app.stop()


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


# What `make check` leaves out (`-m "not slow"`): soaks, crash and kill runs, the browser, long
# fuzz runs, and tests that run for tens of seconds by design. `make test` runs every one.
SLOW_FILES = {
    "test_browser.py",
    "test_crash_consistency.py",
    "test_kill_soak_short.py",
    "test_outage_soak.py",
    "test_soak.py",
}
SLOW_TESTS = {
    "test_the_turn_table_is_empty_after_100000_sessions_and_memory_is_back",
    "test_the_index_stays_bounded_after_10000_logins_with_expiry",
    "test_saved_json_values_load_back_equal",
    "test_saved_values_including_any_float_load_back_with_the_same_shape",
    "test_genuine_cookies_among_arbitrary_others_keep_the_session",
    "test_a_long_poll_held_for_30_s_never_blocks_its_visitors_posts",
    "test_every_python_example_in_the_docs_runs",
    "test_a_users_suite_gets_a_client_for_its_app_fixture",
    "test_a_users_suite_gets_the_fixtures_without_any_conftest",
    "test_the_original_module_loses_increments_in_the_same_test",
    "test_genuine_values_with_junk_appended_never_disagree",
    "test_shared_references_that_would_explode_in_json_are_refused",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
