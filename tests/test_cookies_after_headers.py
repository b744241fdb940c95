"""Cookies that can no longer be sent are an error, not a silent loss (issue 18, items 3 and 8).

Once a response's headers are out (``await self.flush()``, or a WebSocket's 101 handshake), a
``Set-Cookie`` cannot reach the browser any more. A write that needs one (a new session, a
regeneration) is refused before the store is touched: no orphan record, the old session kept.
A session the browser already has keeps saving. Over real HTTP, on the drop-in
``TornadoSession`` and ``SessionMixin``, on real stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_py
import tornado.httpclient
import tornado.web
import tornado.websocket
import tornsession
from support.browser import Browser
from support.engine_app import (
    COOKIE_SECRET,
    STYLES,
    Server,
    connect,
    digest_of,
    every_store_and_style,
    on_loop,
    peek,
    record_exists,
    start_session,
)
from tornado.web import create_signed_value

KINDS = ["memory", "file", "redis"]


def stored_records(store: Any) -> int:
    """How many session records the store holds."""
    if isinstance(store, tornsession.MemoryStore):
        return len(store)
    if isinstance(store, tornsession.FileStore):
        from pathlib import Path

        return sum(1 for f in Path(store.path).iterdir() if f.name.startswith("SESSION"))
    assert isinstance(store, tornsession.RedisStore)
    client = redis_py.Redis.from_url(store.url)
    try:
        return len(client.keys(f"{store.prefix}*"))
    finally:
        client.close()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tornsession" and r.levelno == logging.ERROR and "flush()" in r.getMessage()
    ]


def flush_routes(base: type) -> list[tuple[str, type]]:
    class FlushThenWrite(base):  # type: ignore[misc]
        async def get(self) -> None:
            self.write("head;")
            await self.flush()
            self.session["n"] = self.session.get("n", 0) + 1
            try:
                self.commit()
            except RuntimeError as error:
                self.finish(f"refused: {error}")
                return
            self.finish("tail")

    class FlushThenRegenerate(base):  # type: ignore[misc]
        async def post(self) -> None:
            self.session.get("n")
            self.write("head;")
            await self.flush()
            try:
                await self.regenerate()
            except RuntimeError as error:
                self.write(f"refused: {error}")
                return
            self.write("regenerated")

    return [(r"/flush-write", FlushThenWrite), (r"/flush-regenerate", FlushThenRegenerate)]


def start(serve: Callable[..., Server], style: str, kind: str) -> Server:
    server = serve(style, kind)
    server.app.wildcard_router.add_rules(flush_routes(STYLES[style]))
    return server


@every_store_and_style(KINDS)
def test_after_flush_a_new_session_is_refused_and_an_existing_one_saved(
    serve: Callable[..., Server], style: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, style, kind)
    store = server.app.store  # type: ignore[attr-defined]
    caplog.set_level(logging.ERROR, logger="tornsession")
    for _ in range(3):  # new visitors: the cookie could never reach them
        with Browser(server.port) as visitor:
            status, body = visitor.get("/flush-write")
            assert status == 200 and visitor.last_set_cookie == []
            if style == "dropin":  # save() raised, naming the cause and the cure
                assert body.startswith("head;refused: ") and "flush()" in body, body
            else:  # the mixin's save at finish: logged, the response delivered whole
                assert body == "head;tail"
    assert stored_records(store) == 0, "records stored under ids no browser has"
    if style == "mixin":
        assert len(refusals(caplog)) == 3, caplog.text
    caplog.clear()
    with Browser(server.port) as visitor:  # a session the browser already has
        assert visitor.get("/inc") == (200, "1")
        status, body = visitor.get("/flush-write")
        assert (status, body) == (200, "head;tail")
        assert peek(server.port, visitor.cookies)["n"] == 2, "the existing session was not saved"
    assert stored_records(store) == 1
    assert refusals(caplog) == []


@every_store_and_style(KINDS)
def test_regenerate_after_flush_raises_and_the_old_session_stays(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = start(serve, style, kind)
    with Browser(server.port) as visitor:
        assert visitor.get("/inc") == (200, "1")
        cookies = dict(visitor.cookies)
        old_id = peek(server.port, cookies)["id"]
        status, body = visitor.request("POST", "/flush-regenerate", body="")
        assert status == 200 and body.startswith("head;refused: ") and "flush()" in body, body
        assert visitor.cookies == cookies
    assert record_exists(server, old_id), "the old record was deleted"
    kept = peek(server.port, cookies)
    assert (kept["id"], kept["n"]) == (old_id, 1), "the old cookie no longer opens the session"
    assert stored_records(server.app.store) == 1  # type: ignore[attr-defined]


# WebSocket handlers: the handshake's 101 is the last response that can carry a cookie.


class MixinSocket(tornsession.SessionMixin, tornado.websocket.WebSocketHandler):
    pass


class DropInSocket(tornado.websocket.WebSocketHandler):
    def initialize(self) -> None:
        self.session = tornsession.TornadoSession(self.application.session_manager, self)  # type: ignore[attr-defined]


SOCKETS = {"dropin": DropInSocket, "mixin": MixinSocket}


def socket_routes(base: type) -> list[tuple[str, type]]:
    class SavesAfterHandshake(base):  # type: ignore[misc]
        async def open(self) -> None:
            self.session["opened"] = self.session.get("opened", 0) + 1
            try:
                await self.session.asave()
            except RuntimeError as error:
                self.write_message(f"refused: {error}")
                return
            self.write_message("saved")

        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            if message == "logout":
                await self.session.adestroy()
                self.write_message("logged out")
                return
            self.session["said"] = message
            await self.session.asave()
            self.write_message(f"saved {message}")

    class WritesBeforeHandshake(base):  # type: ignore[misc]
        async def prepare(self) -> None:
            result = super().prepare()
            if result is not None:
                await result
            self.session["before"] = True
            if not isinstance(self, tornsession.SessionMixin):
                self.session.save()  # the drop-in saves by hand; the mixin at the 101

        def open(self) -> None:
            self.write_message("open")

    class WritesInGet(base):  # type: ignore[misc]
        async def get(self, *args: Any, **kwargs: Any) -> None:
            self.session["before"] = True
            if not isinstance(self, tornsession.SessionMixin):
                self.session.save()
            await super().get(*args, **kwargs)

        def open(self) -> None:
            self.write_message("open")

    return [
        (r"/ws", SavesAfterHandshake),
        (r"/ws-prepare", WritesBeforeHandshake),
        (r"/ws-get", WritesInGet),
    ]


def start_sockets(serve: Callable[..., Server], style: str, kind: str) -> Server:
    server = serve(style, kind)
    server.app.wildcard_router.add_rules(socket_routes(SOCKETS[style]))
    return server


def aged(cookies: dict[str, str], port: int) -> dict[str, str]:
    """The same session's cookies as signed three days ago: due to be sent again."""
    session_id = peek(port, cookies)["id"]
    three_days_ago = time.time() - 3 * 86400
    return {
        name: create_signed_value(COOKIE_SECRET, name, value, clock=lambda: three_days_ago).decode()
        for name, value in [("session_id", session_id), ("hmac_digest", digest_of(session_id))]
    }


@pytest.mark.parametrize("cookie", ["current", "aged"])
@every_store_and_style(["memory", "redis"])
def test_a_websocket_saves_an_existing_session_in_open_and_on_message(
    serve: Callable[..., Server], style: str, kind: str, cookie: str
) -> None:
    server = start_sockets(serve, style, kind)
    cookies = start_session(server.port)
    if cookie == "aged":
        # Due to be sent again, which no response can do after the handshake: the saves
        # still happen, and the old cookie stays good.
        cookies = aged(cookies, server.port)
    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "saved"
        assert peek(server.port, cookies)["opened"] == 1, "open()'s change was not saved"
        on_loop(server, lambda: connection.write_message("hello"))
        assert on_loop(server, connection.read_message) == "saved hello"
        kept = peek(server.port, cookies)
        assert (kept["n"], kept["opened"], kept["said"]) == (1, 1, "hello")
    finally:
        server.loop.call_soon_threadsafe(connection.close)


@pytest.mark.parametrize("where", ["prepare", "get"])
@every_store_and_style(["memory", "redis"])
def test_a_new_visitors_session_written_before_the_handshake_gets_its_cookie_on_the_101(
    serve: Callable[..., Server], style: str, kind: str, where: str
) -> None:
    server = start_sockets(serve, style, kind)
    connection = connect(server, f"/ws-{where}", {})
    try:
        assert on_loop(server, connection.read_message) == "open"
        set_cookie = connection.headers.get_list("Set-Cookie")
    finally:
        server.loop.call_soon_threadsafe(connection.close)
    cookies = dict(header.split(";", 1)[0].split("=", 1) for header in set_cookie)
    assert set(cookies) == {"session_id", "hmac_digest"}, set_cookie
    kept = peek(server.port, cookies)
    assert kept["before"] is True and record_exists(server, kept["id"])
    assert stored_records(server.app.store) == 1  # type: ignore[attr-defined]


@every_store_and_style(["memory", "redis"])
def test_a_new_visitors_session_written_after_the_handshake_is_refused_without_a_record(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = start_sockets(serve, style, kind)
    connection = connect(server, "/ws", {})
    try:
        message = on_loop(server, connection.read_message)
        assert connection.headers.get_list("Set-Cookie") == []
    finally:
        server.loop.call_soon_threadsafe(connection.close)
    assert message.startswith("refused: ") and "handshake" in message, message
    assert stored_records(server.app.store) == 0, "a record no browser can name"  # type: ignore[attr-defined]


@every_store_and_style(["memory", "redis"])
def test_a_logout_over_a_websocket_ends_the_session_without_an_error(
    serve: Callable[..., Server], style: str, kind: str
) -> None:
    server = start_sockets(serve, style, kind)
    cookies = start_session(server.port)
    old_id = peek(server.port, cookies)["id"]
    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "saved"
        on_loop(server, lambda: connection.write_message("logout"))
        # The cookies cannot be cleared after the handshake; the one the browser keeps names
        # a record that is gone.
        assert on_loop(server, connection.read_message) == "logged out"
    finally:
        server.loop.call_soon_threadsafe(connection.close)
    assert not record_exists(server, old_id)
    after = peek(server.port, cookies)
    assert after["id"] != old_id and after["n"] is None


opened: list[str] = []


class RefusedHandshake(MixinSocket):
    async def prepare(self) -> None:
        await super().prepare()
        self.session["note"] = "x" * 500  # over the manager's max_size: the save fails

    def open(self) -> None:
        opened.append(self.request.path)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_save_failing_at_the_handshake_answers_500_and_never_opens_the_socket(
    serve: Callable[..., Server], kind: str
) -> None:
    server = serve("mixin", kind, max_size=200)
    server.app.wildcard_router.add_rules([(r"/ws-refused", RefusedHandshake)])
    opened.clear()
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        connect(server, "/ws-refused", {})
    assert refused.value.code == 500
    # open() would have run in the same IOLoop callback that wrote the 500.
    assert opened == [], "open() ran for a handshake that was refused"
    assert stored_records(server.app.store) == 0  # type: ignore[attr-defined]
    with Browser(server.port) as browser:
        assert browser.get("/in-flight") == (200, "0")
