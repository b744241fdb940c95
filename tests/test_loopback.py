"""The server start helper (bench/loopback.py): a server that lost its port to another process is
never taken for the one answering there; it starts again on a new port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.servers import RedisServer, memcached_argv, redis_maker, require_binary

from bench.loopback import (
    ServerGone,
    ServerProcess,
    free_port,
    launch,
    listening_port,
    memcached_pid,
    redis_pid,
    wait_until_serving,
)


def taken_first(port: int) -> Callable[[], int]:
    """A port picker that hands out ``port`` (already in use) first, then free ones."""
    handed: list[int] = []

    def pick() -> int:
        handed.append(port)
        return port if len(handed) == 1 else free_port()

    return pick


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of someone else's, holding its port."""
    server = launch(redis_maker(require_binary("redis-server"), tmp_path))
    yield server
    server.kill()


def test_redis_on_a_taken_port_moves_to_a_new_one(stranger: RedisServer, tmp_path: Path) -> None:
    binary = require_binary("redis-server")
    ours = launch(redis_maker(binary, tmp_path), pick_port=taken_first(stranger.port))
    try:
        assert ours.port != stranger.port
        assert redis_pid(ours.port) == ours.pid != stranger.pid
        assert redis_pid(stranger.port) == stranger.pid
    finally:
        ours.kill()


def test_memcached_on_a_taken_port_moves_to_a_new_one(tmp_path: Path) -> None:
    binary = require_binary("memcached")

    def memcached(port: int) -> ServerProcess:
        return ServerProcess(memcached_argv(binary, port), port, tmp_path, memcached_pid)

    first = launch(memcached)
    try:
        second = launch(memcached, pick_port=taken_first(first.port))
        try:
            assert second.port != first.port
            assert memcached_pid(second.port) == second.pid
            assert memcached_pid(first.port) == first.pid
        finally:
            second.kill()
    finally:
        first.kill()


def test_a_restart_on_a_port_someone_took_meanwhile_fails_loudly(tmp_path: Path) -> None:
    binary = require_binary("redis-server")
    ours = launch(redis_maker(binary, tmp_path))
    ours.kill()
    thief = launch(redis_maker(binary, tmp_path), pick_port=lambda: ours.port)
    try:
        with pytest.raises(ServerGone):
            ours.start()
        assert ours.process is None, "the failed start left nothing running"
    finally:
        thief.kill()


def test_a_stranger_answering_is_told_apart_from_the_process_started(
    stranger: RedisServer,
) -> None:
    # A process that never listens: the pid answering on the port is the stranger's.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ServerGone, match=f"pid {stranger.pid} answers"):
            wait_until_serving(sleeper, stranger.port, redis_pid, timeout=5)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_app_that_exits_before_listening_is_an_error_quoting_its_output() -> None:
    app = subprocess.Popen(
        [sys.executable, "-c", "print('warming up'); print('cannot bind')"],
        stdout=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(ServerGone, match="cannot bind"):
        listening_port(app)
    assert app.stdout is not None
    app.stdout.close()


def test_an_app_reports_the_port_it_bound() -> None:
    app = subprocess.Popen(
        [sys.executable, "-c", "print('a warning'); print('listening on 4242')"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listening_port(app) == 4242
    app.wait()
    assert app.stdout is not None
    app.stdout.close()
