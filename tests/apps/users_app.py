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

import tornado.web
import tornsession
from support.apps import serve_forever, store_from_args, store_parser
from support.stores import UserDictStore

SECRET = "users-app-test-secret-of-32-bytes-or-more"


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
    kinds = ["memory", "file", "sqlite", "redis", "cluster", "memcached", "python"]
    parser = store_parser(kinds)
    parser.add_argument("--idle-timeout", type=float, default=3600)
    args = parser.parse_args()
    manager = tornsession.TornadoSessionManager(
        SECRET,
        store=store_from_args(args, python=UserDictStore),
        idle_timeout=args.idle_timeout,
        max_idle_timeout=30 * 86400,
    )
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
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
        ),
    )


if __name__ == "__main__":
    main()
