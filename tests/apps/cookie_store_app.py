"""A Tornado app on ``CookieStore`` (the session sealed in its cookie), for the cookie store tests
that need app processes of their own: two processes sharing only the secret serve one session.

    python -m tests.apps.cookie_store_app --port 0 [--secret S ...] [--revocation redis --url URL]

GET  /inc                 counts the session's visits: {"n": ..., "id": ..., "user": ...}
GET  /peek                the session as it is: {"n": ..., "id": ..., "user": ...}
POST /login?user=ann      regenerate, set_user
POST /others              destroy_user_sessions(user, keep=this session): {"ended": ...}
POST /everywhere          destroy_user_sessions(user): {"ended": ...}
POST /logout              destroy this session
Every handler uses SessionMixin; ``--secret`` repeated gives a list, newest first.
"""

from __future__ import annotations

import argparse
from typing import Any

import tornado.web
import tornsession
from support.apps import serve_forever
from support.cookie_store import cookie_store

SECRET = "cookie-store-app-test-secret-of-32-bytes-or-more"


class Base(tornsession.SessionMixin, tornado.web.RequestHandler):
    @property
    def manager(self) -> tornsession.TornadoSessionManager:
        manager: tornsession.TornadoSessionManager = self.settings["session_manager"]
        return manager

    def show(self, **extra: Any) -> None:
        self.write(
            {
                "n": self.session.get("n"),
                "id": self.session.session_id,
                "user": self.session.user_id,
                "port": self.settings["port"],
                **extra,
            }
        )


class Inc(Base):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.show()


class Peek(Base):
    def get(self) -> None:
        self.show()


class Login(Base):
    async def post(self) -> None:
        await self.session.aregenerate()
        self.session.set_user(self.get_argument("user"))
        self.session["n"] = self.session.get("n", 0)
        self.show()


class Others(Base):
    async def post(self) -> None:
        user = self.session.user_id
        assert user is not None
        ended = await self.manager.adestroy_user_sessions(user, keep=self.session)
        self.write({"ended": ended})


class Everywhere(Base):
    async def post(self) -> None:
        user = self.session.user_id
        assert user is not None
        ended = await self.manager.adestroy_user_sessions(user)
        self.write({"ended": ended})


class Logout(Base):
    async def post(self) -> None:
        await self.session.adestroy()
        self.write("bye")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", action="append", help="repeated: newest first")
    parser.add_argument("--revocation", choices=["memory", "redis"])
    parser.add_argument("--url", help="the revocation store's Redis URL")
    parser.add_argument("--idle-timeout", type=float)
    args = parser.parse_args()
    revocation: Any = None
    if args.revocation == "memory":
        revocation = tornsession.MemoryStore()
    elif args.revocation == "redis":
        revocation = tornsession.RedisStore(args.url)
    secrets = args.secret or [SECRET]
    manager = tornsession.TornadoSessionManager(
        secrets if len(secrets) > 1 else secrets[0],
        store=cookie_store(revocation),
        idle_timeout=args.idle_timeout,
    )
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
            [
                (r"/inc", Inc),
                (r"/peek", Peek),
                (r"/login", Login),
                (r"/others", Others),
                (r"/everywhere", Everywhere),
                (r"/logout", Logout),
            ],
            session_manager=manager,
            port=port,
        ),
    )


if __name__ == "__main__":
    main()
