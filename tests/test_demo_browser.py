"""The demo's page in real browsers (headless Chromium through Selenium, two profiles at once):
it says what it shows at every step (the session's contents, the cookies with their sizes and
flags, the store, what each step proves) and what it says is what the browsers hold.

Chromium comes from tests/support/chromium.py: a missing piece skips, except under CI=true, where
it fails. ``DEMO_SCREENSHOT=PATH`` saves a
screenshot of the logged-in page with two sessions to PATH (not taken otherwise).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from support.chromium import chromium
from support.processes import stopped_after
from test_demo import Demo

SESSION_COOKIES = {"session_id", "hmac_digest"}
PROVES_LOGIN = "login regenerates the id: a cookie planted in your browser before login"
PROVES_END = "end this one removes the other browser's session: its next request starts fresh"
PROVES_OTHERS = "everywhere else ends every other session of yours and keeps this one"
PROVES_LOGOUT = "logout leaves nothing behind"
PROVES_HTTPONLY = "HttpOnly keeps the session cookies from page scripts"


@pytest.fixture
def browsers() -> Iterator[Callable[[], Any]]:
    """Makes headless Chromium drivers, each its own profile (its own cookies); quits them after
    the test."""
    with ExitStack() as stack:

        def make() -> Any:
            driver = stack.enter_context(chromium())
            driver.set_window_size(1100, 2400)  # the whole page in DEMO_SCREENSHOT
            return driver

        yield make


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    yield from stopped_after(Demo)


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    value: str = driver.find_element(By.ID, element_id).text
    return value


def has(driver: Any, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.ID, element_id))


def click_through(driver: Any, selector: str) -> None:
    """Clicks a form's button and waits for the page it leads to (click() does not wait)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(page))


def url(demo: Demo) -> str:
    return f"http://127.0.0.1:{demo.port}/"


def log_in(driver: Any, demo: Demo, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url(demo))
    driver.find_element(By.ID, "name").send_keys(name)
    click_through(driver, "#login")  # POST /login, redirected to /


def held_cookies(driver: Any) -> dict[str, str]:
    """The cookies the browser holds for the demo: name -> value."""
    return {cookie["name"]: cookie["value"] for cookie in driver.get_cookies()}


def cookie_table(driver: Any) -> dict[str, tuple[int, str, list[str]]]:
    """The page's cookie table: name -> (size in bytes, what it is, flags)."""
    from selenium.webdriver.common.by import By

    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#cookies tr.cookie"):
        name, size, role, _ = (cell.text for cell in row.find_elements(By.TAG_NAME, "td"))
        flags = [flag.text for flag in row.find_elements(By.CLASS_NAME, "flag")]
        rows[name] = (int(size.removesuffix(" bytes")), role, flags)
    return rows


def session_items(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#sessions li.session")]


def proves(driver: Any) -> str:
    """Every "what this proves" line of the page, one a line."""
    from selenium.webdriver.common.by import By

    return "\n".join(line.text for line in driver.find_elements(By.CLASS_NAME, "proves"))


def session_ids(folder: Path) -> list[str]:
    """The ids of the sessions a FileStore folder holds (``SESSION<id>`` files)."""
    return [
        p.name.removeprefix("SESSION") for p in folder.iterdir() if p.name.startswith("SESSION")
    ]


def assert_logged_out_page(driver: Any) -> None:
    assert not has(driver, "greeting") and has(driver, "login")
    assert not SESSION_COOKIES & held_cookies(driver).keys()
    assert json.loads(text(driver, "contents")) == {}
    assert text(driver, "record").startswith("No record: nothing is stored")


def test_the_page_explains_login_cookies_store_sessions_and_logout_across_two_browsers(
    browsers: Callable[[], Any], start_demo: Callable[..., Demo], tmp_path: Path
) -> None:

    demo = start_demo(tmp_path / "sessions")
    one = browsers()

    # First visit: the page says what tornsession is and what it shows; no session cookie yet
    # (only Tornado's _xsrf token, set with this page for its forms).
    one.get(url(demo))
    assert "tornsession keeps a Tornado app's sessions" in text(one, "about")
    assert text(one, "no-cookies") == "Your browser sent no cookies with this request."
    assert held_cookies(one).keys() == {"_xsrf"}
    assert_logged_out_page(one)
    assert text(one, "store") == f'FileStore("{(tmp_path / "sessions").resolve()}")'
    assert PROVES_LOGIN in proves(one) and not has(one, "fresh")

    # Login as "ann": the notice shows the id before and after regenerate(), the page its first
    # 8 hex digits (never the whole id: the whole id is the cookie).
    log_in(one, demo, "ann")
    assert text(one, "greeting") == "Hello, ann!" and text(one, "visits") == "Visits: 1"
    notice = text(one, "notice-login")
    before, after = re.findall(r"\b([0-9a-f]{8})\u2026", notice)
    assert before != after and after == text(one, "id-prefix"), notice
    assert "the id changed" in notice and "never sent" in notice
    assert PROVES_LOGIN in notice
    [session_id] = session_ids(tmp_path / "sessions")
    assert session_id[:8] == after and session_id not in one.page_source

    # The contents: the dict as JSON; the owner.
    assert json.loads(text(one, "contents")) == {"user": "ann", "visits": 1}
    assert text(one, "owner") == "ann"

    # The cookies as the browser holds them: names, sizes of the values, the flags set.
    held = held_cookies(one)
    table = cookie_table(one)
    assert table.keys() == held.keys() == {"_xsrf", "session_id", "hmac_digest"}
    for name, (size, _, _) in table.items():
        assert size == len(held[name].encode()), (name, size, held[name])
    for name in SESSION_COOKIES:
        flags = table[name][2]
        assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(flags), flags
        assert "Expires: 30 days after it is set" in flags
        assert any(flag.startswith("not Secure") for flag in flags), flags
    assert "signed by Tornado" in table["session_id"][1]
    assert table["_xsrf"][2][0].startswith("not HttpOnly")
    # ... and what the browser says of them matches the table: the session cookies are HttpOnly
    # and SameSite=Lax, and the page's script does not see them (the page shows what it sees).
    for cookie in one.get_cookies():
        if cookie["name"] in SESSION_COOKIES:
            assert cookie["httpOnly"] is True and cookie.get("sameSite") == "Lax", cookie
    assert text(one, "script-sees") == "_xsrf"
    assert PROVES_HTTPONLY in proves(one)

    # The store and the record's size in it (as the previous request saved it).
    record = text(one, "record")
    assert re.fullmatch(r"The record: one file of \d+ bytes in the folder, .*", record), record

    # A second browser logs in as "ann" too; the first one sees both sessions, itself marked.
    two = browsers()
    log_in(two, demo, "ann")
    assert text(two, "greeting") == "Hello, ann!"
    assert held_cookies(two)["session_id"] != held_cookies(one)["session_id"]
    one.get(url(demo))
    items = session_items(one)
    assert len(items) == 2 and sum("(this browser)" in item for item in items) == 1, items
    assert all("HeadlessChrome" in item for item in items), items
    assert PROVES_END in proves(one) and PROVES_OTHERS in proves(one)
    screenshot = os.environ.get("DEMO_SCREENSHOT")
    if screenshot:
        one.save_screenshot(screenshot)

    # "Log out everywhere else" from the first browser ends the second's session ...
    click_through(one, "#others")
    assert "ended 1 other session." in text(one, "notice-others")
    assert PROVES_OTHERS in text(one, "notice-others")
    assert text(one, "greeting") == "Hello, ann!" and len(session_items(one)) == 1
    # ... whose next page load starts fresh: its cookie opens nothing, and the page says so.
    two.get(url(demo))
    assert not has(two, "greeting") and has(two, "login")
    assert "Your browser sent a session cookie, but it opens no session" in text(two, "fresh")

    # "End this one": the second browser logs in again, the first ends that session alone.
    log_in(two, demo, "ann")
    one.get(url(demo))
    assert len(session_items(one)) == 2
    click_through(one, "#sessions button.end")
    assert "destroy_session() ended 1 session." in text(one, "notice-end")
    assert PROVES_END in text(one, "notice-end")
    assert len(session_items(one)) == 1 and text(one, "greeting") == "Hello, ann!"
    two.get(url(demo))
    assert not has(two, "greeting") and has(two, "fresh")

    # Logout: destroy() deletes the record and clears the cookies.
    click_through(one, "#logout")
    assert "Logged out with destroy()" in text(one, "notice-logout")
    assert PROVES_LOGOUT in text(one, "notice-logout")
    assert_logged_out_page(one)
    assert not has(one, "fresh")  # the browser sent no session cookie: it was cleared
    assert session_ids(tmp_path / "sessions") == []


def test_the_cookie_store_page_shows_the_sealed_cookie_as_the_record_and_lists_nothing(
    browsers: Callable[[], Any], start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    demo = start_demo(tmp_path / "sessions", None, "cookie")
    one = browsers()
    one.get(url(demo))
    assert text(one, "store").startswith("CookieStore(revocation=FileStore(")
    log_in(one, demo, "ann")
    assert text(one, "greeting") == "Hello, ann!"
    # Every page load here changes the session (visits): each response reseals the cookie, so
    # the page shows the one the browser held before it (sent with its request).
    held = held_cookies(one)
    assert held.keys() == {"_xsrf", "session_id"}  # the whole session in one cookie
    one.get(url(demo))
    table = cookie_table(one)
    assert table["session_id"][0] == len(held["session_id"])
    assert "sealed" in table["session_id"][1] and "HttpOnly" in table["session_id"][2]
    assert f"cookie itself, {len(held['session_id'])} bytes" in text(one, "record")
    assert json.loads(text(one, "contents")) == {"user": "ann", "visits": 2}
    assert held_cookies(one)["session_id"] != held["session_id"]  # resealed
    # The sessions list says why it cannot list; "everywhere else" is still offered.
    assert "cannot be listed here" in text(one, "sealed") and not session_items(one)
    assert has(one, "others") and "the data travels sealed in the cookie" in proves(one)
    click_through(one, "#others")
    assert "revoked your other session cookies" in text(one, "notice-others")
    click_through(one, "#logout")
    assert_logged_out_page(one)
