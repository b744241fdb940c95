"""App servers in their own processes (the apps under tests/apps), spoken to over real HTTP on
loopback; a pytest plugin loaded by tests/conftest.py for ``start_app_process``."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from bench.loopback import HOST, listening_port

REPO = Path(__file__).resolve().parent.parent.parent
#: What an app process imports from: the repository (``tests.apps.*``, ``bench``) and tests/
#: (``support.*``, as the tests import it).
APP_PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / "tests")])


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
        env = dict(os.environ, PYTHONPATH=APP_PYTHONPATH)
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

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()
        self.process = None

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=10)


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


class Stoppable(Protocol):
    def stop(self) -> None: ...


App = TypeVar("App", bound=Stoppable)


def stopped_after(start: Callable[..., App]) -> Iterator[Callable[..., App]]:
    """A fixture's body: ``start(...)`` for the test, every app it started stopped after."""
    with ExitStack() as started:

        def start_one(*args: Any) -> App:
            app = start(*args)
            started.callback(app.stop)
            return app

        yield start_one


@pytest.fixture
def start_app_process() -> Iterator[Callable[..., AppProcess]]:
    """``start_app_process(MODULE, *args)``: an app module started for this test, stopped after."""
    yield from stopped_after(lambda module, *args: AppProcess(module, *args).start())


@pytest.fixture
def start_outage_app() -> Iterator[Callable[..., RunningApp]]:
    """``start_outage_app(*args)``: tests/apps/outage_app.py for this test, stopped after."""
    yield from stopped_after(RunningApp)
