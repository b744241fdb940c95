"""A small Tornado app on tornsession: log in with a name, count your visits, see your sessions
(end one, or log out everywhere else), log out.

Run it with ``python -m tornsession.demo [--port N] [--session-dir DIR] [--store cookie]``; it
prints its URL. The port is ``--port``, else the ``PORT`` environment variable, else 8888 (0: any
free port). Sessions live in a FileStore folder (``./demo-sessions`` unless told otherwise); with
``--store cookie`` they live sealed in their visitors' cookies (``CookieStore``), and the folder
keeps only the secrets and the per-user counters that make "log out everywhere else" work (a
cookie store cannot list a user's sessions, so the page shows none).

Secrets (each at least 32 bytes) come from the environment, ``TORNSESSION_SECRET`` (the session
secret) and ``TORNSESSION_COOKIE_SECRET`` (Tornado's ``cookie_secret``); a missing one is made once
and kept in ``demo-secrets.json`` (mode 0600) in the session folder, so sessions outlive a restart.
Make one with ``python -c "import secrets; print(secrets.token_hex(32))"``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import secrets
import socket
import sys
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web

import tornsession

SECRET_VARIABLES = {"secret": "TORNSESSION_SECRET", "cookie_secret": "TORNSESSION_COOKIE_SECRET"}
SECRETS_FILE = "demo-secrets.json"
MIN_SECRET_BYTES = 32

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tornsession demo</title></head>
<body>{body}</body></html>"""


class DemoHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
    """``self.session`` loads in ``prepare()`` and is saved, if it changed, before the response."""

    def page(self, body: str) -> None:
        self.write(PAGE.format(body=body))


class HomeHandler(DemoHandler):
    async def get(self) -> None:
        user = self.session.get("user")
        if user is None:
            # Nothing written for a visitor who has not logged in: no record, no cookie.
            self.page(
                "<form method='post' action='/login'>"
                f"{self.xsrf_form_html()}"
                "<input name='name' id='name' placeholder='your name'>"
                "<button id='login'>Log in</button></form>"
            )
            return
        self.session["visits"] = self.session.get("visits", 0) + 1
        self.page(
            f"<p id='greeting'>Hello, {html.escape(user)}!</p>"
            f"<p id='visits'>Visits: {self.session['visits']}</p>"
            f"{await self.your_sessions()}"
            "<form method='post' action='/logout'>"
            f"{self.xsrf_form_html()}"
            "<button id='logout'>Log out</button></form>"
        )

    async def your_sessions(self) -> str:
        """The visitor's sessions (this one marked), each with "end this session", and "log
        out everywhere else"."""
        if not self.settings["lists_sessions"]:
            return (
                "<p id='sealed'>Your session lives sealed in your cookie: nothing about it is "
                "kept on the server, so it cannot be listed here.</p>" + self.others_form()
            )
        manager = self.settings["session_manager"]
        current = manager.hashed_id(self.session)
        rows = []
        for info in await manager.auser_sessions(self.session.user_id):
            label = html.escape(str(info.info.get("agent", "unknown browser")))
            if info.id == current:
                rows.append(f"<li class='session current'>{label} (this browser)</li>")
                continue
            rows.append(
                f"<li class='session'>{label} "
                "<form method='post' action='/sessions/end' style='display:inline'>"
                f"{self.xsrf_form_html()}<input type='hidden' name='id' value='{info.id}'>"
                "<button class='end'>End this session</button></form></li>"
            )
        return f"<h2>Your sessions</h2><ul id='sessions'>{''.join(rows)}</ul>{self.others_form()}"

    def others_form(self) -> str:
        return (
            "<form method='post' action='/sessions/others'>"
            f"{self.xsrf_form_html()}"
            "<button id='others'>Log out everywhere else</button></form>"
        )


class LoginHandler(DemoHandler):
    async def post(self) -> None:
        name = self.get_body_argument("name", "").strip()[:100] or "anonymous"
        self.session["user"] = name
        # The owner: the session is listed under the name, and can be ended from another one.
        self.session.set_user(name)
        self.session.set_info(agent=self.request.headers.get("User-Agent", "")[:200])
        # A new session id at login: an id planted in the visitor's browser before (session
        # fixation) no longer opens this session.
        await self.session.aregenerate()
        self.redirect("/")


class EndSessionHandler(DemoHandler):
    async def post(self) -> None:
        user = self.session.user_id
        hashed_id = self.get_body_argument("id", "")
        manager = self.settings["session_manager"]
        # Only a session of the visitor's own list: the hashed ids of others are never shown,
        # and checking costs one listing (a cookie store has none to end).
        listed = user is not None and self.settings["lists_sessions"]
        if listed and hashed_id in {s.id for s in await manager.auser_sessions(user)}:
            await manager.adestroy_session(hashed_id)
        self.redirect("/")


class OtherSessionsHandler(DemoHandler):
    async def post(self) -> None:
        user = self.session.user_id
        if user is not None:
            await self.settings["session_manager"].adestroy_user_sessions(user, keep=self.session)
        self.redirect("/")


class LogoutHandler(DemoHandler):
    async def post(self) -> None:
        await self.session.adestroy()  # deletes the record and clears the cookies
        self.redirect("/")


def load_secrets(session_dir: Path) -> dict[str, str]:
    """The secrets from the environment, else from the secrets file (made at the first start)."""
    found = {key: os.environ.get(variable, "") for key, variable in SECRET_VARIABLES.items()}
    if not all(found.values()):
        path = session_dir / SECRETS_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            kept = json.loads(path.read_text())
        else:
            kept = {key: secrets.token_hex(32) for key in SECRET_VARIABLES}
            with os.fdopen(fd, "w") as file:
                json.dump(kept, file)
        found = {key: value or kept[key] for key, value in found.items()}
    for key, value in found.items():
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{SECRET_VARIABLES[key]} is shorter than {MIN_SECRET_BYTES} bytes; make one with: "
                'python -c "import secrets; print(secrets.token_hex(32))"'
            )
    return found


def make_app(session_dir: Path, store: str = "file") -> tornado.web.Application:
    session_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = load_secrets(session_dir)
    if store == "cookie":
        # The session sealed in the cookie; the folder keeps the per-user generation counters
        # that let "log out everywhere else" end the user's other cookies.
        sealed = tornsession.CookieStore(revocation=tornsession.FileStore(session_dir))
        manager = tornsession.TornadoSessionManager(keys["secret"], store=sealed)
    else:
        manager = tornsession.TornadoSessionManager(keys["secret"], session_dir)
    return tornado.web.Application(
        [
            (r"/", HomeHandler),
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            (r"/sessions/end", EndSessionHandler),
            (r"/sessions/others", OtherSessionsHandler),
        ],
        cookie_secret=keys["cookie_secret"],
        session_manager=manager,
        lists_sessions=store != "cookie",
        xsrf_cookies=True,
    )


def port_number(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


async def serve(app: tornado.web.Application, sockets: list[socket.socket]) -> None:
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tornsession.demo", description=__doc__)
    parser.add_argument(
        "--port",
        type=port_number,
        default=os.environ.get("PORT", "8888"),
        help="port (default: $PORT, else 8888; 0: any free one)",
    )
    parser.add_argument("--session-dir", type=Path, default=Path("demo-sessions"))
    parser.add_argument(
        "--store",
        choices=["file", "cookie"],
        default="file",
        help="file: a FileStore in the session folder (default); cookie: CookieStore",
    )
    args = parser.parse_args(argv)
    try:
        sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")
    except OSError as error:
        print(
            f"{parser.prog}: cannot listen on 127.0.0.1:{args.port}: {error.strerror}"
            " (choose another port with --port N)",
            file=sys.stderr,
        )
        return 2
    try:
        app = make_app(args.session_dir, args.store)
    except (OSError, ValueError, tornsession.SessionStoreError) as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    port = sockets[0].getsockname()[1]
    where = "their cookies" if args.store == "cookie" else args.session_dir
    print(f"tornsession demo on http://127.0.0.1:{port}/ (sessions in {where})", flush=True)
    try:
        asyncio.run(serve(app, sockets))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
