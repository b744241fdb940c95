"""Lost updates: one session, 8 concurrent keep-alive connections, each incrementing a counter.

The original module loads the session in the handler's __init__, which Tornado runs before other
requests' handlers finish, so increments are lost. tornsession loads at first use (at the latest
when the handler starts), so a sync handler in one process loses none.
"""

from __future__ import annotations

from pathlib import Path

from support.browser import Browser, hammer_one_session
from support.processes import AppProcess

CONNECTIONS = 8
REQUESTS_PER_CONNECTION = 150


def hammer_the_counter(port: int) -> tuple[int, int]:
    """Returns (requests that incremented, final counter)."""
    cookies = hammer_one_session(port, "/", CONNECTIONS, REQUESTS_PER_CONNECTION)
    with Browser(port) as last:
        last.cookies = cookies
        final = int(last.get("/peek")[1])
    return 1 + CONNECTIONS * REQUESTS_PER_CONNECTION, final


def test_tornsession_loses_no_increments_under_concurrent_keepalive_requests(
    seed_app: AppProcess,
) -> None:
    requests, final = hammer_the_counter(seed_app.port)
    print(f"tornsession: {requests} requests, final counter {final}")
    assert final == requests


def test_the_original_module_loses_increments_in_the_same_test(session_dir: Path) -> None:
    # Proves the test above can fail: the same app on the original module's port loses updates.
    app = AppProcess(
        "tests.apps.seed_app",
        "--session-dir",
        str(session_dir),
        "--module",
        "bench.reference_session",
    ).start()
    try:
        requests, final = hammer_the_counter(app.port)
    finally:
        app.stop()
    lost = requests - final
    print(f"original module: {requests} requests, final counter {final}, lost {lost}")
    assert lost > 0
