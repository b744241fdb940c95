"""A Tornado app with logins and a "your sessions" page, for the per-user session tests.

    python -m tests.apps.users_app --port 0 --store redis --url redis://127.0.0.1:6379/0
    python -m tests.apps.users_app --port 0 --store memcached --url 127.0.0.1:11211,127.0.0.1:11212

POST /login?user=ann[&remember=1]   regenerate, set_user, set_info(agent), remember-me expiry
GET  /me                            {"user": ..., "hashed_id": ...}
GET  /sessions                      the user's sessions, this one marked "current"
POST /end?id=HASHED                 end one session ("end this session")
POST /others                        end every other session ("log out everywhere else")
POST /everywhere                    end every session of the user, this one too
POST /password                      a password change: the other sessions end
POST /logout                        destroy this session
Every handler uses SessionMixin (async load and save) and the async manager methods.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornsession

SECRET = "users-app-test-secret-of-32-bytes-or-more"


class DictStore:
    """A Python store with the optional per-user methods of SessionStoreProtocol."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.users: dict[str, set[str]] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def add_to_user(self, user_key: str, key: str, ttl: int | None) -> None:
        self.users.setdefault(user_key, set()).add(key)

    def remove_from_user(self, user_key: str, key: str) -> None:
        self.users.get(user_key, set()).discard(key)

    def user_keys(self, user_key: str) -> list[str]:
        return sorted(self.users.get(user_key, set()))


def make_store(args: argparse.Namespace) -> Any:
    if args.store == "memory":
        return tornsession.MemoryStore()
    if args.store == "file":
        return tornsession.FileStore(args.path)
    if args.store == "sqlite":
        return tornsession.SqliteStore(args.path)
    if args.store == "redis":
        return tornsession.RedisStore(args.url)
    if args.store == "cluster":
        return tornsession.RedisClusterStore(args.url.split(","))
    if args.store == "memcached":
        return tornsession.MemcachedStore(args.url.split(","))
    if args.store == "python":
        return DictStore()
    raise SystemExit(f"unknown store {args.store!r}")


class Base(tornsession.SessionMixin, tornado.web.RequestHandler):
    @property
    def manager(self) -> tornsession.TornadoSessionManager:
        manager: tornsession.TornadoSessionManager = self.settings["session_manager"]
        return manager

    def user(self) -> str:
        user = self.session.user_id
        if user is None:
            raise tornado.web.HTTPError(403)
        return user


class Login(Base):
    async def post(self) -> None:
        await self.session.aregenerate()
        self.session.set_user(self.get_argument("user"))
        self.session.set_info(agent=self.request.headers.get("User-Agent", "?"))
        if self.get_argument("remember", ""):
            self.session.set_expiry(idle_timeout=3600, persistent=True)
        else:
            self.session.set_expiry(persistent=False)
        self.session["logged_in"] = True
        self.write("ok")


class Me(Base):
    def get(self) -> None:
        hashed_id = self.manager.hashed_id(self.session)
        self.write({"user": self.session.user_id, "hashed_id": hashed_id})


class Sessions(Base):
    async def get(self) -> None:
        current = self.manager.hashed_id(self.session)
        infos = await self.manager.auser_sessions(self.user())
        listed = [
            {
                "id": info.id,
                "created": info.created,
                "last_seen": info.last_seen,
                "info": info.info,
                "current": info.id == current,
            }
            for info in infos
        ]
        self.write({"sessions": listed, "port": self.settings["port"]})


class End(Base):
    async def post(self) -> None:
        self.user()
        ended = await self.manager.adestroy_session(self.get_argument("id"))
        self.write({"ended": ended})


class Others(Base):
    async def post(self) -> None:
        ended = await self.manager.adestroy_user_sessions(self.user(), keep=self.session)
        self.write({"ended": ended})


class Everywhere(Base):
    async def post(self) -> None:
        ended = await self.manager.adestroy_user_sessions(self.user())
        self.write({"ended": ended})


class Password(Base):
    async def post(self) -> None:
        user = self.user()
        ended = await self.manager.adestroy_user_sessions(user, keep=self.session)
        # The survivor gets a new id too: whoever knew the old cookie is out as well.
        await self.session.aregenerate()
        self.write({"ended": ended})


class Logout(Base):
    async def post(self) -> None:
        await self.session.adestroy()
        self.write("bye")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--path")
    parser.add_argument("--url")
    parser.add_argument("--idle-timeout", type=float, default=3600)
    args = parser.parse_args()
    manager = tornsession.TornadoSessionManager(
        SECRET,
        store=make_store(args),
        idle_timeout=args.idle_timeout,
        max_idle_timeout=30 * 86400,
    )
    sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")
    port = sockets[0].getsockname()[1]
    app = tornado.web.Application(
        [
            (r"/login", Login),
            (r"/me", Me),
            (r"/sessions", Sessions),
            (r"/end", End),
            (r"/others", Others),
            (r"/everywhere", Everywhere),
            (r"/password", Password),
            (r"/logout", Logout),
        ],
        cookie_secret=SECRET,
        session_manager=manager,
        port=port,
    )

    async def serve() -> None:
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        print(f"listening on {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
