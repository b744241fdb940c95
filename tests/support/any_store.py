"""Stores of every kind for one test, and the ``any_store`` fixture that runs a test over each
kind (a pytest plugin loaded by tests/conftest.py). A test or module narrows the kinds with
``@pytest.mark.store_kinds("memory", "file")``, and picks its Python store's class with
``python=``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tornsession

from support.servers import RedisServer, ServerProcess
from support.stores import DictStore

#: The kinds ``any_store`` runs over: each native store and a Python one.
STORE_KINDS = ["memory", "file", "sqlite", "redis", "memcached", "python"]
#: The native ones: a Python store has no call that refreshes a TTL on a read.
NATIVE_STORE_KINDS = STORE_KINDS[:-1]


class StoreOpener:
    """Opens stores of one kind for one test: each call a new store object over the test's data
    (a memory or Python store: a new, empty one). The servers behind Redis and memcached are
    shared by the session, so their keys take a prefix of this test's own."""

    def __init__(
        self, kind: str, request: pytest.FixtureRequest, python: Callable[[], Any] = DictStore
    ) -> None:
        self.kind = kind
        self.request = request
        self.python = python
        self.prefix = f"test-{time.monotonic_ns()}:"

    def __call__(self, **options: Any) -> Any:
        kind = self.kind
        if kind == "memory":
            return tornsession.MemoryStore(**options)
        if kind == "python":
            return self.python(**options)
        if kind in ("file", "sqlite"):
            tmp_path: Path = self.request.getfixturevalue("tmp_path")
            if kind == "file":
                return tornsession.FileStore(tmp_path / "sessions", **options)
            return tornsession.SqliteStore(tmp_path / "sessions.db", **options)
        if kind == "redis":
            server: RedisServer = self.request.getfixturevalue("redis_server")
            return tornsession.RedisStore(server.url, prefix=self.prefix, **options)
        if kind == "cluster":
            nodes: list[RedisServer] = self.request.getfixturevalue("redis_cluster")
            seed = nodes[0].url.removesuffix("/0")
            return tornsession.RedisClusterStore([seed], prefix=self.prefix, **options)
        if kind == "memcached":
            servers: list[ServerProcess] = self.request.getfixturevalue("memcached_servers")
            addresses = [s.address for s in servers]
            return tornsession.MemcachedStore(addresses, prefix=self.prefix, **options)
        raise ValueError(f"no store kind {kind!r}")

    def args(self) -> list[str]:
        """The command line that names this test's store to an app under tests/apps."""
        kind = self.kind
        where: list[str] = []
        if kind in ("file", "sqlite"):
            tmp_path: Path = self.request.getfixturevalue("tmp_path")
            where = ["--path", str(tmp_path / ("sessions" if kind == "file" else "sessions.db"))]
        elif kind == "redis":
            where = ["--url", self.request.getfixturevalue("redis_server").url]
        elif kind == "cluster":
            nodes: list[RedisServer] = self.request.getfixturevalue("redis_cluster")
            where = ["--url", nodes[0].url.removesuffix("/0")]
        elif kind == "memcached":
            servers: list[ServerProcess] = self.request.getfixturevalue("memcached_servers")
            where = ["--servers", *(s.address for s in servers)]
        return ["--store", kind, *where]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store_kinds(*kinds, python=DictStore): the store kinds any_store runs over here (all "
        "of STORE_KINDS when not given; 'cluster' too), and the class of its Python store",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``any_store`` runs once per kind of its ``store_kinds`` marker."""
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("store_kinds")
        metafunc.parametrize("store_kind", marker.args if marker else STORE_KINDS)


@pytest.fixture
def any_store_opener(store_kind: str, request: pytest.FixtureRequest) -> StoreOpener:
    """Opens stores of each kind in turn (the test runs once per kind)."""
    marker = request.node.get_closest_marker("store_kinds")
    python = marker.kwargs.get("python", DictStore) if marker else DictStore
    return StoreOpener(store_kind, request, python)


@pytest.fixture
def any_store(any_store_opener: StoreOpener) -> Any:
    """A store of each kind in turn (the test runs once per kind)."""
    return any_store_opener()
