"""Redis, memcached and bench app processes on free loopback ports, for one benchmark run.

Redis and memcached start through bench/loopback.py, which the tests use too: each is checked to
be the process answering on its port, and moves to a new port when it lost the port to another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.loopback import (
    HOST,
    PidProbe,
    ServerProcess,
    free_port,
    launch,
    memcached_pid,
    redis_pid,
    wait_until_serving,
)

__all__ = ["HOST", "Process", "free_port", "start_memcached", "start_redis", "wait_for_port"]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Returns once ``process`` is alive and something answers on ``port``."""
    wait_until_serving(process, port, timeout=timeout)


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} is not installed (bench/run.sh installs it with apt-get)")
    return path


class Process(ServerProcess):
    """One named child process listening on ``port``, started at once unless ``start=False``;
    ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        cwd: Path | None = None,
        probe: PidProbe | None = None,
        *,
        start: bool = True,
    ) -> None:
        super().__init__(argv, port, cwd, probe)
        self.name = name
        if start:
            self.start()


def start_redis(workdir: Path) -> Process:
    binary = require("redis-server")

    def redis(port: int) -> Process:
        argv = [binary, "--bind", HOST, "--port", str(port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
        return Process("redis", argv, port, workdir, redis_pid, start=False)

    return launch(redis)


def start_memcached(workdir: Path, memory_mb: int = 1024) -> Process:
    binary = require("memcached")

    def memcached(port: int) -> Process:
        argv = [binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", str(memory_mb)]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without being told
        return Process("memcached", argv, port, workdir, memcached_pid, start=False)

    return launch(memcached)
