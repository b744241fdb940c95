"""``CookieStore`` (issue 21) over real HTTP with real Tornado: the whole session sealed in the id
cookie, nothing on the server. The Quick start on it in both styles, two app processes sharing
only the secret, secret rotation, expiry judged from inside the sealed value, logout,
regenerate, per-user revocation through a server store (MemoryStore, Redis, ...), and
concurrent requests. Tampering, plaintext and the size limit: tests/test_cookie_store_sealing.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tornado.web
import tornsession
from support.any_store import StoreOpener
from support.browser import Browser
from support.cookie_store import (
    OLD_SECRET,
    SEALED,
    SECRET,
    cookie_store,
    peek,
    sent,
    serve_cookie_store,
)
from support.engine_app import STYLES, Server
from support.processes import AppProcess
from support.servers import RedisServer
from support.stores import CasDictStore
from support.threads import run_concurrently

STYLE_NAMES = list(STYLES)


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    yield from serve_cookie_store()


def replay(port: int, cookie: str, path: str = "/peek") -> tuple[dict[str, Any], str | None]:
    """A new browser holding only ``cookie`` as ``session_id``: the page (JSON) and the
    session cookie its response set (None: none)."""
    with Browser(port) as browser:
        browser.cookies = {"session_id": cookie}
        page = browser.get_json(path)
        return page, sent(browser)


# --- the Quick start on CookieStore ----------------------------------------------------------


class QuickMain(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["visits"] = self.session.get("visits", 0) + 1
        self.write(f"visits: {self.session['visits']}")


class QuickLogin(tornsession.SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        self.session["user"] = self.get_body_argument("name")
        await self.session.aregenerate()
        self.write(f"hello {self.session['user']} {self.session.session_id}")


class QuickLogout(tornsession.SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        await self.session.adestroy()
        self.write("bye")


class DropInMain(tornado.web.RequestHandler):
    """The original module's style: ``TornadoSession(manager, self)``, ``save()`` by hand."""

    def prepare(self) -> None:
        manager = self.settings["session_manager"]
        self.session = tornsession.TornadoSession(manager, self)

    def get(self) -> None:
        self.session["visits"] = self.session.get("visits", 0) + 1
        self.session.save()
        self.write(f"visits: {self.session['visits']}")


class DropInLogin(DropInMain):
    def post(self) -> None:
        self.session["user"] = self.get_body_argument("name")
        self.session.regenerate()
        self.write(f"hello {self.session['user']} {self.session.session_id}")


class DropInLogout(DropInMain):
    def post(self) -> None:
        self.session.destroy()
        self.write("bye")


QUICK_START: dict[str, list[tuple[str, type]]] = {
    "mixin": [(r"/", QuickMain), (r"/login", QuickLogin), (r"/logout", QuickLogout)],
    "dropin": [(r"/", DropInMain), (r"/login", DropInLogin), (r"/logout", DropInLogout)],
}


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_the_quick_start_runs_on_a_cookie_store(style: str) -> None:
    manager = tornsession.TornadoSessionManager(SECRET, store=cookie_store(), idle_timeout=3600)
    # No cookie_secret: the sealed cookie is set with set_cookie.
    server = Server(tornado.web.Application(QUICK_START[style], session_manager=manager))
    try:
        with Browser(server.port) as browser:
            assert browser.get("/") == (200, "visits: 1")
            assert list(browser.cookies) == ["session_id"]  # one cookie, no hmac_digest
            assert len(browser.last_set_cookie) == 1
            attributes = browser.last_set_cookie[0].split("; ")[1:]
            assert {"HttpOnly", "Path=/", "SameSite=Lax"} <= set(attributes), attributes
            first = browser.cookies["session_id"]
            assert SEALED.match(first), first
            assert browser.get("/") == (200, "visits: 2")
            assert browser.cookies["session_id"] != first  # a write reseals
            status, text = browser.request("POST", "/login", "name=ann")
            assert status == 200 and text.startswith("hello ann "), text
            assert browser.get("/") == (200, "visits: 3")  # regenerate kept the data
            status, text = browser.request("POST", "/logout", "")
            assert (status, text) == (200, "bye")
            assert sent(browser) == "" and "session_id" not in browser.cookies
            assert browser.get("/") == (200, "visits: 1")
    finally:
        server.stop()


# --- two processes, one secret ---------------------------------------------------------------


def test_two_app_processes_sharing_only_the_secret_serve_one_session(
    start_app_process: Callable[..., AppProcess],
) -> None:
    a = start_app_process("tests.apps.cookie_store_app")
    b = start_app_process("tests.apps.cookie_store_app")
    assert a.port != b.port
    with Browser(a.port) as browser:
        ids = set()
        for n in range(1, 7):
            app = a if n % 2 else b
            page = browser.get_json(app.url("/inc"))
            assert (page["n"], page["port"]) == (n, app.port), page
            ids.add(page["id"])
        assert len(ids) == 1  # one session, whichever process served it
        login = json.loads(browser.request("POST", b.url("/login?user=ann"), "")[1])
        seen = browser.get_json(a.url("/peek"))
        assert seen["user"] == "ann" and seen["n"] == 6 and seen["id"] == login["id"] != ids.pop()
    # A third process with another secret opens none of it.
    other = start_app_process("tests.apps.cookie_store_app", "--secret", OLD_SECRET)
    page, _ = replay(other.port, browser.cookies["session_id"])
    assert page["n"] is None and page["user"] is None


# --- secret rotation -------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_rotation_opens_an_old_cookie_reseals_it_and_the_retired_secret_stops(
    style: str, start: Callable[..., Server]
) -> None:
    old = start(style, secret=OLD_SECRET)
    both = start(style, secret=[SECRET, OLD_SECRET])
    new = start(style, secret=SECRET)
    with Browser(old.port) as browser:
        assert browser.get_json("/inc")["n"] == 1
        assert browser.get_json("/inc")["n"] == 2
        sealed_old = browser.cookies["session_id"]
    page, _ = replay(new.port, sealed_old)
    assert page["n"] is None  # the new secret alone does not open it
    # A request that changes nothing (the drop-in still calls save()) with [new, old]: opened,
    # and resealed under the new secret.
    page, resealed = replay(both.port, sealed_old, "/touch")
    assert page["n"] == 2, page
    assert resealed and resealed != sealed_old and SEALED.match(resealed), resealed
    page, again = replay(new.port, resealed, "/touch")
    assert page["n"] == 2 and again is None, (page, again)  # the new key, and not due again
    page, again = replay(both.port, resealed, "/touch")
    assert page["n"] == 2 and again is None  # already under the newest secret
    page, _ = replay(old.port, resealed)
    assert page["n"] is None  # sealed under the new secret only
    # The old secret retired: the old cookie opens nothing, the resealed one still works.
    page, fresh = replay(new.port, sealed_old)
    assert page["n"] is None and page["data"] == {}
    assert fresh is None  # a read-only fresh session is not sent
    with Browser(new.port) as browser:
        browser.cookies = {"session_id": resealed}
        assert browser.get_json("/inc")["n"] == 3


# --- expiry from inside the sealed value -----------------------------------------------------


def test_idle_timeout_slides_only_when_due_and_an_expired_cookie_opens_nothing(
    start: Callable[..., Server],
) -> None:
    # Sealed times are whole seconds: every wait below keeps more than a second of slack.
    idle = 6  # resealed by a read once older than min(6 / 2, 60) = 3 s
    server = start("mixin", idle_timeout=idle)
    began = time.monotonic()

    def at(seconds: float) -> None:
        time.sleep(max(0.0, began + seconds - time.monotonic()))

    with Browser(server.port) as browser:
        first = browser.get_json("/inc")
        c0 = browser.cookies["session_id"]
        at(0.3)
        assert peek(browser)["n"] == 1
        assert browser.last_set_cookie == []  # young: a read-only request sends nothing
        at(4.0)
        assert peek(browser)["n"] == 1
        c1 = sent(browser)
        assert c1 and c1 != c0, browser.last_set_cookie  # due: the read reseals (sliding)
        at(7.5)
    page, _ = replay(server.port, c0)  # 7.5 s old: past the idle timeout
    assert page["n"] is None and page["id"] != first["id"], page
    page, c2 = replay(server.port, c1)  # 3.5 s old: alive past the first cookie's expiry
    assert page["n"] == 1 and page["id"] == first["id"], page
    at(11.0)
    page, _ = replay(server.port, c1)  # replayed once 7 s old: expired
    assert page["n"] is None and page["id"] != first["id"], page
    if c2:  # resealed at 7.5 s: 3.5 s old, still alive
        page, _ = replay(server.port, c2)
        assert page["n"] == 1, page


def test_lifetime_ends_an_active_session_and_no_reseal_extends_it(
    start: Callable[..., Server],
) -> None:
    server = start("dropin", lifetime=4)
    began = time.monotonic()
    with Browser(server.port) as browser:
        first = browser.get_json("/inc")
        seals = [browser.cookies["session_id"]]
        for n, when in ((2, 1.0), (3, 2.0)):
            time.sleep(max(0.0, began + when - time.monotonic()))
            page = browser.get_json("/inc")
            assert (page["n"], page["id"]) == (n, first["id"]), page
            seals.append(browser.cookies["session_id"])
        assert len(set(seals)) == 3  # each write resealed it
        time.sleep(max(0.0, began + 5.5 - time.monotonic()))
        page = browser.get_json("/inc")  # however active, 5.5 s after creation it is gone
        assert page["n"] == 1 and page["id"] != first["id"], page
    for seal in seals:  # a replay of any earlier seal, the newest too, opens nothing
        page, _ = replay(server.port, seal)
        assert page["n"] is None, page


# --- logout and regenerate -------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_destroy_clears_the_cookie_and_regenerate_keeps_the_data_under_a_new_id(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style)
    with Browser(server.port) as browser:
        assert browser.get_json("/inc")["n"] == 1
        assert browser.request("POST", "/put?key=colour&value=teal", "")[0] == 200
        before = peek(browser)
        cookie = browser.cookies["session_id"]
        assert browser.request("POST", "/regenerate", "")[0] == 200
        renewed = sent(browser)
        assert renewed and renewed != cookie and SEALED.match(renewed)
        after = peek(browser)
        assert after["id"] != before["id"]
        assert after["data"] == before["data"] == {"n": 1, "colour": "teal"}
        assert browser.request("POST", "/logout", "")[0] == 200
        assert sent(browser) == "", browser.last_set_cookie  # the cookie is cleared
        assert "session_id" not in browser.cookies
        page = peek(browser)
        assert page["n"] is None and page["data"] == {}
        assert browser.get_json("/inc")["n"] == 1


# --- per-user revocation ---------------------------------------------------------------------

#: "python": a store with only get/set/delete; "python-cas": with compare_and_set too.
REVOCATION_KINDS = ["memory", "redis", "memcached", "sqlite", "file", "python", "python-cas"]


def login(browser: Browser, user: str) -> dict[str, Any]:
    status, _ = browser.request("POST", f"/login?user={user}", "")
    assert status == 200
    assert sent(browser), browser.last_set_cookie
    page = peek(browser)
    assert page["user"] == user
    return page


@pytest.mark.parametrize("style", STYLE_NAMES)
@pytest.mark.parametrize("kind", REVOCATION_KINDS)
def test_destroy_user_sessions_ends_the_users_other_cookie_sessions(
    kind: str, style: str, start: Callable[..., Server], request: pytest.FixtureRequest
) -> None:
    revocation = CasDictStore() if kind == "python-cas" else StoreOpener(kind, request)()
    server = start(style, revocation=revocation)
    name, stranger = f"u-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    with Browser(server.port) as a, Browser(server.port) as b, Browser(server.port) as c:
        login(a, name)
        kept = login(b, name)
        login(c, stranger)
        a_cookie = a.cookies["session_id"]
        status, text = b.request("POST", "/others", "")
        assert status == 200, text
        assert isinstance(json.loads(text)["ended"], int)
        assert sent(b), "keep=: the kept session's response reseals it"
        assert peek(b)["user"] == name and peek(b)["id"] == kept["id"]
        page = peek(a)
        assert page["user"] is None and page["data"] == {}  # a's cookie session ended
        assert replay(server.port, a_cookie)[0]["user"] is None  # and stays ended
        assert peek(c)["user"] == stranger  # another user's session untouched
        # Logging in again works: the new session is not revoked.
        login(a, name)
        assert peek(a)["user"] == name
        # Everywhere: every session of the user, the asking one too.
        status, text = b.request("POST", "/everywhere", "")
        assert status == 200, text
        assert peek(a)["user"] is None and peek(b)["user"] is None
        assert peek(c)["user"] == stranger


def test_revocation_through_redis_reaches_another_process(
    start_app_process: Callable[..., AppProcess], redis_server: RedisServer
) -> None:
    shared = ["--revocation", "redis", "--url", redis_server.url]
    a = start_app_process("tests.apps.cookie_store_app", *shared)
    b = start_app_process("tests.apps.cookie_store_app", *shared)
    name = f"u-{uuid.uuid4().hex[:8]}"
    with Browser(a.port) as x, Browser(b.port) as y:
        assert x.request("POST", "/login?user=" + name, "")[0] == 200
        assert y.request("POST", "/login?user=" + name, "")[0] == 200
        assert x.get_json("/peek")["user"] == name
        assert y.request("POST", "/others", "")[0] == 200
        assert x.get_json("/peek")["user"] is None  # ended on a, from b
        assert y.get_json("/peek")["user"] == name
        assert x.get_json(b.url("/peek"))["user"] is None


def test_without_a_revocation_store_set_user_works_and_revoking_names_revocation(
    start: Callable[..., Server],
) -> None:
    server = start("mixin")
    with Browser(server.port) as browser:
        login(browser, "ann")  # the owner is sealed in the cookie
        assert peek(browser)["user"] == "ann"
        assert browser.request("POST", "/others", "")[0] == 500
        assert peek(browser)["user"] == "ann"
    manager = tornsession.TornadoSessionManager(SECRET, store=cookie_store())
    with pytest.raises(NotImplementedError, match="revocation="):
        manager.destroy_user_sessions("ann")
    with pytest.raises(NotImplementedError, match="revocation="):
        manager.destroy_user_sessions("ann", keep="x" * 32)

    async def asynchronously() -> None:
        await manager.adestroy_user_sessions("ann")

    with pytest.raises(NotImplementedError, match="revocation="):
        asyncio.run(asynchronously())


@pytest.mark.parametrize("revocation", [None, "memory"])
def test_user_sessions_is_not_implemented(revocation: str | None) -> None:
    store = cookie_store(tornsession.MemoryStore() if revocation else None)
    manager = tornsession.TornadoSessionManager(SECRET, store=store)
    with pytest.raises(NotImplementedError):
        manager.user_sessions("ann")


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_many_connections_at_once_each_count_their_own_session(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style)
    counts: dict[int, list[int]] = {}

    def visitor(index: int) -> None:
        with Browser(server.port) as browser:
            counts[index] = [browser.get_json("/slow")["n"] for _ in range(25)]

    run_concurrently(visitor, 16)
    assert all(seen == list(range(1, 26)) for seen in counts.values()), counts


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_concurrent_requests_of_one_visitor_each_answer_with_a_cookie(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style)
    with Browser(server.port) as first:
        assert first.get_json("/inc")["n"] == 1
        cookie = first.cookies["session_id"]
    answers: list[tuple[int, str | None]] = []

    def request(_: int) -> None:
        with Browser(server.port) as browser:
            browser.cookies = {"session_id": cookie}
            status = browser.status("/slow")
            answers.append((status, sent(browser)))

    run_concurrently(request, 8)
    assert [status for status, _ in answers] == [200] * 8
    assert all(value and SEALED.match(value) for _, value in answers), answers
    # Whichever the browser keeps (the last) opens the session.
    for _, value in answers:
        assert value is not None
        page, _ = replay(server.port, value)
        assert page["n"] is not None and page["n"] >= 2, page


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_a_logout_racing_requests_gives_no_500_and_the_server_keeps_serving(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style, revocation=tornsession.MemoryStore())
    with Browser(server.port) as first:
        login(first, "racer")
        cookie = first.cookies["session_id"]
    statuses: list[int] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        with Browser(server.port) as browser:
            for i in range(20):
                browser.cookies = {"session_id": cookie}
                if index % 4 == 0 and i % 5 == 0:
                    status, _ = browser.request("POST", "/logout", "")
                elif index % 4 == 1 and i % 7 == 0:
                    status, _ = browser.request("POST", "/everywhere", "")
                else:
                    status, _ = browser.get("/slow")
                with lock:
                    statuses.append(status)

    run_concurrently(racer, 8)
    # 403: an /everywhere whose session another request had already ended.
    assert len(statuses) == 160 and set(statuses) <= {200, 403}, sorted(set(statuses))
    assert statuses.count(200) > 100
    with Browser(server.port) as browser:
        assert browser.get_json("/inc")["n"] == 1
        assert browser.get_json("/inc")["n"] == 2
    # Revoked "everywhere": the cookie from before the race opens nothing any more.
    page, _ = replay(server.port, cookie)
    assert page["user"] is None
