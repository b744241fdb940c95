"""The seed document's app, with only its import line changed, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from support.browser import Browser
from support.processes import AppProcess


def test_seed_app_keeps_data_across_requests(seed_app: AppProcess) -> None:
    with Browser(seed_app.port) as browser:
        assert [browser.get("/")[1] for _ in range(5)] == ["1", "2", "3", "4", "5"]
        assert browser.get("/peek") == (200, "5")


def test_seed_app_keeps_data_through_a_server_restart(session_dir: Path) -> None:
    app = AppProcess("tests.apps.seed_app", "--session-dir", str(session_dir)).start()
    try:
        with Browser(app.port) as browser:
            assert [browser.get("/")[1] for _ in range(3)] == ["1", "2", "3"]
            cookies = dict(browser.cookies)
    finally:
        app.stop()
    restarted = AppProcess("tests.apps.seed_app", "--session-dir", str(session_dir)).start()
    try:
        with Browser(restarted.port) as browser:
            browser.cookies = cookies
            assert browser.get("/")[1] == "4"
    finally:
        restarted.stop()


def test_session_files_use_the_original_naming_and_hold_json(
    seed_app: AppProcess, session_dir: Path
) -> None:
    with Browser(seed_app.port) as browser:
        browser.get("/")
    files = list(session_dir.iterdir())
    assert len(files) == 1
    assert files[0].name.startswith("SESSION") and len(files[0].name) == len("SESSION") + 32
    record = json.loads(files[0].read_bytes())
    assert record["d"] == {"blah": 1}


def test_session_cookies_are_httponly_and_samesite_lax(seed_app: AppProcess) -> None:
    with Browser(seed_app.port) as browser:
        browser.get("/")
        headers = browser.last_set_cookie
    assert len(headers) == 2
    for header in headers:
        lowered = header.lower()
        assert "httponly" in lowered, header
        assert "samesite=lax" in lowered, header
        assert "path=/" in lowered, header
    assert {h.split("=", 1)[0] for h in headers} == {"session_id", "hmac_digest"}
