"""Two IOLoops sharing one manager, forged and odd cookies of both formats, a format switched on a
live app, turns taken over an open socket.

From issue 20's review: each test names what must hold; where the review found it broken,
its docstring says what was found and where (all fixed since)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
import tornado.websocket
import tornsession
from support.browser import Browser
from support.engine_app import (
    COOKIE_SECRET,
    SESSION_SECRET,
    Server,
    connect,
    peek,
)
from support.request_path import (
    STORE_KINDS,
    base_routes,
    make_server,
    mint_compact,
    raw_get,
    raw_get_headers,
    table_empties,
)
from support.threads import run_concurrently

# The request-path tests' fixtures (tests/support/request_path.py): a fresh table baseline, and
# no log record keeping a failed request's handler (and its turn) alive.
pytestmark = pytest.mark.usefixtures("_table_baseline", "_no_log_capture")

# ---------------------------------------------------------------- two IOLoops, one manager


@pytest.mark.parametrize("path", ["/inc", "/inc-await"])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_two_servers_on_two_threads_sharing_one_manager_count_exactly(
    store_of: Callable[[str], Any], kind: str, path: str
) -> None:
    """One manager served by two Tornado servers, each on its own IOLoop thread; one visitor's
    requests go to both at once: every increment is kept (turns span the loops), none 503s,
    and the table empties."""
    store = store_of(kind)
    manager = tornsession.TornadoSessionManager(SESSION_SECRET, store=store, order_timeout=5)
    made = []
    for _ in range(2):
        app = tornado.web.Application(base_routes(), cookie_secret=COOKIE_SECRET)
        app.session_manager = manager  # type: ignore[attr-defined]
        made.append(Server(app))
    try:
        with Browser(made[0].port) as first:
            assert first.get("/inc") == (200, "1")
            cookies = dict(first.cookies)

        def visitor(index: int) -> None:
            with Browser(made[index % 2].port) as b:
                b.cookies = dict(cookies)
                for _ in range(15):
                    status, body = b.get(path)
                    assert status == 200, (status, body)

        run_concurrently(visitor, 6)
        assert peek(made[1].port, cookies)["n"] == 1 + 6 * 15
        assert table_empties() == (0, 0)
    finally:
        for server in made:
            server.stop()


# ---------------------------------------------------------------- cookies


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_my_minted_compact_cookie_is_accepted(servers: Any, fmt: str) -> None:
    """Sanity for the tests below: a compact cookie made by the spec opens its session."""
    server = servers(base_routes(), cookie_format=fmt)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        sid = browser.get_json("/peek")["id"]
    status, data = raw_get(
        server.port, "/peek", f"session_id={mint_compact(sid, int(time.time()))}"
    )
    assert status == 200 and json.loads(data.split(b"\r\n\r\n", 1)[1])["n"] == 1


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_bad_compact_cookies_start_fresh_sessions_never_500(servers: Any, fmt: str) -> None:
    """Forged, truncated, oversized, odd-character, too-old and wrong-id compact cookies: each
    gives a fresh, empty session (200), never the victim's, never a 500."""
    server = servers(base_routes(), cookie_format=fmt)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        victim = browser.get_json("/peek")["id"]
    now = int(time.time())
    good = mint_compact(victim, now)
    other = "0" * 32
    sid, issued, mac = good.split(".")
    bad = [
        good[:-1],
        good + "A",
        good[:40],
        f"{sid}.{issued}",
        f"{sid}.{issued}.{mac}.{mac}",
        f"{sid.upper()}.{issued}.{mac}",
        f"{other}.{issued}.{mac}",  # a valid MAC with the wrong id
        mint_compact(victim, now - 40 * 86400),  # too old
        mint_compact(victim, now, secret="another-secret-of-at-least-32-bytes!!"),
        f"{sid}.{issued}.{'A' * 5000}",
        "." * 4000,
        f"{sid}.{issued}.{mac[:-2]}==",
        f"{sid}.-1.{mac}",
        f"{sid}.{'z' * 13}.{mac}",
        f"{sid}.{issued}.{mac}\\",
    ]
    for value in bad:
        status, data = raw_get(server.port, "/peek", f"session_id={value}")
        assert status == 200, (value, data[:300])
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert body["id"] != victim and "n" not in body, value
    # With a pair digest cookie of another session beside a bad compact one.
    status, data = raw_get(server.port, "/peek", f"session_id={good[:-1]}; hmac_digest=x")
    assert status == 200 and json.loads(data.split(b"\r\n\r\n", 1)[1])["id"] != victim
    assert table_empties() == (0, 0)


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_a_compact_cookie_issued_in_the_future_still_expires(servers: Any, fmt: str) -> None:
    """Documents (by design, compact_cookie.rs: "issued in the future: genuine, not aging"):
    a compact cookie whose issued-at lies 10 years ahead opens its session, and ages only from
    that date (`now.saturating_sub(issued_at)`). Only the secret's holder can mint one, so it
    is no forgery; Tornado's signed values are checked for age only too."""
    server = servers(base_routes(), cookie_format=fmt)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        victim = browser.get_json("/peek")["id"]
    future = mint_compact(victim, int(time.time()) + 10 * 365 * 86400)
    status, data = raw_get(server.port, "/peek", f"session_id={future}")
    assert status == 200
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["id"] == victim


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_a_replayed_cookie_after_logout_does_not_bring_the_id_back(servers: Any, fmt: str) -> None:
    """After destroy(), the old (still validly signed) cookie names no record: the next request
    gets a fresh session under a new id, and saving it never revives the old id."""
    server = servers(base_routes(), cookie_format=fmt)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        old = dict(browser.cookies)
        old_id = browser.get_json("/peek")["id"]
        assert browser.request("POST", "/logout", body="")[0] == 200
    with Browser(server.port) as replay:
        replay.cookies = dict(old)
        assert replay.get("/inc") == (200, "1")
        assert replay.get_json("/peek")["id"] != old_id


@pytest.mark.parametrize("to", ["compact", "pair"])
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_switching_format_on_a_live_app_keeps_sessions_and_counts(
    store_of: Callable[[str], Any], kind: str, to: str
) -> None:
    """A jar of the other format, hammered in parallel right after the switch (each response
    re-sending cookies), keeps its session and every increment."""
    store = store_of(kind)
    frm = "pair" if to == "compact" else "compact"
    before, _ = make_server(base_routes(), store, cookie_format=frm)
    after, _ = make_server(base_routes(), store, cookie_format=to)
    try:
        with Browser(before.port) as browser:
            assert browser.get("/inc") == (200, "1")
            cookies = dict(browser.cookies)

        def visitor(_: int) -> None:
            with Browser(after.port) as b:
                b.cookies = dict(cookies)
                for _ in range(10):
                    assert b.get("/inc")[0] == 200
                assert set(b.cookies) == (
                    {"session_id"} if to == "compact" else {"session_id", "hmac_digest"}
                ), b.cookies

        run_concurrently(visitor, 4)
        assert peek(after.port, cookies)["n"] == 41
    finally:
        before.stop()
        after.stop()


# ---------------------------------------------------------------- turns taken after the handshake


class SocketLoadsAgain(tornsession.SessionMixin, tornado.websocket.WebSocketHandler):
    """Loads its session again on each message (after the 101) and changes it without saving."""

    def open(self) -> None:
        self.write_message("open")

    async def on_message(self, message: str | bytes) -> None:
        again = await tornsession.TornadoSession.aload(self.session_manager, self)
        again["socket_note"] = message  # changed, not saved: would keep its turn
        self.write_message("loaded")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_turn_taken_over_an_open_socket_does_not_block_http_for_ever(
    servers: Any, store_of: Callable[[str], Any], kind: str
) -> None:
    """A WebSocket handler that loads its session again after the handshake (aload in
    on_message) takes a new turn whose on_finish already ran. While the socket stays open the
    visitor's HTTP requests must still be served (no 503 after order_timeout), and the turn
    must be gone once the socket closes."""
    server = servers(
        [*base_routes(), (r"/ws", SocketLoadsAgain)], store_of(kind), order_timeout=1.0
    )
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
    from support.engine_app import on_loop

    connection = connect(server, "/ws", cookies)
    try:
        assert on_loop(server, connection.read_message) == "open"
        server.loop.call_soon_threadsafe(connection.write_message, "hi")
        assert on_loop(server, connection.read_message) == "loaded"
        with Browser(server.port) as browser:
            browser.cookies = dict(cookies)
            status, body = browser.get("/inc")
            assert (status, body) == (200, "2"), "the socket's turn blocked the visitor"
    finally:
        server.loop.call_soon_threadsafe(connection.close)
    assert table_empties() == (0, 0)


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_odd_cookie_headers_read_as_tornado_reads_them(servers: Any, fmt: str) -> None:
    """A non-ASCII byte elsewhere in the header, the cookie in a second Cookie header, a
    quoted value, stray semicolons and spaces: the session is found exactly when Tornado's
    own parser finds the cookie; never a 500."""
    server = servers(base_routes(), cookie_format=fmt)
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        victim = browser.get_json("/peek")["id"]
        jar = dict(browser.cookies)
    pair = "; ".join(f"{k}={v}" for k, v in jar.items())
    cases = {
        "latin1-elsewhere": (["Cookie: x=\u00e9\u00ff; " + pair], True),
        "second-header": (["Cookie: a=b", "Cookie: " + pair], True),
        "stray-separators": (["Cookie: ;;  ; " + pair + " ;; "], True),
        "later-garbage-wins": (["Cookie: " + pair + "; session_id=garbage.x.y"], False),
        "empty": (["Cookie: session_id="], False),
    }
    from tornado.httputil import parse_cookie

    for name, (headers, found) in cases.items():
        # Tornado joins repeated Cookie headers with "," (HTTPHeaders) before parse_cookie.
        joined = ",".join(h.split(": ", 1)[1] for h in headers)
        tornado_sees = parse_cookie(joined).get("session_id")
        found = found and tornado_sees == jar["session_id"].strip('"')
        status, body = raw_get_headers(server.port, "/peek", headers)
        assert status == 200, (name, status)
        assert (body["id"] == victim) == found, (name, body)


@pytest.mark.parametrize("fmt", ["compact", "pair"])
def test_a_compact_cookie_beside_another_sessions_pair_digest(servers: Any, fmt: str) -> None:
    """`session_id=<A's compact>; hmac_digest=<B's signed digest>`: A's session, never B's,
    never a 500; and the reverse (`session_id=<B's signed id>` with A's compact value under the
    digest name) opens nothing of A's."""
    server = servers(base_routes(), cookie_format="pair")
    with Browser(server.port) as b_browser:
        assert b_browser.get("/inc") == (200, "1")
        b_jar = dict(b_browser.cookies)
    server2 = servers(base_routes(), store=server.app.store, cookie_format=fmt)
    with Browser(server2.port) as a_browser:
        assert a_browser.get("/inc") == (200, "1")
        a_id = a_browser.get_json("/peek")["id"]
    a_compact = mint_compact(a_id, int(time.time()))
    status, data = raw_get(
        server2.port, "/peek", f"session_id={a_compact}; hmac_digest={b_jar['hmac_digest']}"
    )
    assert status == 200 and json.loads(data.split(b"\r\n\r\n", 1)[1])["id"] == a_id
    status, data = raw_get(
        server2.port, "/peek", f"session_id={b_jar['session_id']}; hmac_digest={a_compact}"
    )
    assert status == 200
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["id"] != a_id
