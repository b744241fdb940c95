"""A reviewer's attacks on the demo (``python -m tornsession.demo``): cookies planted by another
app on the host, a name given at login by someone else, redirects, methods, and what the page
says about the cookies the browser sent."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import Browser
from support.processes import stopped_after
from test_demo import Demo, post_form, session_files
from tornsession.demo import sent_cookie_sizes


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """One demo process (as tests/test_demo.py starts them), stopped after the test."""
    for start in stopped_after(Demo):
        yield start(tmp_path / "sessions")


def raw_get(port: int, cookie: bytes) -> tuple[int, str]:
    """GET / with a ``Cookie`` header of exactly these bytes (as a browser sends them)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", "/")
        connection.putheader("Cookie", cookie)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


def test_planted_cookie_names_and_values_are_escaped(demo: Demo) -> None:
    planted = [
        b"<script>alert(1)</script>=x",
        b'"><svg onload=alert(1)>=1',
        b"a'onmouseover='alert(1)=v",
        b"x=<img src=x onerror=alert(1)>",
        b"session_id=<script>alert(2)</script>",
    ]
    for cookie in planted:
        status, page = raw_get(demo.port, cookie)
        assert status == 200
        assert "<script>alert" not in page and "<svg" not in page and "<img" not in page
        assert "onmouseover='" not in page
    assert session_files(demo.session_dir) == []


def test_cookie_sizes_are_the_bytes_the_browser_sent_even_when_not_ascii(
    demo: Demo,
) -> None:
    # FINDING: the page says the sizes are "those your browser sent", but the demo measures
    # len(value.encode()) of Tornado's header, which is decoded as latin-1: every byte >= 0x80
    # counts twice (3 bytes sent, "6 bytes" shown), and the name shows as mojibake ("cafÃ©").
    # python/tornsession/demo.py sent_cookie_sizes(): value.encode("latin-1") would count them.
    status, page = raw_get(demo.port, b"other=\xc3\xa9\xff")
    assert status == 200
    assert "<td class='size'>3 bytes</td>" in page, re.findall(r"<td class='size'>.*?</td>", page)


def test_sent_cookie_sizes_of_a_latin1_decoded_header() -> None:
    # FINDING (the same, without a process): Tornado hands the header over latin-1 decoded.
    header = b"a=\xc3\xa9".decode("latin-1")
    assert sent_cookie_sizes(header) == [("a", 2)]


def test_a_visitor_cannot_end_another_users_session_by_its_hashed_id(demo: Demo) -> None:
    with Browser(demo.port) as ann, Browser(demo.port) as ann2, Browser(demo.port) as mallory:
        assert post_form(ann, "/login", {"name": "ann"}) == 302
        assert post_form(ann2, "/login", {"name": "ann"}) == 302
        assert post_form(mallory, "/login", {"name": "mallory"}) == 302
        hashed = re.findall(r"name='id' value='([0-9a-f]{64})'", ann2.get("/")[1])
        assert len(hashed) == 1  # ann's first session, as ann's second browser lists it
        assert post_form(mallory, "/sessions/end", {"id": hashed[0]}) == 302
        assert "destroy_session() ended no session." in mallory.get("/")[1]
        assert "Hello, ann!" in ann.get("/")[1]


def test_no_redirect_goes_off_site_and_other_methods_are_refused(demo: Demo) -> None:
    with Browser(demo.port) as browser:
        for query in (
            "?done=//evil.example/",
            "?next=https%3A%2F%2Fevil.example%2F",
            "?done=logout",
        ):
            status, page = browser.get("/" + query)
            assert status == 200 and "evil.example" not in page
        for method in ("PUT", "DELETE", "PATCH"):  # no _xsrf: refused before any handler
            assert browser.request(method, "/logout", "")[0] == 403
        for path in ("/login", "/logout", "/sessions/end", "/sessions/others"):
            assert browser.get(path)[0] == 405
    assert session_files(demo.session_dir) == []


def test_neither_the_page_nor_a_redirect_carries_the_whole_session_id(demo: Demo) -> None:
    with Browser(demo.port) as a, Browser(demo.port) as b:
        assert post_form(a, "/login", {"name": "ann"}) == 302
        assert post_form(b, "/login", {"name": "ann"}) == 302
        ids = [name.removeprefix("SESSION") for name in session_files(demo.session_dir)]
        assert len(ids) == 2
        for browser in (a, b):
            _, page = browser.get("/")
            for session_id in ids:
                assert session_id[:9] not in page
