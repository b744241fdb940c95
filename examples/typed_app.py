"""A small Tornado app that uses every public name of tornsession, type-checked with
``mypy --strict`` against the installed package (``make lint-python``).

Run it with ``python examples/typed_app.py`` (port 8888; ``--port N`` for another).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import warnings
from datetime import timedelta
from typing import Any

import tornado.web
import tornsession
from tornsession import (
    CookieStore,
    FileStore,
    InvalidSessionException,
    MemcachedStore,
    MemoryStore,
    RedisClusterStore,
    RedisSentinelStore,
    RedisStore,
    RequestHandlerProtocol,
    Session,
    SessionBusy,
    SessionConflict,
    SessionInfo,
    SessionManager,
    SessionMixin,
    SessionStoreError,
    SessionStoreProtocol,
    SqliteStore,
    TornadoSession,
    TornadoSessionManager,
    WeakSecretWarning,
    store_from_url,
)

VERSION: str = tornsession.__version__


class DictStore:
    """A store object of your own: anything with get/set/delete (SessionStoreProtocol)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str, /) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl: int | None, /) -> None:
        self.data[key] = value

    def delete(self, key: str, /) -> None:
        self.data.pop(key, None)


StoreChoice = (
    MemoryStore
    | CookieStore
    | FileStore
    | SqliteStore
    | RedisStore
    | RedisClusterStore
    | RedisSentinelStore
    | MemcachedStore
    | SessionStoreProtocol
)


def make_store(kind: str, folder: str) -> StoreChoice:
    """Every store tornsession has; the network ones connect at first use, not here."""
    if kind == "file":
        return FileStore(os.path.join(folder, "sessions"))
    if kind == "sqlite":
        return SqliteStore(os.path.join(folder, "sessions.db"), timeout=2.0)
    if kind == "redis":
        return RedisStore("redis://127.0.0.1:6379/0", prefix="app:", timeout=0.5)
    if kind == "redis-tls":
        return RedisStore("rediss://redis.internal:6380/0", ssl_ca_certs="/etc/redis/ca.pem")
    if kind == "redis-sentinel":
        return RedisSentinelStore(["127.0.0.1:26379", "127.0.0.1:26380"], "mymaster")
    if kind == "redis-cluster":
        return RedisClusterStore(["redis://127.0.0.1:7000"], pool_size=4)
    if kind == "memcached":
        return MemcachedStore(["127.0.0.1:11211"])
    if kind == "cookie":
        # Sessions sealed in their cookies; the counters of "log out everywhere" in SQLite.
        return CookieStore(revocation=SqliteStore(os.path.join(folder, "revocation.db")))
    if kind == "url":
        # One setting for the whole choice, e.g. SESSION_STORE=redis://127.0.0.1:6379/0
        url_store: StoreChoice = store_from_url(os.environ.get("SESSION_STORE", "memory:"))
        return url_store
    if kind == "custom":
        store: SessionStoreProtocol = DictStore()
        return store
    return MemoryStore(max_sessions=10_000)


class CountHandler(tornado.web.RequestHandler):
    """The classic style: a TornadoSession bound to the handler, saved explicitly."""

    def initialize(self) -> None:
        # Typed without a cast: Application has no session_manager attribute for mypy.
        manager: TornadoSessionManager = tornsession.session_manager_of(self.application)
        handler: RequestHandlerProtocol = self
        self.session = TornadoSession(manager, handler)

    def get(self) -> None:
        count: int = self.session.get("count", 0) + 1
        self.session["count"] = count
        self.session.save()
        self.write({"count": count, "version": VERSION})


class LoginHandler(SessionMixin, tornado.web.RequestHandler):
    """The async style: self.session loaded in prepare(), saved before the response."""

    async def post(self) -> None:
        self.session["user"] = self.get_body_argument("name", "anonymous")
        await self.session.aregenerate()  # a new id after login (session fixation)
        self.session.flash("welcome")
        self.redirect("/whoami")


class WhoAmIHandler(SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        flashes: list[tuple[str, Any]] = self.session.pop_flashes()
        self.write({"user": self.session.get("user"), "flashes": [m for _, m in flashes]})


class LogoutHandler(SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        await self.session.adestroy()
        self.redirect("/whoami")


class StatusHandler(tornado.web.RequestHandler):
    """Loading by hand: SessionBusy when an earlier request of the session holds it too long."""

    async def get(self) -> None:
        manager: TornadoSessionManager = self.application.settings["session_manager"]
        try:
            session = await TornadoSession.aload(manager, self)
        except SessionBusy:
            self.set_status(503)
            return
        self.write({"user": session.get("user")})


def throwaway_manager() -> SessionManager:
    """A manager for a quick script: a short secret gives a WeakSecretWarning, silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeakSecretWarning)
        return SessionManager("short")


def check_token(manager: SessionManager, session_id: str, digest: str) -> Session | None:
    """The low-level API: ids and digests outside of a handler (an API token, say)."""
    try:
        return manager.get(session_id, digest)
    except InvalidSessionException:
        return None
    except SessionStoreError as error:
        raise RuntimeError(f"session store down: {error}") from error


def add_to_cart(manager: SessionManager, session_id: str, digest: str, sku: str) -> bool:
    """A read-modify-write that must not lose updates across processes (detect_conflicts=True):
    False when another request saved the session first; nothing was written then."""
    session = manager.get(session_id, digest)
    session.setdefault("cart", []).append(sku)
    try:
        manager.set(session)
    except SessionConflict:
        return False
    return True


def other_devices(manager: SessionManager, user_id: str, current: Session) -> list[SessionInfo]:
    """Per-user sessions: the user's other sessions, as a "your sessions" page lists them."""
    mine = manager.hashed_id(current)
    return [info for info in manager.user_sessions(user_id) if info.id != mine]


def make_app(store: StoreChoice) -> tornado.web.Application:
    manager = TornadoSessionManager(
        [secrets.token_hex(32), "an-older-secret-still-accepted-for-a-while"],
        store=store,
        cookie_samesite="Strict",
        cookie_secure=False,
        cookie_expires_days=None,
        idle_timeout=timedelta(hours=2),
        lifetime=timedelta(days=1),
        max_size=64 * 1024,
    )
    assert throwaway_manager().get() == {}
    plain = SessionManager(secrets.token_hex(32))
    fresh: Session = plain.get()
    fresh["hello"] = "world"
    plain.set(fresh)
    assert check_token(plain, str(fresh.session_id), str(fresh.hmac_digest)) == {"hello": "world"}
    accounts = SessionManager(secrets.token_hex(32), store=MemoryStore())
    devices: list[Session] = [accounts.get(), accounts.get()]
    for agent, device in zip(["laptop", "phone"], devices, strict=True):
        device.set_user("ann")
        device.set_info(agent=agent)
        accounts.set(device)
    assert [i.info for i in other_devices(accounts, "ann", devices[0])] == [{"agent": "phone"}]
    assert accounts.destroy_user_sessions("ann", keep=devices[0]) == 1
    return tornado.web.Application(
        [
            (r"/", CountHandler),
            (r"/login", LoginHandler),
            (r"/whoami", WhoAmIHandler),
            (r"/logout", LogoutHandler),
            (r"/status", StatusHandler),
        ],
        cookie_secret=secrets.token_hex(32),
        session_manager=manager,
    )


async def main(port: int, kind: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = make_app(make_store(kind, folder))
        app.listen(port, address="127.0.0.1")
        print(f"typed_app (tornsession {VERSION}) on http://127.0.0.1:{port}/", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--store", default="memory")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.store))
