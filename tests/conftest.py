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
    "support.request_path",
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


# What `make check` leaves out (`-m "not slow"`): soaks, crash and kill runs, the browser, long
# fuzz runs, and tests that run for tens of seconds by design. `make test` runs every one.
SLOW_FILES = {
    "test_browser.py",
    "test_crash_consistency.py",
    "test_kill_soak_short.py",
    "test_outage_soak.py",
    "test_soak.py",
}
SLOW_TESTS = {
    "test_the_turn_table_is_empty_after_100000_sessions_and_memory_is_back",
    "test_the_index_stays_bounded_after_10000_logins_with_expiry",
    "test_saved_json_values_load_back_equal",
    "test_saved_values_including_any_float_load_back_with_the_same_shape",
    "test_genuine_cookies_among_arbitrary_others_keep_the_session",
    "test_a_long_poll_held_for_30_s_never_blocks_its_visitors_posts",
    "test_every_python_example_in_the_docs_runs",
    "test_a_users_suite_gets_a_client_for_its_app_fixture",
    "test_a_users_suite_gets_the_fixtures_without_any_conftest",
    "test_the_original_module_loses_increments_in_the_same_test",
    "test_genuine_values_with_junk_appended_never_disagree",
    "test_shared_references_that_would_explode_in_json_are_refused",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
