"""``CookieStore``'s sealed value (issue 21): 10,000 random mutations of genuine cookies (bit
flips, truncation, extension, base64 noise, another cookie name's or another secret's value) each
open as a fresh session with a warning and never an exception; nothing stored is readable in the
cookie; and the 4,096-byte ``Set-Cookie`` limit, just under and just over it, over real HTTP."""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tornsession
from support.browser import Browser
from support.cookie_store import (
    MAX_LINE,
    OLD_SECRET,
    SEALED,
    SECRET,
    cookie_store,
    handler,
    largest_blob_size,
    new_cookie,
    peek,
    sealed_session,
    sent,
    serve_cookie_store,
    set_cookie_line,
)
from support.engine_app import STYLES, Server

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def start() -> Iterator[Callable[..., Server]]:
    yield from serve_cookie_store()


Secret = str | list[str | bytes]


def manager(secret: Secret = SECRET, **options: Any) -> tornsession.TornadoSessionManager:
    return tornsession.TornadoSessionManager(secret, store=cookie_store(), **options)


def unpadded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def raw_of(value: str) -> bytes:
    body = value.removeprefix("v1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def mutate(value: str, rng: random.Random, others: list[str]) -> str:
    """One random mutation of the sealed ``value`` (never ``value`` itself)."""
    body = value.removeprefix("v1.")
    kind = rng.randrange(10)
    if kind == 0:  # flip one bit of the sealed bytes, re-encoded canonically
        raw = bytearray(raw_of(value))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        mutated = "v1." + unpadded(bytes(raw))
    elif kind == 1:  # change one character
        i = rng.randrange(len(body))
        char = rng.choice(B64URL.replace(body[i], ""))
        mutated = "v1." + body[:i] + char + body[i + 1 :]
    elif kind == 2:  # truncate (to anything from the prefix to one character short)
        mutated = value[: rng.randrange(3, len(value))]
    elif kind == 3:  # extend with base64 characters
        mutated = value + "".join(rng.choices(B64URL, k=rng.randint(1, 40)))
    elif kind == 4:  # truncate or extend the sealed bytes, re-encoded
        whole = raw_of(value)
        cut = whole[: rng.randrange(0, len(whole))]
        mutated = "v1." + unpadded(cut if rng.random() < 0.5 else whole + rng.randbytes(8))
    elif kind == 5:  # base64 noise of a plausible length
        mutated = "v1." + unpadded(rng.randbytes(rng.randint(0, len(raw_of(value)) + 20)))
    elif kind == 6:  # another version, no version, padding
        mutated = rng.choice(["v2.", "V1.", "", "v1", "v1.."]) + body
        mutated = mutated if rng.random() < 0.7 else value + "=="
    elif kind == 7:  # another cookie name's value, or another secret's, pasted in
        mutated = rng.choice(others)
    elif kind == 8:  # two valid values spliced
        other = rng.choice(others)
        mutated = value[: rng.randrange(4, len(value))] + other[rng.randrange(4, len(other)) :]
    else:  # flip several bits
        raw = bytearray(raw_of(value))
        for _ in range(rng.randint(2, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        mutated = "v1." + unpadded(bytes(raw))
    return mutated if mutated != value else value + "A"


@pytest.fixture
def genuine() -> tuple[tornsession.TornadoSessionManager, list[tuple[str, str]], list[str]]:
    """A manager, 4 of its sessions' cookies with their ids, and values that must not open
    under it: another cookie name's, another secret's."""
    ours = manager()
    valued = [
        sealed_session(ours, n=i, words="abc " * i, nested={"list": list(range(i))})
        for i in range(1, 5)
    ]
    renamed = manager(cookie_name="other_cookie")
    others = [sealed_session(renamed, "other_cookie", n=i)[0] for i in range(3)]
    others += [sealed_session(manager(OLD_SECRET), n=i)[0] for i in range(3)]
    return ours, valued, others


def open_with_manager_get(
    manager: tornsession.TornadoSessionManager, value: str
) -> tornsession.Session:
    return manager.get(handler({"session_id": value}))


def open_with_tornado_session(
    manager: tornsession.TornadoSessionManager, value: str
) -> tornsession.Session:
    session = tornsession.TornadoSession(manager, handler({"session_id": value}))
    session.get("n")  # loaded now
    return session


@pytest.mark.parametrize("opener", [open_with_manager_get, open_with_tornado_session])
def test_10000_mutated_cookies_each_give_a_fresh_session_with_a_warning(
    opener: Callable[[tornsession.TornadoSessionManager, str], tornsession.Session],
    genuine: tuple[tornsession.TornadoSessionManager, list[tuple[str, str]], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the original API's ``manager.get(handler)`` and the drop-in ``TornadoSession``
    alike: never an exception (issue 21: "a fresh session and a logged warning")."""
    ours, valued, others = genuine
    rng = random.Random(21)
    caplog.set_level(logging.WARNING, logger="tornsession")
    for value, session_id in valued:  # the genuine ones open
        assert opener(ours, value).session_id == session_id
    caplog.clear()
    failures: list[str] = []
    silent = 0
    for _ in range(10_000):
        value, session_id = rng.choice(valued)
        mutated = mutate(value, rng, others)
        before = len(caplog.records)
        try:
            got = opener(ours, mutated)
        except Exception as error:
            failures.append(f"{mutated!r}: raised {error!r}")
            continue
        if dict(got) != {} or got.session_id == session_id or got.user_id is not None:
            failures.append(f"{mutated!r}: opened {got.session_id} {dict(got)}")
        # A value of this format (``v1.``) that does not open is logged; one without the
        # prefix may be another format's cookie (an app switching stores), read as absent.
        silent += mutated.startswith("v1.") and len(caplog.records) == before
    assert failures == [], f"{len(failures)} of 10000, e.g. {failures[:5]}"
    assert silent == 0, f"{silent} of 10000 mutated v1. cookies logged no warning"
    assert all(r.name == "tornsession" for r in caplog.records)


def test_another_cookie_names_or_secrets_value_does_not_open(
    genuine: tuple[tornsession.TornadoSessionManager, list[tuple[str, str]], list[str]],
) -> None:
    _, valued, _ = genuine
    value, session_id = valued[0]
    renamed = manager(cookie_name="other_cookie")
    pasted = tornsession.TornadoSession(renamed, handler({"other_cookie": value}))
    assert pasted.get("n") is None and pasted.session_id != session_id and dict(pasted) == {}
    for other in (manager(OLD_SECRET), manager([OLD_SECRET])):
        opened = open_with_tornado_session(other, value)
        assert opened.session_id != session_id and dict(opened) == {}
    # The same secret, listed second: opens (rotation).
    rotated = manager([OLD_SECRET, SECRET]).get(handler({"session_id": value}))
    assert rotated.session_id == session_id and rotated["n"] == 1


@pytest.mark.parametrize("style", STYLES)
def test_mutated_cookies_over_http_give_fresh_sessions_and_never_a_500(
    style: str, start: Callable[..., Server]
) -> None:
    server = start(style)
    rng = random.Random(2100 + len(style))
    with Browser(server.port) as browser:
        assert browser.get_json("/inc")["n"] == 1
        genuine_id = peek(browser)["id"]
        value = browser.cookies["session_id"]
    others = [sealed_session(manager(OLD_SECRET))[0]]
    with Browser(server.port) as browser:
        for _ in range(150):
            mutated = mutate(value, rng, others)
            browser.cookies = {"session_id": mutated}
            status, text = browser.get("/peek")
            assert status == 200, (mutated, text)
            page = json.loads(text)
            assert page["n"] is None and page["id"] != genuine_id, mutated
            if rng.random() < 0.2:  # a write from it starts a session of its own
                browser.cookies = {"session_id": mutated}
                assert browser.get_json("/inc")["n"] == 1
                assert SEALED.match(browser.cookies["session_id"])
        browser.cookies = {"session_id": value}
        assert browser.get_json("/inc")["n"] == 2  # the genuine cookie was never harmed


# --- nothing readable ------------------------------------------------------------------------


def encodings(text: str) -> set[str]:
    """``text`` as it could appear in a cookie: as is, hex, and every base64 alignment (the
    middle of its encoding, which does not depend on what comes before or after)."""
    raw = text.encode()
    found = {text, raw.hex()}
    for shift in range(3):
        padded = b"\0" * shift + raw
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(padded).decode().rstrip("=")
            found.add(encoded[4 : len(encoded) - 4])
    return {f for f in found if len(f) >= 8}


def test_the_cookie_never_holds_a_stored_string_in_clear() -> None:
    ours = manager()
    marker = f"MARKER-{uuid.uuid4().hex}"
    made = handler()
    session = ours.get(made)
    session["secret_note"] = marker
    session[f"key-{marker}"] = [marker, {"deep": marker}]
    session.set_user(f"user-{marker}")
    ours.set(made, session)
    value = new_cookie(made)
    assert value is not None and SEALED.match(value)
    for needle in {*encodings(marker), *encodings(session.session_id), *encodings("secret_note")}:
        assert needle not in value, needle
    assert "MARKER" not in value.upper()
    opened = ours.get(handler({"session_id": value}))
    assert opened["secret_note"] == marker and opened.user_id == f"user-{marker}"
    # Every seal draws a new nonce: the same session sealed again looks unrelated.
    again = handler({"session_id": value})
    resaved = ours.get(again)
    resaved["secret_note"] = marker + "!"
    ours.set(again, resaved)
    second = new_cookie(again)
    assert second is not None and second != value
    assert raw_of(second)[:24] != raw_of(value)[:24]


# --- the 4,096-byte limit --------------------------------------------------------------------


@pytest.fixture(scope="module")
def largest_blob() -> int:
    return largest_blob_size(manager())


def test_the_size_limit_is_the_set_cookie_line_and_the_error_names_it(largest_blob: int) -> None:
    # Roughly: 3 + base64url(24 + 32 + record + 16); the record is JSON a bit over the data's.
    data_json = len(json.dumps({"blob": "x" * largest_blob}))
    assert MAX_LINE - 400 < 3 + (72 + data_json) * 4 / 3 < MAX_LINE, largest_blob
    ours = manager()
    made = handler()
    session = ours.get(made)
    session["blob"] = "x" * (largest_blob + 3)
    with pytest.raises(ValueError) as raised:
        ours.set(made, session)
    message = str(raised.value)
    numbers = [int(n) for n in re.findall(r"\d+", message.replace(",", ""))]
    assert MAX_LINE in numbers, message
    assert any(MAX_LINE < n <= MAX_LINE + 12 for n in numbers), message  # the size, in bytes
    assert "byte" in message, message
    assert new_cookie(made) is None  # nothing sent


@pytest.mark.parametrize("style", STYLES)
def test_a_session_just_under_the_limit_round_trips_and_one_over_it_keeps_the_old(
    style: str, start: Callable[..., Server], largest_blob: int
) -> None:
    server = start(style)
    with Browser(server.port) as browser:
        assert browser.request("POST", "/fill?size=10", "")[0] == 200
        first = peek(browser)
        status, text = browser.request("POST", f"/fill?size={largest_blob}", "")
        assert status == 200, text
        line = set_cookie_line(browser)
        assert MAX_LINE - 4 <= len(line.encode()) <= MAX_LINE, len(line)
        page = peek(browser)
        assert page["id"] == first["id"] and len(page["data"]["blob"]) == largest_blob
        kept = browser.cookies["session_id"]
        status, text = browser.request("POST", f"/fill?size={largest_blob + 3}", "")
        if style == "mixin":
            assert status == 500, text
        else:  # the drop-in's save() raised ValueError in the handler, naming the sizes
            assert status == 413, text
            message = json.loads(text)["error"]
            assert str(MAX_LINE) in message.replace(",", ""), message
        assert sent(browser) is None, browser.last_set_cookie  # no cookie sent
        assert browser.cookies["session_id"] == kept
        page = peek(browser)  # the visitor's previous cookie opens the previous session
        assert page["id"] == first["id"] and len(page["data"]["blob"]) == largest_blob
        status, _ = browser.request("POST", "/fill?size=10", "")
        assert status == 200 and len(peek(browser)["data"]["blob"]) == 10
