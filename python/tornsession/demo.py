"""A small Tornado app on tornsession whose one page explains itself: log in with a name (the
session id changes), count your visits, see the session's contents, its cookies with their sizes
and flags, and its store, see your sessions (end one, or log out everywhere else), log out; each
step says what it proves. The page is in ``tornsession._demo_page``.

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
import json
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Literal, TypedDict

import tornado.httpserver
import tornado.netutil
import tornado.web

import tornsession
from tornsession._demo_page import (
    CookieRow,
    Notice,
    SessionRow,
    page_arguments,
    template_loader,
)

SECRET_VARIABLES = {"secret": "TORNSESSION_SECRET", "cookie_secret": "TORNSESSION_COOKIE_SECRET"}
SECRETS_FILE = "demo-secrets.json"
MIN_SECRET_BYTES = 32


class CookieOptions(TypedDict):
    cookie_name: str
    digest_cookie_name: str
    cookie_httponly: bool
    cookie_samesite: Literal["Lax", "Strict", "None"]
    cookie_secure: bool | Literal["auto"]
    cookie_path: str
    cookie_expires_days: float


#: The session cookies' attributes, passed to the manager as they are and shown on the page (a
#: browser never sends a cookie's flags back: the page can only say what this server sets).
COOKIE_OPTIONS: CookieOptions = {
    "cookie_name": "session_id",
    "digest_cookie_name": "hmac_digest",
    "cookie_httponly": True,
    "cookie_samesite": "Lax",
    "cookie_secure": "auto",
    "cookie_path": "/",
    "cookie_expires_days": 30.0,
}
ID_PREFIX = 8  # hex digits of a session id shown, to let a learner see it change


class DemoHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
    """``self.session`` loads in ``prepare()`` and is saved, if it changed, before the response."""

    def note(self, step: str, text: str) -> None:
        """Tells the next page what this step did (kept in the session until shown)."""
        self.session.flash(text, step)


class HomeHandler(DemoHandler):
    async def get(self) -> None:
        user = self.session.get("user")
        notices = [Notice(step, str(text)) for step, text in self.session.pop_flashes()]
        if self.get_query_argument("done", "") == "logout":
            notices.append(Notice("logout", LOGGED_OUT))
        if user is not None:
            self.session["visits"] = self.session.get("visits", 0) + 1
        # Nothing written for a visitor who has not logged in: no record, no cookie.
        sealed = not self.settings["lists_sessions"]
        sent = sent_cookie_sizes(self.request.headers.get("Cookie", ""))
        session_cookie = dict(sent).get(COOKIE_OPTIONS["cookie_name"])
        self.render(
            "page.html",
            **page_arguments(
                notices=notices,
                user=user,
                user_id=self.session.user_id,
                visits=self.session.get("visits", 0),
                id_prefix=short_id(self.session.session_id),
                dead_cookie=user is None and session_cookie is not None,
                contents=json.dumps(dict(self.session), indent=2, sort_keys=True, default=repr),
                sealed=sealed,
                cookies=cookie_rows(sent, sealed, self.request.protocol == "https"),
                store=repr(self.settings["demo_store"]),
                record=self.record_note(user is not None, sealed, session_cookie),
                sessions=None if sealed or user is None else await self.your_sessions(),
            ),
        )

    def record_note(self, logged_in: bool, sealed: bool, session_cookie: int | None) -> str:
        """Where the session's record is, and its size where the demo can tell."""
        if not logged_in:
            return "No record: nothing is stored for a visitor who has not logged in."
        if sealed:
            return (
                "Nothing on the server: the record is the session_id cookie itself, "
                f"{session_cookie} bytes as your browser sent it (sealed: XChaCha20-Poly1305). "
                "Each change to the session reseals it: this response sets a new one."
            )
        folder = self.settings["demo_store"].path
        try:
            size = (folder / f"SESSION{self.session.session_id}").stat().st_size
        except OSError:
            return "The record is not in the store yet (it is written at the end of this request)."
        return (
            f"The record: one file of {size} bytes in the folder, as your last request saved it "
            "(this request's save follows the page)."
        )

    async def your_sessions(self) -> list[SessionRow]:
        """The visitor's sessions, oldest first, this one marked."""
        manager = self.settings["session_manager"]
        current = manager.hashed_id(self.session)
        return [
            SessionRow(
                info.id,
                browser_name(str(info.info.get("agent", ""))),
                clock(info.created),
                "never" if info.last_seen is None else clock(info.last_seen, "%H:%M UTC"),
                info.id == current,
            )
            for info in await manager.auser_sessions(self.session.user_id)
        ]


def sent_cookie_sizes(header: str) -> list[tuple[str, int]]:
    """Each cookie of a ``Cookie`` header with the size of its value as sent, in bytes (quotes
    included: Tornado's parsed values have them taken off). Tornado hands the header over
    decoded as latin-1, one character per byte sent: encoded back the same way, the bytes are
    the browser's; a name is shown as the UTF-8 it most likely was."""
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return [(_as_sent(name), _bytes_sent(value)) for name, _, value in pairs if name]


def _bytes_sent(text: str) -> int:
    return len(text.encode("latin-1", "replace"))


def _as_sent(text: str) -> str:
    return text.encode("latin-1", "replace").decode("utf-8", "replace")


def cookie_rows(sent: list[tuple[str, int]], sealed: bool, secure: bool) -> list[CookieRow]:
    """The cookies the browser sent, each with the flags this server sets on it."""
    return [
        CookieRow(name, size, *cookie_role(name, sealed, secure)) for name, size in sorted(sent)
    ]


def short_id(session_id: object) -> str:
    """The first hex digits of an id: enough to see it change, too few to open anything."""
    return str(session_id or "")[:ID_PREFIX]


def browser_name(agent: str) -> str:
    """The browser a User-Agent names (its product and major version), for the sessions list."""
    for product in ("Edg", "Firefox", "HeadlessChrome", "Chromium", "Chrome", "Safari"):
        found = re.search(rf"\b{product}/(\d+)", agent)
        if found:
            return f"{product} {found.group(1)}"
    return agent[:40] or "a browser that sent no User-Agent"


def clock(seconds: int, form: str = "%H:%M:%S UTC") -> str:
    return time.strftime(form, time.gmtime(seconds))


def cookie_role(name: str, sealed: bool, secure: bool) -> tuple[str, list[str]]:
    """What a cookie of this app is, and the attributes its ``Set-Cookie`` line carries."""
    if name in (COOKIE_OPTIONS["cookie_name"], COOKIE_OPTIONS["digest_cookie_name"]):
        flags = [
            "HttpOnly" if COOKIE_OPTIONS["cookie_httponly"] else "not HttpOnly",
            f"SameSite={COOKIE_OPTIONS['cookie_samesite']}",
            f"Path={COOKIE_OPTIONS['cookie_path']}",
            f"Expires: {COOKIE_OPTIONS['cookie_expires_days']:g} days after it is set",
            "Secure" if secure else "not Secure: cookie_secure='auto' sets it over HTTPS only",
        ]
        if name == COOKIE_OPTIONS["digest_cookie_name"]:
            role = "an HMAC of the id with the session secret: a forged id does not match it"
        elif sealed:
            role = "the whole session, sealed (encrypted and signed) with the session secret"
        else:
            role = "the session id, signed by Tornado with the app's cookie_secret"
        return role, flags
    if name == "_xsrf":
        return (
            "Tornado's CSRF token: every form below carries it back",
            ["not HttpOnly: a token, not a secret", "Path=/", "no Expires: ends with the browser"],
        )
    return "not this demo's (cookies are per host, not per port: another app on 127.0.0.1)", []


class LoginHandler(DemoHandler):
    async def post(self) -> None:
        name = self.get_body_argument("name", "").strip()[:100] or "anonymous"
        had_cookie = COOKIE_OPTIONS["cookie_name"] in self.request.cookies
        before = short_id(self.session.session_id)
        self.session["user"] = name
        # The owner: the session is listed under the name, and can be ended from another one.
        self.session.set_user(name)
        self.session.set_info(agent=self.request.headers.get("User-Agent", "")[:200])
        # A new session id at login: an id planted in the visitor's browser before (session
        # fixation) no longer opens this session.
        await self.session.aregenerate()
        after = short_id(self.session.session_id)
        sent = "" if had_cookie else " (never sent: your browser held no session cookie)"
        self.note(
            "login",
            f"Logged in with regenerate(): the session id was {before}\u2026{sent}, it is now "
            f"{after}\u2026: the id changed.",
        )
        self.redirect("/")


class EndSessionHandler(DemoHandler):
    async def post(self) -> None:
        user = self.session.user_id
        hashed_id = self.get_body_argument("id", "")
        manager = self.settings["session_manager"]
        # Only a session of the visitor's own list: the hashed ids of others are never shown,
        # and checking costs one listing (a cookie store has none to end).
        listed = user is not None and self.settings["lists_sessions"]
        ended = 0
        if listed and hashed_id in {s.id for s in await manager.auser_sessions(user)}:
            ended = await manager.adestroy_session(hashed_id)
        if user is not None and ended:
            self.note("end", f"destroy_session() ended {ended} session{'s' * (ended != 1)}.")
        elif user is not None:
            self.note("end-none", "destroy_session() ended no session.")
        self.redirect("/")


class OtherSessionsHandler(DemoHandler):
    async def post(self) -> None:
        user = self.session.user_id
        if user is not None:
            manager = self.settings["session_manager"]
            ended = await manager.adestroy_user_sessions(user, keep=self.session)
            self.note(
                "others",
                f"destroy_user_sessions(user, keep=this session) ended {ended} other "
                f"session{'s' * (ended != 1)}."
                if self.settings["lists_sessions"]
                else "destroy_user_sessions(user, keep=this session) revoked your other "
                "session cookies: each is refused at its next request.",
            )
        self.redirect("/")


LOGGED_OUT = "Logged out with destroy(): the record is deleted and both cookies are cleared."


class LogoutHandler(DemoHandler):
    async def post(self) -> None:
        await self.session.adestroy()  # deletes the record and clears the cookies
        # Said by the address, not the session: a note in it would store a session again.
        self.redirect("/?done=logout")


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
    store_object: tornsession.CookieStore | tornsession.FileStore
    if store == "cookie":
        # The session sealed in the cookie; the folder keeps the per-user generation counters
        # that let "log out everywhere else" end the user's other cookies.
        revocation = tornsession.FileStore(session_dir.resolve())
        store_object = tornsession.CookieStore(revocation=revocation)
    else:
        store_object = tornsession.FileStore(session_dir.resolve())
    manager = tornsession.TornadoSessionManager(
        keys["secret"], store=store_object, **COOKIE_OPTIONS
    )
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
        demo_store=store_object,
        lists_sessions=store != "cookie",
        template_loader=template_loader(),
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
