"""The session layer's cost per request in Python-level calls (issue 20): a mixin request on
MemoryStore makes at most five beyond the handler's own, and no coroutine when nothing waits.

Counted with ``tests/support/calls.py``: every Python function call and every call of a
built-in (a Rust method included) while Tornado serves one request, minus the same count for a
handler with the same body on a plain dict and no session.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal

import pytest
import tornado.web
import tornsession
from support.calls import calls_of, set_cookies

SECRET = "s" * 32


class PlainWrite(tornado.web.RequestHandler):
    def get(self) -> None:
        data: dict[str, int] = {}
        data["n"] = data.get("n", 0) + 1
        self.write("ok")


class PlainRead(tornado.web.RequestHandler):
    def get(self) -> None:
        data = {"n": 1}
        self.write(str(data.get("n", 0)))


class MixinWrite(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.write("ok")


class MixinRead(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(str(self.session.get("n", 0)))


class DropInWrite(tornado.web.RequestHandler):
    def initialize(self) -> None:
        self.session = tornsession.TornadoSession(self.application.session_manager, self)  # type: ignore[attr-defined]

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write("ok")


class DropInRead(DropInWrite):
    def get(self) -> None:
        self.write(str(self.session.get("n", 0)))


def app(cookie_format: Literal["pair", "compact"]) -> tornado.web.Application:
    application = tornado.web.Application(
        [
            ("/plain-write", PlainWrite),
            ("/plain-read", PlainRead),
            ("/mixin-write", MixinWrite),
            ("/mixin-read", MixinRead),
            ("/dropin-write", DropInWrite),
            ("/dropin-read", DropInRead),
        ],
        cookie_secret="c" * 32,
    )
    application.session_manager = tornsession.TornadoSessionManager(  # type: ignore[attr-defined]
        SECRET, store=tornsession.MemoryStore(), cookie_format=cookie_format
    )
    return application


def beyond_plain(
    style: str, cookie_format: Literal["pair", "compact"]
) -> tuple[int, Counter[str], Any]:
    async def measure() -> tuple[int, Counter[str], Any]:
        application = app(cookie_format)
        _, first = await calls_of(application, f"/{style}-write", rounds=1)
        cookie = set_cookies(first)
        assert cookie, "the first request got no session cookie"
        results = []
        for kind in ("write", "read"):
            plain, _ = await calls_of(application, f"/plain-{kind}", cookie)
            ours, response = await calls_of(application, f"/{style}-{kind}", cookie)
            assert response.start_line.code == 200
            extra = ours.copy()
            extra.subtract(plain)
            results.append((sum(extra.values()), ours, response))
        # The session was written and read back: the counts are of the real path.
        _, check = await calls_of(application, f"/{style}-read", cookie, rounds=1)
        assert int(check.body) > 1
        return max(results, key=lambda r: r[0])

    return asyncio.run(measure())


@pytest.mark.parametrize("cookie_format", ["compact", "pair"])
@pytest.mark.parametrize("style", ["mixin", "dropin"])
def test_a_request_on_memorystore_makes_at_most_five_calls_beyond_the_handlers_own(
    style: str, cookie_format: Literal["pair", "compact"]
) -> None:
    extra, calls, _ = beyond_plain(style, cookie_format)
    assert extra <= 5, f"{extra} calls beyond the handler's own: {calls}"


def test_a_mixin_request_that_need_not_wait_runs_no_coroutine_of_the_session_layer() -> None:
    _, calls, _ = beyond_plain("mixin", "compact")
    ours = {label for label in calls if label.startswith(("mixin.py:", "_session.py:"))}
    assert ours == {"mixin.py:prepare", "mixin.py:finish"}, ours
    assert not any(label.startswith("_ordering.py:") for label in calls)
