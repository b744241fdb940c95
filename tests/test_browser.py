"""The demo in a real browser: headless Chromium driven by Selenium through chromedriver; and a
``CookieStore`` session near the 4,096-byte cookie limit, kept by the real browser.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/install-system-deps.sh installs
them) and Selenium from PyPI. A missing piece skips the test, except under CI=true, where it
fails it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
import tornsession
from support.chromium import chromium
from support.cookie_store import SECRET, cookie_store, largest_blob_size
from support.engine_app import Server
from support.processes import REPO


@pytest.fixture
def driver() -> Iterator[Any]:
    with chromium() as chrome:
        yield chrome


@pytest.fixture
def demo_url(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tornsession.demo", "--port", "0", "--session-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    try:
        assert match, f"the demo prints its URL, got {line!r}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    value: str = driver.find_element(By.ID, element_id).text
    return value


def submit(driver: Any, button_id: str) -> None:
    """Clicks a form's button and waits for the page it leads to (click() does not wait)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(page))


def has(driver: Any, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.ID, element_id))


def test_login_counter_httponly_cookies_and_logout(driver: Any, demo_url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(demo_url)
    assert not has(driver, "greeting") and not has(driver, "visits")
    assert "session_id" not in {cookie["name"] for cookie in driver.get_cookies()}

    driver.find_element(By.ID, "name").send_keys("Ann <b>")
    submit(driver, "login")  # POST /login, redirected to /
    assert text(driver, "greeting") == "Hello, Ann <b>!"  # escaped HTML, shown as text
    assert text(driver, "visits") == "Visits: 1"

    # The counter lives in the session across page loads.
    driver.get(demo_url)
    driver.refresh()
    assert text(driver, "visits") == "Visits: 3"
    assert text(driver, "greeting") == "Hello, Ann <b>!"

    # The browser holds both session cookies, HttpOnly and SameSite=Lax, and page script
    # cannot read them.
    cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
    for name in ("session_id", "hmac_digest"):
        assert name in cookies, cookies
        assert cookies[name]["httpOnly"] is True
        assert cookies[name].get("sameSite") == "Lax"
    document_cookie = driver.execute_script("return document.cookie")
    assert "session_id" not in document_cookie and "hmac_digest" not in document_cookie

    submit(driver, "logout")  # POST /logout, redirected to /
    assert not has(driver, "greeting") and not has(driver, "visits")
    names = {cookie["name"] for cookie in driver.get_cookies()}
    assert not names & {"session_id", "hmac_digest"}, names


class Fill(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["blob"] = "x" * int(self.get_argument("size"))
        self.write("<p id='saved'>saved</p>")


class Peek(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:  # reads only: nothing is resealed
        self.write(f"<p id='size'>{len(self.session.get('blob', ''))}</p>")


@pytest.fixture
def cookie_store_url() -> Iterator[str]:
    """A mixin app on CookieStore (nothing on the server), on its own IOLoop in this process."""
    manager = tornsession.TornadoSessionManager(SECRET, store=cookie_store())
    server = Server(
        tornado.web.Application([(r"/fill", Fill), (r"/peek", Peek)], session_manager=manager)
    )
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_a_cookie_store_session_near_the_size_limit_round_trips_in_chromium(
    driver: Any, cookie_store_url: str
) -> None:
    largest = largest_blob_size(tornsession.TornadoSessionManager(SECRET, store=cookie_store()))
    driver.get(f"{cookie_store_url}/fill?size={largest}")
    assert text(driver, "saved") == "saved"
    [cookie] = driver.get_cookies()  # one cookie, the whole session sealed in it
    assert cookie["name"] == "session_id" and cookie["httpOnly"] is True
    assert cookie["value"].startswith("v1.") and len(cookie["value"]) > 3900
    driver.get(f"{cookie_store_url}/peek")
    assert text(driver, "size") == str(largest)  # Chromium kept and sent it back whole
    kept = driver.get_cookies()[0]["value"]
    assert kept == cookie["value"]

    driver.get(f"{cookie_store_url}/fill?size={largest + 3}")  # over the limit
    assert "500" in driver.title, driver.title
    assert not has(driver, "saved")
    assert driver.get_cookies()[0]["value"] == kept  # no cookie sent: the old one stays
    driver.get(f"{cookie_store_url}/peek")
    assert text(driver, "size") == str(largest)  # ... and still opens the session
