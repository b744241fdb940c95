"""The demo app (``python -m tornsession.demo``) over real HTTP, in its own process: log in, count,
log out; no session fixation; nothing stored for anonymous visitors; secrets that outlive a
restart; a one-line error for a busy port; and the same app on ``--store cookie`` (CookieStore)."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.browser import Browser
from support.processes import REPO, stopped_after

SESSION_COOKIES = frozenset({"session_id", "hmac_digest"})
STRONG = "a" * 64


class Demo:
    """One demo process on a port it chose itself (``--port 0``)."""

    def __init__(
        self, session_dir: Path, env: dict[str, str] | None = None, store: str = "file"
    ) -> None:
        self.session_dir = session_dir
        argv = [sys.executable, "-m", "tornsession.demo", "--port", "0", "--store", store]
        self.process = subprocess.Popen(
            [*argv, "--session-dir", str(session_dir)],
            cwd=REPO,
            env=demo_env(env),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.stop()
            raise AssertionError(f"the demo prints its URL, got {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def demo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the demo's secrets and port, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TORNSESSION_SECRET", "TORNSESSION_COOKIE_SECRET", "PORT")
    }
    return {**env, **(extra or {})}


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    """Starts demo processes; stops them after the test."""
    yield from stopped_after(Demo)


@pytest.fixture
def demo(start_demo: Callable[..., Demo], tmp_path: Path) -> Demo:
    return start_demo(tmp_path / "sessions")


def post_form(browser: Browser, path: str, fields: dict[str, str] | None = None) -> int:
    """Posts a form of the page at / with its XSRF token, as a browser submits it."""
    _, page = browser.get("/")
    token = re.search(r'name="_xsrf" value="([^"]+)"', page)
    xsrf = {"_xsrf": token.group(1)} if token else {}
    body = urllib.parse.urlencode({**xsrf, **(fields or {})})
    status, _ = browser.request("POST", path, body)
    return status


def session_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("SESSION"))


def set_cookie_names(browser: Browser) -> set[str]:
    return {header.split("=", 1)[0] for header in browser.last_set_cookie}


def test_demo_login_counter_and_logout(demo: Demo) -> None:
    with Browser(demo.port) as browser:
        status, body = browser.get("/")
        assert status == 200 and "id='login'" in body and "Hello" not in body
        assert post_form(browser, "/login", {"name": "Ann <b>"}) == 302
        status, body = browser.get("/")
        assert "Hello, Ann &lt;b&gt;!" in body and "Visits: 1" in body
        assert "Visits: 2" in browser.get("/")[1]
        assert post_form(browser, "/logout") == 302
        assert not SESSION_COOKIES & browser.cookies.keys(), browser.cookies
        status, body = browser.get("/")
        assert "Hello" not in body and "id='login'" in body
    assert session_files(demo.session_dir) == []


def test_cookieless_visits_store_nothing_and_set_no_session_cookie(demo: Demo) -> None:
    for _ in range(3):
        with Browser(demo.port) as browser:
            status, body = browser.get("/")
            assert status == 200 and "id='login'" in body
            assert not SESSION_COOKIES & set_cookie_names(browser), browser.last_set_cookie
    assert session_files(demo.session_dir) == []


def test_login_gives_a_new_session_id_so_a_planted_cookie_opens_nothing(demo: Demo) -> None:
    with Browser(demo.port) as attacker, Browser(demo.port) as victim:
        # The attacker gets a valid session cookie of their own ...
        assert post_form(attacker, "/login", {"name": "mallory"}) == 302
        assert SESSION_COOKIES <= attacker.cookies.keys()
        planted = dict(attacker.cookies)
        # ... and plants it in the victim's browser, who then logs in.
        victim.cookies.update(planted)
        assert post_form(victim, "/login", {"name": "victim"}) == 302
        assert "Hello, victim!" in victim.get("/")[1]
        assert victim.cookies["session_id"] != planted["session_id"]
        # The planted cookie does not open the victim's session.
        with Browser(demo.port) as replay:
            replay.cookies.update(planted)
            body = replay.get("/")[1]
            assert "victim" not in body, body


def test_sessions_outlive_a_restart_with_the_same_session_dir(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    folder = tmp_path / "sessions"
    first = start_demo(folder)
    with Browser(first.port) as browser:
        assert post_form(browser, "/login", {"name": "Ann"}) == 302
        assert "Visits: 1" in browser.get("/")[1]
        cookies = dict(browser.cookies)
    first.stop()
    secrets_file = folder / "demo-secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    kept = secrets_file.read_text()

    second = start_demo(folder)
    with Browser(second.port) as browser:
        browser.cookies.update(cookies)
        body = browser.get("/")[1]
        assert "Hello, Ann!" in body and "Visits: 2" in body, body
    assert secrets_file.read_text() == kept, "the secrets are made once"


def test_secrets_from_the_environment_make_no_file(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    folder = tmp_path / "sessions"
    env = {"TORNSESSION_SECRET": STRONG, "TORNSESSION_COOKIE_SECRET": "b" * 64}
    demo = start_demo(folder, env)
    with Browser(demo.port) as browser:
        assert post_form(browser, "/login", {"name": "Ann"}) == 302
        assert "Hello, Ann!" in browser.get("/")[1]
    assert not (folder / "demo-secrets.json").exists()


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The demo expected to exit at once (a startup error)."""
    return subprocess.run(
        [sys.executable, "-m", "tornsession.demo", *args],
        cwd=REPO,
        env=demo_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_a_short_secret_in_the_environment_is_refused(tmp_path: Path) -> None:
    env = {"TORNSESSION_SECRET": "short", "TORNSESSION_COOKIE_SECRET": STRONG}
    done = run_demo("--port", "0", "--session-dir", str(tmp_path), env=env)
    assert_one_line_error(done, "TORNSESSION_SECRET", "32 bytes", "token_hex")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket of this test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_busy_port_gives_one_line_and_exit_code_2(busy_port: int, tmp_path: Path) -> None:
    done = run_demo("--port", str(busy_port), "--session-dir", str(tmp_path))
    assert_one_line_error(done, str(busy_port), "in use")


def test_the_port_comes_from_PORT_unless_given(
    busy_port: int, tmp_path: Path, start_demo: Callable[..., Demo]
) -> None:
    done = run_demo("--session-dir", str(tmp_path), env={"PORT": str(busy_port)})
    assert_one_line_error(done, str(busy_port))
    start_demo(tmp_path, {"PORT": str(busy_port)})  # --port 0 wins over PORT: it starts


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_bad_port_is_refused(port: str, tmp_path: Path) -> None:
    done = run_demo("--port", port, "--session-dir", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "port" in done.stderr


def test_demo_lists_your_sessions_ends_one_and_logs_out_everywhere_else(demo: Demo) -> None:
    with Browser(demo.port) as a, Browser(demo.port) as b, Browser(demo.port) as c:
        for browser in (a, b, c):
            assert post_form(browser, "/login", {"name": "ann"}) == 302
        _, page = a.get("/")
        assert page.count("class='session") == 3 and "(this browser)" in page
        # "End this session" on the first other one.
        hashed = re.findall(r"name='id' value='([0-9a-f]{64})'", page)
        assert len(hashed) == 2
        assert post_form(a, "/sessions/end", {"id": hashed[0]}) == 302
        assert sorted("Hello" in x.get("/")[1] for x in (b, c)) == [False, True]
        # A made-up id ends nothing.
        assert post_form(a, "/sessions/end", {"id": "0" * 64}) == 302
        assert post_form(a, "/sessions/others") == 302
        assert ["Hello" in x.get("/")[1] for x in (a, b, c)] == [True, False, False]
        assert a.get("/")[1].count("class='session") == 1


# --- --store cookie: the session sealed in its cookie ----------------------------------------


def test_the_cookie_store_demo_logs_in_counts_and_logs_out_with_nothing_stored(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    demo = start_demo(tmp_path / "sessions", None, "cookie")
    with Browser(demo.port) as browser:
        status, body = browser.get("/")
        assert status == 200 and "id='login'" in body
        assert not SESSION_COOKIES & set_cookie_names(browser)
        assert post_form(browser, "/login", {"name": "Ann <b>"}) == 302
        assert sorted(browser.cookies) == ["_xsrf", "session_id"]  # no hmac_digest
        sealed = browser.cookies["session_id"]
        assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+", sealed), sealed
        assert "Ann" not in sealed
        body = browser.get("/")[1]
        assert "Hello, Ann &lt;b&gt;!" in body and "Visits: 1" in body
        assert "id='sealed'" in body and "class='session" not in body  # nothing to list
        assert "Visits: 2" in browser.get("/")[1]
        assert post_form(browser, "/logout") == 302
        assert not SESSION_COOKIES & browser.cookies.keys(), browser.cookies
        assert "id='login'" in browser.get("/")[1]
    # The folder holds the secrets and the users' counters, never a session.
    assert session_files(demo.session_dir) == []


def test_the_cookie_store_demo_keeps_sessions_over_a_restart_and_logs_out_elsewhere(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    folder = tmp_path / "sessions"
    first = start_demo(folder, None, "cookie")
    with Browser(first.port) as a, Browser(first.port) as b:
        for browser in (a, b):
            assert post_form(browser, "/login", {"name": "ann"}) == 302
            assert "Hello, ann!" in browser.get("/")[1]
        cookies = dict(a.cookies)
    first.stop()
    second = start_demo(folder, None, "cookie")  # the same secrets: the cookies still open
    with Browser(second.port) as a, Browser(second.port) as b:
        a.cookies.update(cookies)
        assert "Visits: 2" in a.get("/")[1]
        assert post_form(b, "/login", {"name": "ann"}) == 302
        assert "Hello, ann!" in b.get("/")[1]
        assert post_form(a, "/sessions/others") == 302  # "log out everywhere else"
        assert "Hello, ann!" in a.get("/")[1]
        assert "Hello" not in b.get("/")[1]
        assert post_form(a, "/sessions/end", {"id": "0" * 64}) == 302  # nothing to end: no 500
    with Browser(second.port) as replay:
        # a's cookie from before: ended too (a kept its session through the reseal only)
        replay.cookies.update(cookies)
        assert "Hello" not in replay.get("/")[1]


# --- the page explains itself -------------------------------------------------------------


def session_ids(folder: Path) -> list[str]:
    return [name.removeprefix("SESSION") for name in session_files(folder)]


def test_the_login_name_is_html_escaped_wherever_the_page_shows_it(demo: Demo) -> None:
    name = '<script>alert("x")</script>&'
    with Browser(demo.port) as browser:
        assert post_form(browser, "/login", {"name": name}) == 302
        _, page = browser.get("/")
    assert "<script>alert" not in page and 'alert("x")' not in page
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
    assert f"Hello, {escaped}!" in page  # the greeting
    assert f"<code id='owner'>{escaped}</code>" in page  # the owner
    in_json = escaped.replace("&quot;", "\\&quot;")  # JSON's \" then HTML's &quot;
    assert f"&quot;user&quot;: &quot;{in_json}&quot;" in page  # the contents


def test_the_page_shows_8_hex_digits_of_the_session_id_and_never_the_whole_id(demo: Demo) -> None:
    with Browser(demo.port) as browser:
        assert post_form(browser, "/login", {"name": "ann"}) == 302
        [session_id] = session_ids(demo.session_dir)
        _, page = browser.get("/")
        assert f"<code id='id-prefix'>{session_id[:8]}</code>" in page
        assert session_id not in page and session_id[:9] not in page
        # Logging in again (a planted or an old cookie) changes the id, and the page says so.
        assert post_form(browser, "/login", {"name": "ann"}) == 302
        [new_id] = session_ids(demo.session_dir)
        _, page = browser.get("/")
        assert new_id != session_id and new_id not in page
        notice = f"the session id was {session_id[:8]}\u2026, it is now {new_id[:8]}\u2026"
        assert notice in page and "the id changed" in page


def test_a_form_posted_without_the_xsrf_token_is_refused_and_stores_nothing(demo: Demo) -> None:
    with Browser(demo.port) as browser:
        browser.get("/")  # the _xsrf cookie, but no token in the form
        assert browser.request("POST", "/login", "name=ann")[0] == 403
        assert not SESSION_COOKIES & browser.cookies.keys()
    assert session_files(demo.session_dir) == []


def test_session_forms_posted_by_a_visitor_not_logged_in_store_nothing(demo: Demo) -> None:
    with Browser(demo.port) as browser:
        for path in ("/sessions/end", "/sessions/others", "/logout"):
            assert post_form(browser, path, {"id": "0" * 64}) == 302
            assert not SESSION_COOKIES & browser.cookies.keys(), path
        status, page = browser.get("/?done=logout")
        assert status == 200 and "id='notice-logout'" in page
        assert not SESSION_COOKIES & set_cookie_names(browser)
    assert session_files(demo.session_dir) == []


def test_a_cookie_that_opens_no_session_is_told_apart_from_no_cookie(demo: Demo) -> None:
    with Browser(demo.port) as a, Browser(demo.port) as b:
        for browser in (a, b):
            assert post_form(browser, "/login", {"name": "ann"}) == 302
        assert post_form(a, "/sessions/others") == 302
        _, page = a.get("/")
        assert "destroy_user_sessions(user, keep=this session) ended 1 other session." in page
        _, page = b.get("/")  # b's cookie names an ended session
        assert "id='fresh'" in page and "id='login'" in page and "Hello" not in page
        with Browser(demo.port) as new:
            assert "id='fresh'" not in new.get("/")[1]
    assert len(session_files(demo.session_dir)) == 1
