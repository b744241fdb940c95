"""A small Tornado app on tornsession: log in with a name, count visits, log out.

Run it with ``python -m tornsession.demo [--port N] [--session-dir DIR]``; it prints its URL.
Sessions live in a FileStore folder (``./demo-sessions`` unless told otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import secrets
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

import tornsession

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tornsession demo</title></head>
<body>{body}</body></html>"""


class DemoHandler(tornado.web.RequestHandler):
    def initialize(self) -> None:
        manager: tornsession.TornadoSessionManager = self.application.settings["session_manager"]
        self.session = tornsession.TornadoSession(manager, self)

    def page(self, body: str) -> None:
        self.write(PAGE.format(body=body))


class HomeHandler(DemoHandler):
    def get(self) -> None:
        self.session["visits"] = self.session.get("visits", 0) + 1
        self.session.save()
        user = self.session.get("user")
        visits = self.session["visits"]
        if user is None:
            self.page(
                f"<p id='visits'>Visits: {visits}</p>"
                "<form method='post' action='/login'>"
                "<input name='name' id='name' placeholder='your name'>"
                "<button id='login'>Log in</button></form>"
            )
        else:
            self.page(
                f"<p id='greeting'>Hello, {html.escape(user)}!</p>"
                f"<p id='visits'>Visits: {visits}</p>"
                "<form method='post' action='/logout'><button id='logout'>Log out</button></form>"
            )


class LoginHandler(DemoHandler):
    def post(self) -> None:
        name = self.get_body_argument("name", "").strip()[:100] or "anonymous"
        self.session["user"] = name
        self.session.save()
        self.redirect("/")


class LogoutHandler(DemoHandler):
    def post(self) -> None:
        # Until destroy() arrives, logging out forgets the user and the count.
        self.session.clear()
        self.session.save()
        self.redirect("/")


def make_app(session_dir: str, cookie_secret: str | None = None) -> tornado.web.Application:
    manager = tornsession.TornadoSessionManager(secrets.token_hex(32), session_dir)
    settings: dict[str, Any] = {
        "cookie_secret": cookie_secret or secrets.token_hex(32),
        "session_manager": manager,
        "xsrf_cookies": False,
    }
    return tornado.web.Application(
        [(r"/", HomeHandler), (r"/login", LoginHandler), (r"/logout", LogoutHandler)], **settings
    )


async def serve(port: int, session_dir: str) -> None:
    app = make_app(session_dir)
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    print(f"tornsession demo on http://127.0.0.1:{bound}/ (sessions in {session_dir})", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tornsession.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8888, help="port (0: any free one)")
    parser.add_argument("--session-dir", default="demo-sessions", help="session folder")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.session_dir))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
