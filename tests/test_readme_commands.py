"""The README's two commands run as written: `make demo` starts the demo that serves its page
(over real HTTP), and `make test` is what CI runs (`.ci/run` calls exactly it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

from support.processes import REPO

README = REPO / "README.md"


def readme_commands() -> list[str]:
    """The commands of the README's "Try it" block, comments dropped."""
    block = re.search(r"## Try it.*?```sh\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has a Try it section with an sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_names_the_demo_and_the_test_command() -> None:
    assert readme_commands() == ["make demo", "make test"]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.startswith("make")] == ["make test"]


def test_make_demo_as_written_serves_the_demo_page(tmp_path: Path) -> None:
    # The secrets from the environment, so the demo writes no secrets file; PORT=0 for a free
    # port, which the demo prints.
    env = dict(
        os.environ,
        PORT="0",
        TORNSESSION_SECRET="r" * 64,
        TORNSESSION_COOKIE_SECRET="c" * 64,
    )
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "demo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and the demo under it stop together
    )
    try:
        assert demo.stdout is not None
        url = None
        for line in demo.stdout:
            found = re.search(r"tornsession demo on (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None, "make demo printed no URL"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert response.status == 200
        assert "tornsession demo" in page and "What this proves" in page
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)
        if demo.stdout is not None:
            demo.stdout.close()
