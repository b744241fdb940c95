"""Shared fixtures. The helpers themselves live in tests/support: servers, app processes, the
browser, test stores and ``any_store``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixtures from tests/support: Redis and memcached servers, app processes, stores of every kind,
# the engine tests' in-process app (serve).
pytest_plugins = [
    "support.servers",
    "support.processes",
    "support.any_store",
    "support.engine_app",
]
pytest.register_assert_rewrite("support")  # before the imports below

from support.browser import Browser  # noqa: E402
from support.processes import AppProcess  # noqa: E402

# The apps the tests start use short throwaway secrets on purpose (the seed app keeps its own);
# the warning they give is checked in tests/test_options.py.
os.environ["PYTHONWARNINGS"] = "ignore:a session secret is shorter than 32 bytes"


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    """Collects Browser objects made in a test and closes their connections afterwards."""
    made: list[Browser] = []
    yield made
    for browser in made:
        browser.close()


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


@pytest.fixture
def seed_app(session_dir: Path) -> Iterator[AppProcess]:
    app = AppProcess("tests.apps.seed_app", "--session-dir", str(session_dir)).start()
    yield app
    app.stop()
