"""Spec: every manager option is checked when the manager is built, with a message naming it, and
the cookies follow the options (Secure on HTTPS by default, clearing cookies like the cookies
they clear). The cookie checks run over real HTTP against a small Tornado app in a thread."""

from __future__ import annotations

import http.client
import math
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
import tornsession
from support.engine_app import Server

SECRET = "options-test-secret-" + "s" * 32
COOKIE_SECRET = "options-test-cookie-secret-" + "c" * 32
SESSION_COOKIES = ("session_id", "hmac_digest")


def refused(option: str, **options: Any) -> None:
    """Building a manager with ``options`` is a ValueError whose message names ``option``."""
    for cls in (tornsession.SessionManager, tornsession.TornadoSessionManager):
        with pytest.raises(ValueError) as caught:
            cls(SECRET, **options)
        assert option in str(caught.value), f"{options}: the message does not name {option}"


def accepted(**options: Any) -> None:
    for cls in (tornsession.SessionManager, tornsession.TornadoSessionManager):
        cls(SECRET, **options)


# --- cookie names -------------------------------------------------------------------------------

NOT_TOKENS = [
    "session id",
    "a;b",
    "a=b",
    "a,b",
    "séance",
    "a\x00b",
    "a\x01",
    "a\x7f",
    "a\tb",
    "a\r\nSet-Cookie: x",
    '"quoted"',
    "",
]
TOKENS = ["session_id", "SID", "__Host-sid", "__Secure-sid", "a.b-c_d", "x!#$%&'*+^`|~"]


@pytest.mark.parametrize("name", NOT_TOKENS, ids=repr)
@pytest.mark.parametrize("option", ["cookie_name", "digest_cookie_name"])
def test_cookie_names_must_be_tokens(option: str, name: str) -> None:
    refused(option, **{option: name})


@pytest.mark.parametrize("name", TOKENS)
def test_token_cookie_names_are_accepted(name: str) -> None:
    accepted(cookie_name=name, digest_cookie_name="digest")
    accepted(cookie_name="id", digest_cookie_name=name)


# --- path and domain ----------------------------------------------------------------------------

BAD_ATTRIBUTE_VALUES = ["/a;b", "/a,b", "/a b", "/a\x00", "/a\r\n", "/a\x7f", "/a\tb"]


@pytest.mark.parametrize("value", BAD_ATTRIBUTE_VALUES, ids=repr)
def test_cookie_path_has_no_separators_spaces_or_controls(value: str) -> None:
    refused("cookie_path", cookie_path=value)


@pytest.mark.parametrize("value", [v.replace("/", "example.com", 1) for v in BAD_ATTRIBUTE_VALUES])
def test_cookie_domain_has_no_separators_spaces_or_controls(value: str) -> None:
    refused("cookie_domain", cookie_domain=value)


def test_plain_paths_and_domains_are_accepted() -> None:
    accepted(cookie_path="/app/", cookie_domain="example.com")
    accepted(cookie_path="/", cookie_domain=".example.com")
    accepted(cookie_domain=None)


# --- SameSite and Secure ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Bogus", "", "Lax; Secure", "Lax\x00"], ids=repr)
def test_cookie_samesite_is_lax_strict_or_none(value: str) -> None:
    refused("cookie_samesite", cookie_samesite=value)


@pytest.mark.parametrize("secure", [False, "auto"])
def test_samesite_none_needs_cookie_secure_true(secure: Any) -> None:
    refused("cookie_samesite", cookie_samesite="None", cookie_secure=secure)


def test_samesite_none_default_secure_is_refused() -> None:
    refused("cookie_samesite", cookie_samesite="None")


def test_accepted_samesite_and_secure_values() -> None:
    accepted(cookie_samesite="None", cookie_secure=True)
    for samesite in ("Lax", "Strict", None):
        for secure in (True, False, "auto"):
            accepted(cookie_samesite=samesite, cookie_secure=secure)


@pytest.mark.parametrize("value", ["always", "", "Auto "], ids=repr)
def test_cookie_secure_is_a_bool_or_auto(value: str) -> None:
    options: dict[str, Any] = {"cookie_secure": value}
    for cls in (tornsession.SessionManager, tornsession.TornadoSessionManager):
        with pytest.raises((ValueError, TypeError), match="cookie_secure"):
            cls(SECRET, **options)


# --- numbers ------------------------------------------------------------------------------------

NOT_POSITIVE_OR_FINITE: list[Any] = [math.nan, math.inf, -math.inf, 0, 0.0, -1, -0.5]


@pytest.mark.parametrize("value", NOT_POSITIVE_OR_FINITE, ids=repr)
@pytest.mark.parametrize("option", ["idle_timeout", "lifetime", "cookie_expires_days"])
def test_durations_are_finite_and_positive(option: str, value: Any) -> None:
    refused(option, **{option: value})


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1)], ids=repr)
@pytest.mark.parametrize("option", ["idle_timeout", "lifetime"])
def test_timedeltas_are_positive(option: str, value: timedelta) -> None:
    refused(option, **{option: value})


@pytest.mark.parametrize("value", [0, -1], ids=repr)
def test_max_size_is_positive(value: int) -> None:
    refused("max_size", max_size=value)


def test_good_numbers_are_accepted() -> None:
    accepted(idle_timeout=3600, lifetime=timedelta(days=1), max_size=4096, cookie_expires_days=0.5)
    accepted(idle_timeout=0.5, lifetime=86400.0, max_size=1, cookie_expires_days=None)


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["x" * 31, b"x" * 31, "ttesttt", ["y" * 32, "short"]], ids=lambda s: repr(s)[:20]
)
def test_a_short_secret_warns_and_says_how_to_make_one(secret: Any) -> None:
    with pytest.warns(UserWarning) as caught:
        tornsession.SessionManager(secret)
    messages = " ".join(str(w.message) for w in caught)
    assert "32" in messages and "secrets.token_" in messages, messages


@pytest.mark.parametrize("secret", ["x" * 32, b"x" * 32, ["y" * 32, "z" * 64]], ids=repr)
def test_a_32_byte_secret_gives_no_warning(secret: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tornsession.SessionManager(secret)
        tornsession.TornadoSessionManager(secret)


# --- cookies over HTTP --------------------------------------------------------------------------


class SessionHandler(tornado.web.RequestHandler):
    def get(self, action: str) -> None:
        session = tornsession.TornadoSession(self.application.settings["session_manager"], self)
        if action == "set":
            session["n"] = session.get("n", 0) + 1
            session.save()
        else:
            session.destroy()
        self.write("ok")


class App:
    """A Tornado app behind ``xheaders=True`` (so X-Forwarded-Proto counts), in a thread."""

    def __init__(self, manager: tornsession.TornadoSessionManager) -> None:
        app = tornado.web.Application(
            [(r"/app/(set|destroy)", SessionHandler)],
            cookie_secret=COOKIE_SECRET,
            session_manager=manager,
        )
        self.server = Server(app, xheaders=True)
        self.port = self.server.port

    def stop(self) -> None:
        self.server.stop()

    def get(self, path: str, https: bool, cookie: str = "") -> list[str]:
        """The Set-Cookie headers of GET ``path``."""
        headers = {"X-Forwarded-Proto": "https"} if https else {}
        if cookie:
            headers["Cookie"] = cookie
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            return response.headers.get_all("Set-Cookie") or []
        finally:
            connection.close()


def parse(header: str) -> tuple[str, str, dict[str, str]]:
    """``(name, value, attributes)`` of a Set-Cookie header; attribute names lower-cased, flags
    (Secure, HttpOnly) mapped to ""."""
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    attrs: dict[str, str] = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def session_cookies(headers: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    cookies = {}
    for header in headers:
        name, value, attrs = parse(header)
        if name in SESSION_COOKIES:
            cookies[name] = (value, attrs)
    return cookies


@pytest.fixture
def start_app() -> Iterator[Any]:
    apps: list[App] = []

    def start(**options: Any) -> App:
        app = App(tornsession.TornadoSessionManager(SECRET, **options))
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.mark.parametrize("options", [{}, {"cookie_secure": "auto"}], ids=["default", "auto"])
def test_cookies_are_secure_exactly_on_https_requests(start_app: Any, options: Any) -> None:
    app = start_app(**options)
    over_https = session_cookies(app.get("/app/set", https=True))
    assert set(over_https) == set(SESSION_COOKIES), over_https
    for name, (_, attrs) in over_https.items():
        assert "secure" in attrs, f"{name} over HTTPS (X-Forwarded-Proto) lacks Secure: {attrs}"
    over_http = session_cookies(app.get("/app/set", https=False))
    assert set(over_http) == set(SESSION_COOKIES), over_http
    for name, (_, attrs) in over_http.items():
        assert "secure" not in attrs, f"{name} over plain HTTP carries Secure: {attrs}"


def test_cookie_secure_false_never_sets_secure(start_app: Any) -> None:
    app = start_app(cookie_secure=False)
    for name, (_, attrs) in session_cookies(app.get("/app/set", https=True)).items():
        assert "secure" not in attrs, name


@pytest.mark.parametrize(
    ("options", "https"),
    [
        (
            {"cookie_path": "/app", "cookie_domain": "example.com", "cookie_samesite": "Strict"},
            True,
        ),
        ({"cookie_path": "/app", "cookie_samesite": "None", "cookie_secure": True}, True),
        ({"cookie_path": "/app", "cookie_domain": "example.com", "cookie_secure": True}, False),
        ({"cookie_name": "__Host-sid", "cookie_secure": True}, True),
        ({"cookie_samesite": "Lax"}, False),
    ],
    ids=["auto-https-domain-strict", "none-secure", "secure-over-http", "host-prefix", "plain"],
)
def test_clearing_cookies_carry_the_attributes_of_the_cookies_they_clear(
    start_app: Any, options: dict[str, Any], https: bool
) -> None:
    app = start_app(**options)
    names = (options.get("cookie_name", "session_id"), "hmac_digest")
    set_headers = app.get("/app/set", https)
    set_cookies = {parse(h)[0]: parse(h) for h in set_headers}
    assert set(names) <= set(set_cookies), set_headers
    cookie = "; ".join(f"{n}={set_cookies[n][1]}" for n in names)
    clear_headers = app.get("/app/destroy", https, cookie)
    cleared = {parse(h)[0]: parse(h) for h in clear_headers}
    assert set(names) <= set(cleared), clear_headers
    for name in names:
        _, _, made = set_cookies[name]
        _, value, clearing = cleared[name]
        assert value in ("", '""') or clearing.get("max-age") == "0", clear_headers
        for attribute in ("path", "domain", "samesite"):
            assert clearing.get(attribute, "").lower() == made.get(attribute, "").lower(), (
                f"{name}: {attribute} differs: set {made}, cleared with {clearing}"
            )
        assert ("secure" in clearing) == ("secure" in made), f"{name}: {made} vs {clearing}"
