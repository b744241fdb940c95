"""For the tests of ``python -m tornsession``: the command run as a subprocess, a store URL of
each kind on this test's real servers and files, and visitors whose sessions are written
through a real manager (owners, their own expiry, varied data) and opened again by cookie."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tornsession
from tornsession._cli_copy import Copier
from tornsession._copy_state import CopyState

from support.handlers import CookieJarHandler
from support.servers import ServerProcess

SECRET = "cli-test-secret-of-more-than-32-bytes!"
#: The apps' idle timeout in these tests, and the longest a session may ask for of its own.
IDLE = 3600
MAX_IDLE = 7200
KINDS = ["file", "sqlite", "redis", "cluster", "memcached"]


def run(*args: str, cwd: Path | None = None, timeout: float = 300, **env: str) -> Any:
    """``python -m tornsession ARGS``: the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "tornsession", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, **env},
    )


def store_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str, name: str) -> str:
    """A new, empty store of ``kind`` on this test's servers (a prefix of its own on the shared
    Redis and cluster, two new memcached servers, so nothing is evicted), named ``name``."""
    prefix = f"{name}-{uuid.uuid4().hex[:8]}:"
    if kind == "file":
        return f"file://{tmp_path}/{name}-files"
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/{name}.db"
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return f"{server.url}?prefix={prefix}"
    if kind == "cluster":
        nodes = request.getfixturevalue("redis_cluster")
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
        return f"redis+cluster://{hosts}?prefix={prefix}"
    if kind == "memcached":
        start: Callable[[], ServerProcess] = request.getfixturevalue("memcached_factory")
        hosts = ",".join(f"127.0.0.1:{start().port}" for _ in range(2))
        return f"memcached://{hosts}?prefix={prefix}"
    raise ValueError(kind)


class Jar(CookieJarHandler):
    """A handler that has begun (what set_expiry needs), its cookies in a dict."""

    path_args: tuple[str, ...] = ()
    prepare = None

    # The unsigned cookies a CookieStore's sealed session and the compact format use.
    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        value = self.cookies.get(name)
        return value.decode() if value is not None else default

    def set_cookie(self, name: str, value: str | bytes, **kwargs: Any) -> None:
        self.cookies[name] = value.encode() if isinstance(value, str) else value


def manager(url: str) -> tornsession.TornadoSessionManager:
    return tornsession.TornadoSessionManager(
        SECRET,
        store=tornsession.store_from_url(url),
        idle_timeout=IDLE,
        max_idle_timeout=MAX_IDLE,
    )


@dataclass
class Visitor:
    """A browser: the cookies it holds and the owner its session was given."""

    cookies: dict[str, bytes]
    user: str | None

    @property
    def session_id(self) -> str:
        return self.cookies["session_id"].decode()

    def open(self, on: tornsession.TornadoSessionManager) -> dict[str, Any] | None:
        """The session's data through ``on``, or None when it has no live session there."""
        handler = Jar()
        handler.cookies = dict(self.cookies)
        session = tornsession.TornadoSession(on, handler)
        data = dict(session)
        return data if session.session_id == self.session_id else None

    def save(self, on: tornsession.TornadoSessionManager, **items: Any) -> None:
        handler = Jar()
        handler.cookies = dict(self.cookies)
        session = tornsession.TornadoSession(on, handler)
        session.update(items)
        session.save()
        self.cookies = dict(handler.cookies)

    def end(self, on: tornsession.TornadoSessionManager) -> None:
        handler = Jar()
        handler.cookies = dict(self.cookies)
        tornsession.TornadoSession(on, handler).destroy()


def new_visitor(on: tornsession.TornadoSessionManager, n: int, rng: random.Random) -> Visitor:
    """Visitor ``n``: every third one logged in (97 users), every seventh with a longer idle
    timeout of its own, every eleventh a shorter one, data of varied shapes and sizes."""
    handler = Jar()
    session = tornsession.TornadoSession(on, handler)
    session["n"] = n
    session["name"] = f"visitor {n} \u00e9\u4e2d"
    session["cart"] = [{"sku": f"sku-{k}", "qty": rng.randint(1, 9)} for k in range(n % 5)]
    session["ratio"] = n / 7
    session["blob"] = "x" * rng.randint(0, 2000)
    user = None
    if n % 3 == 0:
        user = f"user-{n % 97}"
        session.set_user(user)
        session.set_info(agent=f"browser {n % 4}")
    if n % 7 == 0:
        session.set_expiry(idle_timeout=MAX_IDLE)
    elif n % 11 == 0:
        session.set_expiry(idle_timeout=IDLE // 2)
    session.save()
    return Visitor(dict(handler.cookies), user)


def populate(url: str, count: int, seed: int = 1) -> list[Visitor]:
    """``count`` visitors with a session each in the store ``url`` names."""
    rng = random.Random(seed)
    on = manager(url)
    return [new_visitor(on, n, rng) for n in range(count)]


class RacingCopier(Copier):
    """A copy during which the app saves the session in the target right after the copy read
    it there, before the copy writes: the copy's conditional write loses the race."""

    def __init__(self, source: Any, target: Any, state: CopyState, app: Any) -> None:
        super().__init__(source, target, state, idle_timeout=IDLE)
        self.app = app
        self.raced = 0

    def _load(self, store: Any, session_id: str) -> Any:
        got = super()._load(store, session_id)
        if store is self.target and not self.raced:
            self.raced += 1
            self.app()
        return got
