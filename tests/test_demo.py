"""The demo app: log in, count visits, log out, over real HTTP in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Browser


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tornsession.demo", "--port", "0", "--session-dir", str(tmp_path)],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    try:
        assert match, f"the demo prints its URL, got {line!r}"
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_demo_login_counter_and_logout(demo: int) -> None:
    with Browser(demo) as browser:
        assert "Visits: 1" in browser.get("/")[1]
        assert "Visits: 2" in browser.get("/")[1]
        status, _ = browser.request("POST", "/login", "name=Ann%20%3Cb%3E")
        assert status == 302
        status, body = browser.get("/")
        assert "Hello, Ann &lt;b&gt;!" in body and "Visits: 3" in body
        assert "Visits: 4" in browser.get("/")[1]
        browser.request("POST", "/logout", "")
        status, body = browser.get("/")
        assert "Hello" not in body and "Visits: 1" in body
