"""Session lifecycle: expiry on every store, regenerate, destroy, save-if-changed, the mixin and
its async path, secret rotation, flash messages, max_size and logging."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import tornado.web
import tornsession
from support.any_store import NATIVE_STORE_KINDS, StoreOpener
from support.handlers import CookieJarHandler
from support.stores import DictStore, saved_session
from tornado.testing import AsyncHTTPTestCase, gen_test

COOKIE_SECRET = "lifecycle-cookie-secret"


# --- expiry on every store -------------------------------------------------------------------


def reload(manager: tornsession.SessionManager, s: tornsession.Session) -> tornsession.Session:
    return manager.get(s.session_id, s.hmac_digest)


@pytest.mark.store_kinds(*NATIVE_STORE_KINDS)
def test_idle_expiry_refresh_by_activity_and_absolute_lifetime(
    any_store_opener: StoreOpener,
) -> None:
    kind, make_store = any_store_opener.kind, any_store_opener
    # memcached keeps TTLs in whole seconds on a clock that ticks once a second, so a 3 s TTL may
    # end after 2 s: reads every 0.75 s leave 1.25 s for a loaded machine before a false expiry.
    idle = tornsession.SessionManager("s", store=make_store(), idle_timeout=3)
    capped = tornsession.SessionManager("s", store=make_store(), idle_timeout=3, lifetime=4)
    active = saved_session(idle, who="active")
    idle_one = saved_session(idle, who="idle")
    capped_one = saved_session(capped, who="capped")
    # Activity every 0.75 s for 4.5 s: reading alone keeps a session alive (no write needed).
    for _ in range(6):
        time.sleep(0.75)
        active = reload(idle, active)
        assert dict(active) == {"who": "active"}, f"{kind}: activity keeps it alive"
        capped_loaded = reload(capped, capped_one)
        if dict(capped_loaded) != {"who": "capped"}:
            break
        capped_one = capped_loaded
    expired = reload(idle, idle_one)
    assert dict(expired) == {}, f"{kind}: unused for 4.5 s with a 3 s idle timeout"
    assert expired.session_id != idle_one.session_id, "an expired session gets a new id"
    assert dict(reload(capped, capped_one)) == {}, f"{kind}: lifetime is not extended by activity"


def test_keeping_a_session_alive_does_not_rewrite_it() -> None:
    store = DictStore()
    manager = tornsession.SessionManager("s", store=store, idle_timeout=60)
    s = saved_session(manager, a=1)
    store.calls.clear()
    for _ in range(3):
        again = reload(manager, s)
        manager.set(again)
    assert store.calls == ["get"] * 3


# --- a Tornado app with the mixin --------------------------------------------------------------


class Base(tornsession.SessionMixin, tornado.web.RequestHandler):
    pass


class ReadHandler(Base):
    def get(self) -> None:
        self.write(json.dumps(dict(self.session)))


class IncrementHandler(Base):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.write(str(self.session["n"]))


class LoginHandler(Base):
    async def post(self) -> None:
        self.session["user"] = self.get_body_argument("user")
        await self.session.aregenerate()
        self.write("ok")


class SyncLoginHandler(Base):
    def post(self) -> None:
        self.session["user"] = self.get_body_argument("user")
        self.session.regenerate()
        self.write("ok")


class LogoutHandler(Base):
    async def post(self) -> None:
        await self.session.adestroy()
        self.write("bye")


class SyncLogoutHandler(Base):
    def post(self) -> None:
        self.session.destroy()
        self.write("bye")


class FlashHandler(Base):
    def post(self) -> None:
        self.session.flash("saved!", "success")
        self.session.flash("and again")
        self.redirect("/flashes")


class FlashesHandler(Base):
    def get(self) -> None:
        self.write(json.dumps(self.session.pop_flashes()))


class BigHandler(Base):
    def get(self) -> None:
        self.session["blob"] = "x" * 10_000
        self.write("unreachable")


def cookie_header(response: Any, previous: str = "") -> str:
    jar = dict(part.split("=", 1) for part in previous.split("; ") if "=" in part)
    for header in response.headers.get_list("Set-Cookie"):
        name, rest = header.split("=", 1)
        value = rest.split(";", 1)[0]
        if value in ("", '""'):
            jar.pop(name, None)
        else:
            jar[name] = value
    return "; ".join(f"{k}={v}" for k, v in jar.items())


class MixinAppTest(AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        self.store = DictStore()
        self.manager = tornsession.TornadoSessionManager(
            ["new-secret", "old-secret"], store=self.store, max_size=2000
        )
        return tornado.web.Application(
            [
                (r"/read", ReadHandler),
                (r"/inc", IncrementHandler),
                (r"/login", LoginHandler),
                (r"/sync-login", SyncLoginHandler),
                (r"/logout", LogoutHandler),
                (r"/sync-logout", SyncLogoutHandler),
                (r"/flash", FlashHandler),
                (r"/flashes", FlashesHandler),
                (r"/big", BigHandler),
            ],
            cookie_secret=COOKIE_SECRET,
            session_manager=self.manager,
        )

    def visit(self, path: str, cookie: str = "", body: str | None = None) -> Any:
        headers = {"Cookie": cookie} if cookie else {}
        method = "POST" if body is not None else "GET"
        return self.fetch(path, method=method, body=body, headers=headers, follow_redirects=False)

    def test_the_mixin_saves_changes_before_the_response(self) -> None:
        first = self.visit("/inc")
        cookie = cookie_header(first)
        assert [self.visit("/inc", cookie).body for _ in range(3)] == [b"2", b"3", b"4"]

    def test_a_read_only_request_sends_no_cookie_and_writes_nothing(self) -> None:
        cookie = cookie_header(self.visit("/inc"))
        writes = self.store.writes()
        response = self.visit("/read", cookie)
        assert json.loads(response.body) == {"n": 1}
        assert response.headers.get_list("Set-Cookie") == []
        assert self.store.writes() == writes

    def test_a_new_session_that_is_never_changed_writes_nothing(self) -> None:
        response = self.visit("/read")
        assert response.headers.get_list("Set-Cookie") == []
        assert self.store.writes() == 0

    def check_regenerate(self, path: str) -> None:
        cookie = cookie_header(self.visit("/inc"))
        [old_key] = self.store.data
        response = self.visit(path, cookie, body="user=ann")
        assert response.code == 200
        new_cookie = cookie_header(response, cookie)
        assert new_cookie != cookie
        [new_key] = self.store.data
        assert new_key != old_key, "the old record is deleted"
        assert json.loads(self.visit("/read", new_cookie).body) == {"n": 1, "user": "ann"}
        # The pair captured before the login opens nothing.
        assert json.loads(self.visit("/read", cookie).body) == {}

    def test_regenerate_keeps_the_data_and_retires_the_old_id(self) -> None:
        self.check_regenerate("/sync-login")

    def test_aregenerate_keeps_the_data_and_retires_the_old_id(self) -> None:
        self.check_regenerate("/login")

    def check_destroy(self, path: str) -> None:
        cookie = cookie_header(self.visit("/inc"))
        assert len(self.store.data) == 1
        response = self.visit(path, cookie, body="")
        assert response.code == 200
        assert self.store.data == {}, "no record left in the store"
        cleared = response.headers.get_list("Set-Cookie")
        assert {h.split("=", 1)[0] for h in cleared} == {"session_id", "hmac_digest"}
        assert all("expires=" in h.lower() for h in cleared)
        assert json.loads(self.visit("/read", cookie).body) == {}

    def test_destroy_deletes_the_record_and_clears_the_cookies(self) -> None:
        self.check_destroy("/sync-logout")

    def test_adestroy_deletes_the_record_and_clears_the_cookies(self) -> None:
        self.check_destroy("/logout")

    def test_flash_messages_survive_a_redirect_once(self) -> None:
        cookie = cookie_header(self.visit("/inc"))
        response = self.visit("/flash", cookie, body="")
        assert response.code == 302
        cookie = cookie_header(response, cookie)
        flashes = json.loads(self.visit("/flashes", cookie).body)
        assert flashes == [["success", "saved!"], ["info", "and again"]]
        assert json.loads(self.visit("/flashes", cookie).body) == []

    def test_max_size_refuses_the_save_and_keeps_the_stored_session(self) -> None:
        cookie = cookie_header(self.visit("/inc"))
        before = dict(self.store.data)
        with pytest.raises(Exception):  # noqa: B017 - the app answers 500, not a client error
            self.visit("/big", cookie).rethrow()
        assert self.store.data == before

    def test_a_session_signed_with_an_older_secret_opens_and_is_re_signed(self) -> None:
        old = tornsession.TornadoSessionManager("old-secret", store=self.store)
        s = old.get()
        s["n"] = 41
        tornsession.SessionManager.set(old, s)
        from tornado.web import create_signed_value

        cookie = "; ".join(
            f"{name}={create_signed_value(COOKIE_SECRET, name, value).decode()}"
            for name, value in [("session_id", s.session_id), ("hmac_digest", s.hmac_digest)]
        )
        response = self.visit("/inc", cookie)
        assert response.body == b"42"
        names = {h.split("=", 1)[0] for h in response.headers.get_list("Set-Cookie")}
        assert names == {"session_id", "hmac_digest"}, "re-signed with the newest secret"
        new_cookie = cookie_header(response, cookie)
        assert self.visit("/inc", new_cookie).body == b"43"
        # Once the old secret is dropped from the list, the old digest opens nothing.
        retired = tornsession.TornadoSessionManager("new-secret", store=self.store)
        with pytest.raises(tornsession.InvalidSessionException):
            tornsession.SessionManager.get(retired, s.session_id, s.hmac_digest)


class SlowStoreAsyncTest(AsyncHTTPTestCase):
    DELAY = 0.05

    def get_app(self) -> tornado.web.Application:
        self.store = DictStore(delay=self.DELAY)
        manager = tornsession.TornadoSessionManager("s", store=self.store)
        return tornado.web.Application(
            [(r"/inc", IncrementHandler)], cookie_secret=COOKIE_SECRET, session_manager=manager
        )

    @gen_test(timeout=30)
    async def test_a_slow_store_does_not_stall_other_requests(self) -> None:
        import asyncio

        client = self.http_client
        # Twenty visitors with a stored session each: every request loads (50 ms) and saves
        # (50 ms) through the slow store.
        cookies = []
        for _ in range(20):
            response = await client.fetch(self.get_url("/inc"))
            cookies.append(cookie_header(response))
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.fetch(self.get_url("/inc"), headers={"Cookie": c}) for c in cookies)
        )
        elapsed = time.monotonic() - started
        print(f"20 concurrent requests, 2 store calls of 50 ms each: {elapsed * 1000:.0f} ms")
        assert [r.body for r in responses] == [b"2"] * 20
        # Serially that would be 20 x 2 x 50 ms = 2 s; "well under" 20 x 50 ms means concurrent.
        assert elapsed < 20 * self.DELAY


def test_logs_name_lifecycle_events_without_session_ids(caplog: pytest.LogCaptureFixture) -> None:
    manager = tornsession.TornadoSessionManager("s")
    handler = CookieJarHandler()
    ids = []
    with caplog.at_level(logging.INFO, logger="tornsession"):
        s = tornsession.TornadoSession(manager, handler)
        s["a"] = 1
        s.save()
        ids.append(s.session_id)
        s.regenerate()
        ids.append(s.session_id)
        s.destroy()
        handler.cookies = {"session_id": b"0" * 32, "hmac_digest": b"0" * 64}
        tornsession.TornadoSession(manager, handler)["x"] = 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    for event in ["created", "regenerated", "destroyed", "invalid session cookie"]:
        assert event in text, text
    assert not any(i in text for i in ids), "ids only appear as salted hashes"
