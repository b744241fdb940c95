"""tornsession reads Tornado's signed cookies in Rust; it must decide exactly as Tornado's own
`decode_signed_value` does (after `parse_cookie`), and leave to Tornado what it does not handle."""

from __future__ import annotations

import random
from typing import Any

import pytest
import tornado.web
import tornsession
from hypothesis import given, settings
from hypothesis import strategies as st
from tornado.httputil import parse_cookie
from tornado.testing import AsyncHTTPTestCase
from tornado.web import create_signed_value, decode_signed_value
from tornsession._core import _read_signed_cookie

NOW = 1_700_000_000.0
SECRETS: list[Any] = [
    "It's a secret to everybody",
    b"bytes secret",
    "s\u00e9cret unicode",
    {0: "zero", 1: "one", 7: b"seven"},
]


def tornados_answer(secret: Any, name: str, header: str, now: float) -> bytes | None:
    value = parse_cookie(header).get(name)
    if value is None:
        return None
    result: bytes | None = decode_signed_value(secret, name, value, clock=lambda: now)
    return result


def check(secret: Any, name: str, header: str, now: float = NOW) -> bool:
    """Asserts the Rust reader agrees with Tornado whenever it decides; returns whether it did."""
    handled, value = _read_signed_cookie(secret, name, header, now)
    if handled:
        assert value == tornados_answer(secret, name, header, now), (secret, name, header)
    else:
        assert value is None
    return handled


def signed(
    secret: Any, name: str, value: str, when: float = NOW, key_version: int | None = None
) -> str:
    return create_signed_value(
        secret, name, value, version=2, clock=lambda: when, key_version=key_version
    ).decode()


def test_tornados_own_test_vector() -> None:
    v2 = (
        "2|1:0|10:1300000000|3:key|8:dmFsdWU=|"
        "3d4e60b996ff9c5d5788e333a0cba6f238a22c6c0f94788870e1a9ecd482e152"
    )
    handled, value = _read_signed_cookie("It's a secret to everybody", "key", f'key="{v2}"', 1.3e9)
    assert (handled, value) == (True, b"value")


@pytest.mark.parametrize("secret", SECRETS, ids=["str", "bytes", "unicode", "dict"])
def test_genuine_expired_foreign_and_tampered_values_match_tornado(secret: Any) -> None:
    rng = random.Random(7)
    key_version = 7 if isinstance(secret, dict) else None
    for value in ["0123456789abcdef0123456789abcdef", "", "x" * 300, "caf\u00e9 \u2603"]:
        for name in ["session_id", "hmac_digest", "a-b_c"]:
            cookie = signed(secret, name, value, key_version=key_version)
            assert check(secret, name, f'{name}="{cookie}"'), (
                "Tornado's own values are read natively"
            )
            assert check(secret, name, f"other=1; {name}={cookie} ; x=y")
            # Expired (older than 31 days) and just inside the limit.
            assert check(secret, name, f'{name}="{cookie}"', now=NOW + 31 * 86400 + 1)
            assert check(secret, name, f'{name}="{cookie}"', now=NOW + 31 * 86400 - 1)
            # Another cookie's value, another secret.
            check(secret, "other", f'other="{cookie}"')
            check("another secret", name, f'{name}="{cookie}"')
            # Every single-character change.
            for position in rng.sample(range(len(cookie)), min(len(cookie), 40)):
                for replacement in "0a|:2=Z":
                    tampered = cookie[:position] + replacement + cookie[position + 1 :]
                    check(secret, name, f'{name}="{tampered}"')


def test_a_dict_secret_without_the_key_version_matches_tornado() -> None:
    cookie = signed({3: "three"}, "n", "v", key_version=3)
    assert check({1: "one"}, "n", f'n="{cookie}"')
    assert _read_signed_cookie({1: "one"}, "n", f'n="{cookie}"', NOW) == (True, None)


def test_version_1_values_are_left_to_tornado() -> None:
    v1 = create_signed_value("s", "n", "v", version=1, clock=lambda: NOW).decode()
    assert _read_signed_cookie("s", "n", f'n="{v1}"', NOW) == (False, None)


def test_the_last_cookie_of_a_name_wins_as_in_parse_cookie() -> None:
    first, last = signed("s", "n", "first"), signed("s", "n", "last")
    header = f'n="{first}"; n="{last}"'
    assert _read_signed_cookie("s", "n", header, NOW) == (True, b"last")
    assert check("s", "n", header)


@settings(max_examples=300, deadline=None)
@given(
    header=st.text(alphabet=st.characters(codec="ascii"), max_size=200),
    name=st.sampled_from(["n", "session_id"]),
)
def test_arbitrary_headers_never_disagree_with_tornado(header: str, name: str) -> None:
    check("s", name, header)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=50), junk=st.text(alphabet='|:0123456789abc="; ', max_size=12))
def test_genuine_values_with_junk_appended_never_disagree(value: str, junk: str) -> None:
    cookie = signed("s", "n", value)
    check("s", "n", f'n="{cookie}{junk}"')
    check("s", "n", f"n={cookie}{junk}")


class CountingHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        s = tornsession.TornadoSession(self.application.settings["session_manager"], self)
        s["n"] = s.get("n", 0) + 1
        s.save()
        self.write(str(s["n"]))


class VersionedSecretAppTest(AsyncHTTPTestCase):
    """The native reader in a real app with rotated cookie secrets (`key_version`)."""

    def get_app(self) -> tornado.web.Application:
        self.manager = tornsession.TornadoSessionManager("session-secret")
        return tornado.web.Application(
            [("/", CountingHandler)],
            cookie_secret={1: "old cookie secret", 2: "new cookie secret"},
            key_version=2,
            session_manager=self.manager,
        )

    def test_sessions_survive_requests_with_versioned_cookie_secrets(self) -> None:
        first = self.fetch("/")
        cookie = "; ".join(h.split(";", 1)[0] for h in first.headers.get_list("Set-Cookie"))
        assert "|1:2|" in cookie, "signed with key version 2"
        assert [self.fetch("/", headers={"Cookie": cookie}).body for _ in range(2)] == [b"2", b"3"]
