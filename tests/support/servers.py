"""Real Redis, Redis Cluster and memcached servers for the store tests (a pytest plugin loaded by
tests/conftest.py), each on a free loopback port in a temporary folder, stopped when the test
session ends.

A missing binary skips the tests that need it, except under CI=true, where it fails them.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from bench.loopback import (
    HOST,
    ServerProcess,
    free_port,
    launch,
    memcached_pid,
    redis_pid,
)

__all__ = ["HOST", "ServerProcess", "free_port", "launch"]  # imported from here by the tests


def require_binary(name: str) -> str:
    """The binary's path; else fail under CI, skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (scripts/install-system-deps.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((HOST, port))
                b.bind((HOST, port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer(ServerProcess):
    """A Redis server, checked at every start to be the process answering (``INFO server``)."""

    def __init__(self, argv: list[str], port: int, cwd: Path) -> None:
        super().__init__(argv, port, cwd, redis_pid)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def redis_argv(binary: str, port: int, *extra: str) -> list[str]:
    return [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", *extra]


def redis_maker(binary: str, folder: Path, *extra: str) -> Callable[[int], RedisServer]:
    """A RedisServer for a given port, for launch()."""
    return lambda port: RedisServer(redis_argv(binary, port, *extra), port, folder)


def memcached_argv(binary: str, port: int) -> list[str]:
    argv = [binary, "-l", HOST, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root without being told
    return argv


S = TypeVar("S", bound=ServerProcess)


def started_servers(make: Callable[[], S]) -> Iterator[Callable[[], S]]:
    """A session fixture's body: starts a new server per call; all stop at the end."""
    started: list[S] = []

    def start() -> S:
        server = make()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisServer]]:
    """Starts a new Redis server per call; all are stopped at the end of the session."""
    binary = require_binary("redis-server")
    yield from started_servers(
        lambda: launch(redis_maker(binary, tmp_path_factory.mktemp("redis")))
    )


@pytest.fixture(scope="session")
def redis_server(redis_factory: Callable[[], RedisServer]) -> RedisServer:
    return redis_factory()


@pytest.fixture(scope="session")
def memcached_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], ServerProcess]]:
    """Starts a new memcached server per call; all are stopped at the end of the session."""
    binary = require_binary("memcached")

    def start() -> ServerProcess:
        folder = tmp_path_factory.mktemp("mc")
        return launch(
            lambda port: ServerProcess(memcached_argv(binary, port), port, folder, memcached_pid)
        )

    yield from started_servers(start)


@pytest.fixture(scope="session")
def memcached_servers(memcached_factory: Callable[[], ServerProcess]) -> list[ServerProcess]:
    """Two memcached servers."""
    return [memcached_factory(), memcached_factory()]


def memcached_command(server: ServerProcess, command: str) -> bytes:
    """One raw ASCII command straight to one memcached server."""
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(command.encode() + b"\r\n")
        answer = b""
        while not answer.endswith((b"END\r\n", b"ERROR\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def memcached_stats(server: ServerProcess) -> dict[str, str]:
    """One memcached server's ``stats``, by name."""
    lines = memcached_command(server, "stats").decode().splitlines()
    return dict(line.split()[1:3] for line in lines if line.startswith("STAT "))


def client_connections(processes: list[ServerProcess]) -> list[int]:
    """The client connections each server holds now, not counting the one asking."""
    counts = []
    for process in processes:
        if isinstance(process, RedisServer):
            client = redis.Redis.from_url(process.url)
            try:
                counts.append(int(client.info("clients")["connected_clients"]) - 1)
            finally:
                client.close()
        else:
            counts.append(int(memcached_stats(process)["curr_connections"]) - 1)
    return counts


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of three masters and no replicas, ready (`cluster_state:ok`)."""
    binary = require_binary("redis-server")
    cli = require_binary("redis-cli")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            folder = tmp_path_factory.mktemp("cluster")
            cluster = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            cluster += ["--cluster-config-file", str(folder / "nodes.conf")]
            node = launch(redis_maker(binary, folder, *cluster), pick_port=free_cluster_port)
            nodes.append(node)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(n.address for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:
            infos = [
                subprocess.run(
                    [cli, "-h", HOST, "-p", str(n.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                for n in nodes
            ]
            if all("cluster_state:ok" in info for info in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after 30 s: {infos}")
            time.sleep(0.2)
        yield nodes
    finally:
        for node in nodes:
            node.kill()
