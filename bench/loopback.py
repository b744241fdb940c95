"""Server processes on loopback ports that cannot be confused with each other.

A free port is found by binding port 0 and closing the socket, so two starts running at the same
time can pick the same port: one server then fails to bind and exits, and a check that only
connects to the port takes the other's server for its own. So a start here waits until the
process it started is alive and is the one answering: Redis names its pid in ``INFO server``
(``process_id``), memcached in ``stats`` (``pid``). On an early exit or a stranger answering, the
server is started again on a new port, a few times.

Standard library only; used by ``bench/servers.py`` and by the tests (``tests/support/servers.py``,
``tests/support/processes.py``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"
#: Starts on new ports before giving up.
ATTEMPTS = 5

#: The pid of the server answering on a port; OSError while nothing answers yet.
PidProbe = Callable[[int], int]


class ServerGone(RuntimeError):
    """The process started exited, or another process answers on its port."""


def free_port() -> int:
    """A loopback port free a moment ago (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _ask(port: int, command: bytes, done: Callable[[bytes], bool], timeout: float) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(command)
        reply = b""
        while not done(reply):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"port {port} closed the connection: {reply[:200]!r}")
            reply += chunk
        return reply


def _field(reply: bytes, prefix: bytes, port: int) -> int:
    for line in reply.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix) :])
    raise ConnectionError(f"no {prefix!r} in the answer on port {port}: {reply[:200]!r}")


def _redis_info_complete(reply: bytes) -> bool:
    header, sep, body = reply.partition(b"\r\n")
    if not sep:
        return False
    if not header.startswith(b"$"):
        return True  # an error (-LOADING ...): _field finds no pid, the caller asks again
    return len(body) >= int(header[1:]) + 2


def redis_pid(port: int, timeout: float = 1.0) -> int:
    """``process_id`` from ``INFO server`` of the Redis server on ``port``."""
    reply = _ask(port, b"INFO server\r\n", _redis_info_complete, timeout)
    return _field(reply, b"process_id:", port)


def memcached_pid(port: int, timeout: float = 1.0) -> int:
    """``pid`` from ``stats`` of the memcached server on ``port``."""
    reply = _ask(port, b"stats\r\n", lambda r: r.endswith((b"END\r\n", b"ERROR\r\n")), timeout)
    return _field(reply, b"STAT pid ", port)


def wait_until_serving(
    process: subprocess.Popen[bytes],
    port: int,
    probe: PidProbe | None = None,
    timeout: float = 20.0,
) -> None:
    """Returns once ``process`` is alive and answers on ``port``.

    With a ``probe``, the pid answering must be ``process``'s (else ServerGone); without one, a
    connection that succeeds is taken as the process's own while the process stays alive.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerGone(f"{process.args!r} exited with {process.returncode} (port {port})")
        try:
            if probe is None:
                socket.create_connection((HOST, port), timeout=0.2).close()
                answering = process.pid
            else:
                answering = probe(port)
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.args!r} does not answer on {HOST}:{port}") from None
            time.sleep(0.05)
            continue
        if answering != process.pid:
            raise ServerGone(f"pid {answering} answers on port {port}, not ours ({process.pid})")
        if process.poll() is None:
            return


def listening_port(process: subprocess.Popen[str]) -> int:
    """The port an app bound to ``--port 0`` prints in its line ``listening on PORT``.

    Lines before it (warnings) are skipped; when the app exits first, it is an error that quotes
    what the app printed.
    """
    assert process.stdout is not None
    printed: list[str] = []
    for line in process.stdout:
        if line.startswith("listening on "):
            return int(line.split()[-1])
        printed.append(line)
    process.wait(timeout=10)
    raise ServerGone(f"{process.args!r} exited with {process.returncode}: {''.join(printed)}")


class ServerProcess:
    """One server process on ``port``, checked with ``probe`` at every start; ``kill()`` ends it
    at once, ``stop()`` asks first, ``start()`` starts it again on the same port."""

    def __init__(
        self, argv: list[str], port: int, cwd: Path | None = None, probe: PidProbe | None = None
    ) -> None:
        self.argv = argv
        self.port = port
        self.cwd = cwd
        self.probe = probe
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until_serving(self.process, self.port, self.probe)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        assert self.process is not None, "not running"
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


S = TypeVar("S", bound=ServerProcess)


def launch(make: Callable[[int], S], pick_port: Callable[[], int] = free_port) -> S:
    """``make(port)`` started on a free port; on a new port while the start loses a port race."""
    failures: list[str] = []
    for _ in range(ATTEMPTS):
        server = make(pick_port())
        try:
            server.start()
        except ServerGone as error:
            failures.append(str(error))
            continue
        return server
    raise RuntimeError(f"no server after {ATTEMPTS} ports: " + "; ".join(failures))
