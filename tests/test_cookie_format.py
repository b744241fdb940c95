"""``cookie_format``: the original's two signed cookies ("pair", the default) or one compact
cookie ("compact"), over real HTTP. Both formats are read on every path (drop-in, mixin,
``manager.get/set``, a handler overriding the cookie methods), so switching logs nobody out."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web
import tornsession
from support.browser import Browser
from support.engine_app import COOKIE_SECRET, STYLES, Mixin, Server, routes
from support.handlers import CookieJarHandler
from support.servers import RedisServer

SECRET = "cookie-format-test-session-secret-of-32-bytes"
OLD_SECRET = "cookie-format-test-old-secret-of-32-bytes-too"
COMPACT = re.compile(r"^[0-9a-f]{32}\.[0-9a-z]{1,12}\.[A-Za-z0-9_-]{32}$")


class ManagerStyle(tornado.web.RequestHandler):
    """The original module's other style: ``manager.get(self)`` and ``manager.set(self, s)``."""

    def prepare(self) -> None:
        self.session = self.application.session_manager.get(self)  # type: ignore[attr-defined]

    def commit(self) -> None:
        self.application.session_manager.set(self, self.session)  # type: ignore[attr-defined]


class OverridingMixin(Mixin):
    """A mixin handler with its own get_cookie/get_secure_cookie: cookies are read through
    them, not from the header in Rust."""

    calls = 0

    def get_cookie(self, name: str, *args: Any, **kwargs: Any) -> Any:
        OverridingMixin.calls += 1
        return super().get_cookie(name, *args, **kwargs)

    def get_secure_cookie(self, name: str, *args: Any, **kwargs: Any) -> bytes | None:
        OverridingMixin.calls += 1
        return super().get_secure_cookie(name, *args, **kwargs)


BASES: dict[str, type] = {
    "dropin": STYLES["dropin"],
    "mixin": Mixin,
    "manager": ManagerStyle,
    "overriding": OverridingMixin,
}


class AsyncIncrement(tornado.web.RequestHandler):
    """The drop-in session through its async methods: ``TornadoSession.aload()``, ``asave()``."""

    async def get(self) -> None:
        manager = self.application.session_manager  # type: ignore[attr-defined]
        session = await tornsession.TornadoSession.aload(manager, self)
        session["n"] = session.get("n", 0) + 1
        await session.asave()
        self.write(str(session["n"]))


class Digest(tornado.web.RequestHandler):
    def get(self) -> None:
        manager = self.application.session_manager  # type: ignore[attr-defined]
        session = manager.get(self)
        self.write({"id": session.session_id, "hmac_digest": session.hmac_digest})


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(
        style: str,
        store: Any,
        secret: Any = SECRET,
        cookie_secret: str | None = COOKIE_SECRET,
        **options: Any,
    ) -> Server:
        manager = tornsession.TornadoSessionManager(secret, store=store, **options)
        settings: dict[str, Any] = {"cookie_secret": cookie_secret} if cookie_secret else {}
        app = tornado.web.Application(
            [*routes(BASES[style]), (r"/digest", Digest), (r"/ainc", AsyncIncrement)], **settings
        )
        app.session_manager = manager  # type: ignore[attr-defined]
        server = Server(app)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def set_cookies(browser: Browser) -> dict[str, str]:
    """The last response's Set-Cookie headers, by cookie name (value as sent; a clearing
    cookie's ``""`` as the empty string)."""
    found = {}
    for header in browser.last_set_cookie:
        name, _, rest = header.partition("=")
        value = rest.split(";")[0]
        found[name] = "" if value == '""' else value
    return found


def peek(browser: Browser) -> dict[str, Any]:
    return browser.get_json("/peek")


@pytest.mark.parametrize("style", BASES)
def test_compact_is_one_short_cookie_that_round_trips(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style, tornsession.MemoryStore(), cookie_format="compact")
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        assert len(browser.last_set_cookie) == 1, browser.last_set_cookie
        attributes = browser.last_set_cookie[0].split("; ")[1:]
        assert {"HttpOnly", "Path=/", "SameSite=Lax"} <= set(attributes)  # as the pair's
        value = set_cookies(browser)["session_id"]
        assert COMPACT.match(value), value
        assert len(value) < 100 and "|" not in value
        assert list(browser.cookies) == ["session_id"]
        assert browser.get("/inc") == (200, "2")
        assert browser.last_set_cookie == []  # not due again within the day
        seen = peek(browser)
        assert seen["n"] == 2 and value.startswith(seen["id"] + ".")
        if style != "manager":
            old_id = seen["id"]
            assert browser.request("POST", "/regenerate")[0] == 200
            renewed = set_cookies(browser)["session_id"]
            assert COMPACT.match(renewed) and not renewed.startswith(old_id)
            assert peek(browser)["n"] == 2
        if style == "overriding":
            assert OverridingMixin.calls > 0


@pytest.mark.parametrize("first", ["pair", "compact"])
def test_the_async_methods_read_both_formats(first: str, start: Callable[..., Server]) -> None:
    store = tornsession.MemoryStore()
    then = "compact" if first == "pair" else "pair"
    before = start("dropin", store, cookie_format=first)
    after = start("dropin", store, cookie_format=then)
    with Browser(before.port) as browser:
        assert browser.get("/ainc") == (200, "1")
        assert browser.get("/ainc") == (200, "2")
        assert browser.last_set_cookie == []
        browser.port = after.port
        assert browser.get("/ainc") == (200, "3")
        sent = set_cookies(browser)
        if then == "compact":
            assert COMPACT.match(sent["session_id"]) and sent["hmac_digest"] == ""
            assert list(browser.cookies) == ["session_id"]
        else:
            assert sorted(sent) == ["hmac_digest", "session_id"]
        assert browser.get("/ainc") == (200, "4")
        assert browser.last_set_cookie == []


@pytest.mark.parametrize("fmt", ["pair", "compact"])
def test_hmac_digest_keeps_its_meaning(fmt: str, start: Callable[..., Server]) -> None:
    server = start("mixin", tornsession.MemoryStore(), cookie_format=fmt)
    with Browser(server.port) as browser:
        browser.get("/inc")
        seen = browser.get_json("/digest")
    expected = hmac.new(SECRET.encode(), seen["id"].encode(), "sha256").hexdigest()
    assert seen["hmac_digest"] == expected


@pytest.mark.parametrize("style", BASES)
def test_pair_to_compact_keeps_the_session(style: str, start: Callable[..., Server]) -> None:
    store = tornsession.MemoryStore()
    before = start(style, store, cookie_format="pair")
    after = start(style, store, cookie_format="compact")
    with Browser(before.port) as browser:
        assert browser.get("/inc") == (200, "1")
        assert sorted(browser.cookies) == ["hmac_digest", "session_id"]
        old_id = peek(browser)["id"]
        browser.port = after.port
        assert browser.get("/inc") == (200, "2")
        sent = set_cookies(browser)
        assert COMPACT.match(sent["session_id"]) and sent["session_id"].startswith(old_id)
        assert sent["hmac_digest"] == ""  # the now-unused digest cookie is cleared
        assert list(browser.cookies) == ["session_id"]
        assert browser.get("/inc") == (200, "3")
        assert browser.last_set_cookie == []
        assert peek(browser)["id"] == old_id


@pytest.mark.parametrize("style", BASES)
def test_compact_to_pair_keeps_the_session(style: str, start: Callable[..., Server]) -> None:
    store = tornsession.MemoryStore()
    before = start(style, store, cookie_format="compact")
    after = start(style, store)  # "pair", the default
    with Browser(before.port) as browser:
        assert browser.get("/inc") == (200, "1")
        old_id = peek(browser)["id"]
        browser.port = after.port
        assert browser.get("/inc") == (200, "2")
        sent = set_cookies(browser)
        assert sorted(sent) == ["hmac_digest", "session_id"]
        assert all(v.startswith('"2|') for v in sent.values())  # the compact value overwritten
        assert browser.get("/inc") == (200, "3")
        assert browser.last_set_cookie == []
        assert peek(browser)["id"] == old_id


def test_a_leftover_digest_cookie_does_not_spoil_a_compact_one(
    start: Callable[..., Server],
) -> None:
    store = tornsession.MemoryStore()
    pair = start("mixin", store, cookie_format="pair")
    compact = start("mixin", store, cookie_format="compact")
    with Browser(pair.port) as a, Browser(compact.port) as b:
        a.get("/inc")
        b.get("/inc")
        b.get("/inc")
        # A jar mid-switch: the digest cookie of one session, the compact cookie of another.
        mixed = {"hmac_digest": a.cookies["hmac_digest"], "session_id": b.cookies["session_id"]}
    with Browser(compact.port) as browser:
        browser.cookies = dict(mixed)
        assert peek(browser)["n"] == 2
    with Browser(pair.port) as browser:
        browser.cookies = dict(mixed)
        assert peek(browser)["n"] == 2  # the pair is not whole: the compact cookie still opens


def test_compact_needs_no_cookie_secret(start: Callable[..., Server]) -> None:
    server = start("mixin", tornsession.MemoryStore(), cookie_secret=None, cookie_format="compact")
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        assert browser.get("/inc") == (200, "2")
        # A pair left from when the app had a cookie_secret: a fresh session, not a 500.
        browser.cookies = {"session_id": '"2|1:0|10:1700000000|10:session_id|4:YWJj|00"'}
        assert browser.get("/inc") == (200, "1")


@pytest.mark.parametrize("style", ["dropin", "mixin"])
def test_logout_clears_both_names(style: str, start: Callable[..., Server]) -> None:
    server = start(style, tornsession.MemoryStore(), cookie_format="compact")
    with Browser(server.port) as browser:
        browser.get("/inc")
        assert browser.request("POST", "/logout")[0] == 200
        cleared = set_cookies(browser)
        assert cleared == {"session_id": "", "hmac_digest": ""}
        assert browser.cookies == {}
        assert browser.get("/inc") == (200, "1")


@pytest.mark.parametrize("style", BASES)
def test_an_older_secret_opens_and_is_resent(style: str, start: Callable[..., Server]) -> None:
    store = tornsession.MemoryStore()
    old = start(style, store, secret=OLD_SECRET, cookie_format="compact")
    rotated = start(style, store, secret=[SECRET, OLD_SECRET], cookie_format="compact")
    new_only = start(style, store, secret=SECRET, cookie_format="compact")
    with Browser(old.port) as browser:
        browser.get("/inc")
        first = browser.cookies["session_id"]
        browser.port = rotated.port
        assert browser.get("/inc") == (200, "2")
        resent = set_cookies(browser)["session_id"]
        assert resent != first and resent.split(".")[0] == first.split(".")[0]
        browser.port = new_only.port
        assert browser.get("/inc") == (200, "3")
    if style == "manager":
        return  # manager.get(handler) raises InvalidSessionException for it (the original API)
    with Browser(new_only.port) as stale:
        stale.cookies = {"session_id": first}
        assert stale.get("/inc") == (200, "1")


def mutations(value: str, count: int, seed: int) -> Iterator[str]:
    """``count`` random edits of ``value`` (one to three changes each), never ``value`` itself
    or a form of it the cookie parser reads as ``value`` (quoted)."""
    rng = random.Random(seed)
    alphabet = '0123456789abcdefxyzABCXYZ-_.|=é"+/'
    made = 0
    while made < count:
        chars = list(value)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(5)
            at = rng.randrange(len(chars) + (op == 1))
            if op == 0 and chars:
                chars[min(at, len(chars) - 1)] = rng.choice(alphabet)
            elif op == 1:
                chars.insert(at, rng.choice(alphabet))
            elif op == 2 and len(chars) > 1:
                del chars[min(at, len(chars) - 1)]
            elif op == 3:
                chars = chars[: max(1, at)]
            else:
                parts = "".join(chars).split(".")
                rng.shuffle(parts)
                chars = list(".".join(parts))
        mutated = "".join(chars)
        if mutated.strip('"') == value:
            continue
        made += 1
        yield mutated


@pytest.mark.parametrize("style", ["dropin", "mixin", "overriding"])
def test_tampered_compact_cookies_give_fresh_sessions(
    style: str, start: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = start(style, tornsession.MemoryStore(), cookie_format="compact")
    with Browser(server.port) as browser:
        browser.get("/inc")
        value = browser.cookies["session_id"]
        good_id = peek(browser)["id"]
    extra = [
        value.split(".")[0],  # the bare id
        value.rsplit(".", 1)[0],  # no MAC
        value + value,
        value.upper(),
        '"2|1:0|10:1700000000|10:session_id|4:YWJj|00"',  # a pair value under the name
    ]
    warned = 0
    with Browser(server.port) as browser, caplog.at_level(logging.WARNING, "tornsession"):
        for mutated in [*extra, *mutations(value, 1000, seed=20)]:
            browser.cookies = {"session_id": mutated}
            caplog.clear()
            status, body = browser.get("/peek")
            assert status == 200, (mutated, body)
            seen = json.loads(body)
            assert seen["id"] != good_id and seen["n"] is None, mutated
            warned += any("invalid session cookie" in r.getMessage() for r in caplog.records)
    assert warned > 500  # malformed or forged compact values are logged as the pair's are


def test_manager_get_refuses_a_forged_compact_cookie_as_a_forged_pair(
    start: Callable[..., Server],
) -> None:
    """``manager.get(handler)`` raises InvalidSessionException for a forged compact cookie, as
    it does for a pair whose digest does not match (the original API)."""
    manager = tornsession.TornadoSessionManager(SECRET, cookie_format="compact")

    class Handler(CookieJarHandler):
        def __init__(self, cookie: str) -> None:
            super().__init__()
            self.cookie = cookie

        def get_cookie(self, name: str) -> str | None:
            return self.cookie if name == "session_id" else None

    forged = f"{'ab' * 16}.tfrksg.{'A' * 32}"
    with pytest.raises(tornsession.InvalidSessionException):
        manager.get(Handler(forged))
    assert manager.get(Handler("no-dots-here")).session_id  # not compact-shaped: absent


@pytest.mark.parametrize("value", ["Compact", "pairs", "", " pair", 1, b"compact", ["pair"]])
@pytest.mark.parametrize("cls", [tornsession.SessionManager, tornsession.TornadoSessionManager])
def test_cookie_format_is_checked_when_built(cls: type, value: Any) -> None:
    with pytest.raises(ValueError, match=r"cookie_format must be 'pair' or 'compact'"):
        cls(SECRET, cookie_format=value)


def test_the_quick_start_app_uses_compact_and_works(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Quick start for a new app", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert 'cookie_format="compact"' in block
    edits = {
        '"redis://127.0.0.1:6379/0"': "REDIS_URL",
        "app.listen(8888)": "SERVE(app)",
        "await asyncio.Event().wait()": "await STOP.wait()",
    }
    for old, new in edits.items():
        assert old in block, old
        block = block.replace(old, new)
    for name in ("SESSION_SECRET", "COOKIE_SECRET"):
        monkeypatch.setenv(name, f"quick-start-{name.lower()}-of-32-bytes-or-more")
    started = threading.Event()
    ports: list[int] = []
    loops: list[asyncio.AbstractEventLoop] = []
    servers: list[tornado.httpserver.HTTPServer] = []

    def serve(app: tornado.web.Application) -> None:
        sock, port = tornado.testing.bind_unused_port()
        servers.append(tornado.httpserver.HTTPServer(app))
        servers[0].add_socket(sock)
        ports.append(port)
        loops.append(asyncio.get_running_loop())
        started.set()

    namespace: dict[str, Any] = {"__name__": "quick_start", "REDIS_URL": redis_server.url}
    namespace["SERVE"] = serve
    exec(compile(block, "README Quick start", "exec"), namespace)

    async def main() -> None:
        namespace["STOP"] = asyncio.Event()
        await namespace["main"]()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    assert not errors, errors
    try:
        with Browser(ports[0]) as browser:
            assert browser.get("/") == (200, "visits: 1")
            assert len(browser.last_set_cookie) == 1
            assert COMPACT.match(browser.cookies["session_id"])
            assert browser.get("/") == (200, "visits: 2")
            assert browser.request("POST", "/login", "name=ann")[0] == 302
            assert COMPACT.match(set_cookies(browser)["session_id"])
            assert browser.get("/") == (200, "visits: 3")
            assert browser.request("POST", "/logout")[0] == 302
            assert set_cookies(browser) == {"session_id": "", "hmac_digest": ""}
            assert browser.get("/") == (200, "visits: 1")
    finally:
        # The listening socket is closed before the loop, or it leaks (a ResourceWarning in
        # whichever test the garbage collector happens to run next).
        loops[0].call_soon_threadsafe(servers[0].stop)
        loops[0].call_soon_threadsafe(namespace["STOP"].set)
        thread.join(10)
