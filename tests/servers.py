"""Real Redis, Redis Cluster and memcached servers for the store tests, each on a free loopback
port in a temporary folder, stopped when the test session ends.

A missing binary skips the tests that need it, except under CI=true, where it fails them.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.loopback import (
    HOST,
    ServerProcess,
    free_port,
    launch,
    listening_port,
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


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisServer]]:
    """Starts a new Redis server per call; all are stopped at the end of the session."""
    binary = require_binary("redis-server")
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = launch(redis_maker(binary, tmp_path_factory.mktemp("redis")))
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def redis_server(redis_factory: Callable[[], RedisServer]) -> RedisServer:
    return redis_factory()


@pytest.fixture(scope="session")
def memcached_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], ServerProcess]]:
    """Starts a new memcached server per call; all are stopped at the end of the session."""
    binary = require_binary("memcached")
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        folder = tmp_path_factory.mktemp("mc")
        server = launch(
            lambda port: ServerProcess(memcached_argv(binary, port), port, folder, memcached_pid)
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def memcached_servers(memcached_factory: Callable[[], ServerProcess]) -> list[ServerProcess]:
    """Two memcached servers."""
    return [memcached_factory(), memcached_factory()]


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


APP = Path(__file__).parent / "apps" / "shared_store_app.py"


class AppProcess:
    """tests/apps/shared_store_app.py on a port it picks itself (``--port 0``) and prints."""

    def __init__(self, store_args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(APP), "--port", "0", *store_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.port = listening_port(self.process)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/count"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start_app() -> Iterator[Callable[[list[str]], AppProcess]]:
    """Starts shared_store_app processes with the given store arguments; stops them after."""
    apps: list[AppProcess] = []

    def start(store_args: list[str]) -> AppProcess:
        app = AppProcess(store_args)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


class Browser:
    """One cookie jar over urllib, never through a proxy, talking to 127.0.0.1 only."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def get_json(self, url: str, timeout: float = 30.0) -> dict[str, Any]:
        assert url.startswith(f"http://{HOST}:"), url
        with self.opener.open(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def status(self, url: str, timeout: float = 30.0) -> int:
        assert url.startswith(f"http://{HOST}:"), url
        try:
            with self.opener.open(url, timeout=timeout) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as e:
            return e.code
