"""The engine tests' app: a real Tornado server on its own IOLoop in a thread (``Server``), its
handlers in both API styles (the drop-in ``TornadoSession`` and ``SessionMixin``), and the
``serve(style, kind)`` fixture (a pytest plugin loaded by tests/conftest.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
import tornsession
from tornado.httpclient import HTTPRequest
from tornsession import _ordering

from support.any_store import NATIVE_STORE_KINDS, StoreOpener
from support.browser import Browser
from support.handlers import DropInSession

COOKIE_SECRET = "engine-test-cookie-secret-of-32-bytes-or-more"
SESSION_SECRET = "engine-test-session-secret-of-32-bytes-or-more"


class DropIn(DropInSession):
    """The original module's style: the session made in initialize(), saved by hand."""

    def commit(self) -> Any:
        self.session.save()

    async def logout(self) -> None:
        self.session.destroy()

    async def regenerate(self) -> None:
        self.session.regenerate()


class Mixin(tornsession.SessionMixin, tornado.web.RequestHandler):
    """The README's style: loaded in prepare(), saved before the response."""

    def commit(self) -> Any:
        return None

    async def logout(self) -> None:
        await self.session.adestroy()

    async def regenerate(self) -> None:
        await self.session.aregenerate()


def routes(base: type) -> list[tuple[str, type]]:
    class Increment(base):  # type: ignore[misc]
        def get(self) -> None:  # no await between read and write
            n = self.session.get("n", 0) + 1
            self.session["n"] = n
            self.commit()
            self.write(str(n))

    class IncrementAwaiting(base):  # type: ignore[misc]
        async def get(self) -> None:
            n = self.session.get("n", 0)
            await asyncio.sleep(0.001)  # other requests run here
            self.session["n"] = n + 1
            self.commit()
            self.write(str(n + 1))

    class SlowWrite(base):  # type: ignore[misc]
        async def get(self) -> None:
            self.session.get("n")
            if self.get_argument("early", None):  # changed before it waits: keeps its turn
                self.session["n"] = 100
            await asyncio.sleep(float(self.get_argument("sleep", "0.6")))
            self.session["n"] = 100
            self.session["slow"] = True
            self.commit()

    class Peek(base):  # type: ignore[misc]
        def get(self) -> None:
            self.write(
                {"id": self.session.session_id, "n": self.session.get("n"), **dict(self.session)}
            )

    class Logout(base):  # type: ignore[misc]
        async def post(self) -> None:
            await self.logout()
            if self.get_argument("flash", None):
                self.session["flash"] = "you are logged out"
                self.commit()

    class Regenerate(base):  # type: ignore[misc]
        async def post(self) -> None:
            self.session.get("n")  # loaded now
            await asyncio.sleep(float(self.get_argument("sleep", "0")))
            await self.regenerate()

    class Big(base):  # type: ignore[misc]
        def get(self) -> None:
            self.session["note"] = "x" * 5000
            self.commit()
            self.write("saved")

    class Raise(base):  # type: ignore[misc]
        def get(self) -> None:
            self.session["half_done"] = True
            raise RuntimeError("the handler failed after changing the session")

    return [
        (r"/inc", Increment),
        (r"/inc-await", IncrementAwaiting),
        (r"/slow", SlowWrite),
        (r"/peek", Peek),
        (r"/logout", Logout),
        (r"/regenerate", Regenerate),
        (r"/big", Big),
        (r"/raise", Raise),
    ]


class InFlight(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(str(_ordering.sessions_in_flight()))


class Server:
    """A Tornado app on its own IOLoop in a thread, on a port the OS picked."""

    def __init__(self, app: tornado.web.Application, **server_options: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port: int = sockets[0].getsockname()[1]
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def serve() -> None:
                self.server = tornado.httpserver.HTTPServer(app, **server_options)
                self.server.add_sockets(sockets)
                started.set()

            self.loop.run_until_complete(serve())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def stop(self) -> None:
        async def close() -> None:
            self.server.stop()
            await self.server.close_all_connections()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


#: The stores the engine tests run on.
STORES = NATIVE_STORE_KINDS
STYLES = {"dropin": DropIn, "mixin": Mixin}


def every_store_and_style(kinds: Sequence[str] = STORES) -> pytest.MarkDecorator:
    """Runs a test once per API style and store kind (its ``style`` and ``kind`` arguments)."""
    return pytest.mark.parametrize(("style", "kind"), [(s, k) for k in kinds for s in STYLES])


@pytest.fixture
def make_store(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    return lambda kind: StoreOpener(kind, request)()


@pytest.fixture
def serve(make_store: Callable[[str], Any]) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(
        style: str,
        kind: str,
        store: Any = None,
        app_routes: Callable[[type], list[tuple[str, type]]] = routes,
        **options: Any,
    ) -> Server:
        store = make_store(kind) if store is None else store
        manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store, **options)
        app = tornado.web.Application(
            [*app_routes(STYLES[style]), (r"/in-flight", InFlight)], cookie_secret=COOKIE_SECRET
        )
        app.session_manager = manager  # type: ignore[attr-defined]
        app.store = store  # type: ignore[attr-defined]
        server = Server(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def peek(port: int, cookies: dict[str, str]) -> dict[str, Any]:
    with Browser(port) as browser:
        browser.cookies = dict(cookies)
        status, body = browser.get("/peek")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result


def start_session(port: int) -> dict[str, str]:
    """The cookies of a new session, counted once (``/inc`` answered 1)."""
    with Browser(port) as browser:
        assert browser.get("/inc") == (200, "1")
        return dict(browser.cookies)


def connect(server: Server, path: str, cookies: dict[str, str]) -> Any:
    """A WebSocket to ``path`` on ``server``, sending ``cookies``, opened on the server's loop."""

    async def open_socket() -> Any:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        request = HTTPRequest(
            f"ws://127.0.0.1:{server.port}{path}", headers=headers, request_timeout=5
        )
        return await tornado.websocket.websocket_connect(request)

    return asyncio.run_coroutine_threadsafe(open_socket(), server.loop).result(10)


def on_loop(server: Server, start: Callable[[], Any]) -> Any:
    """What the awaitable `start()` makes on the server's loop gives."""

    async def wait() -> Any:
        return await start()

    return asyncio.run_coroutine_threadsafe(wait(), server.loop).result(10)


def digest_of(session_id: str) -> str:
    """The digest tornsession signs an id with (HMAC-SHA256 under the session secret)."""
    return hmac.new(SESSION_SECRET.encode(), session_id.encode(), "sha256").hexdigest()


def record_exists(server: Server, session_id: str) -> bool:
    """Whether the store still holds a record under `session_id` (asked through a manager of
    the same secret: a missing record gives a fresh session with another id)."""
    manager = tornsession.SessionManager(SESSION_SECRET, store=server.app.store)  # type: ignore[attr-defined]
    return bool(manager.get(session_id, digest_of(session_id)).session_id == session_id)
