"""`make soak`'s short run (tests/kill_soak.py): on every store, 20,000 requests through
`SessionMixin` over real HTTP from 2,000 visitors, the store (Redis, memcached) or the app
(memory, file, SQLite) SIGKILLed and restarted every 5,000 requests. No visitor is ever served
another's session, no 2xx-acknowledged increment is lost (Redis with fsync always, SQLite and
file with `durable=True`; memory and memcached lose everything at a restart by design, but
nothing between restarts), no request hangs, every non-2xx answer overlaps a kill window, and
the app's RSS stays within 1.5x of its warm start.

Sizes: KILL_SOAK_SHORT_REQUESTS (20,000), KILL_SOAK_SHORT_SESSIONS (2,000),
KILL_SOAK_SHORT_KILL_EVERY (5,000), KILL_SOAK_SHORT_CLIENTS (16: more of the durable stores'
fsyncs overlap). About 2.5 minutes for the five stores on 2 CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest
from kill_soak import APP_KILLED, STORES, VOLATILE, Client, Config, Report, Run, Visitor, run_store
from support.servers import require_binary

CONFIG = Config(
    requests=int(os.environ.get("KILL_SOAK_SHORT_REQUESTS", "20000")),
    sessions=int(os.environ.get("KILL_SOAK_SHORT_SESSIONS", "2000")),
    kill_every=int(os.environ.get("KILL_SOAK_SHORT_KILL_EVERY", "5000")),
    clients=int(os.environ.get("KILL_SOAK_SHORT_CLIENTS", "16")),
)
MAX_RSS_RATIO = 1.5  # generous: a leak check after warm-up, not a memory budget


@pytest.mark.parametrize("store", STORES)
def test_kill_soak_never_crosses_loses_acknowledged_writes_or_hangs(
    store: str, tmp_path: Path
) -> None:
    if store == "redis":
        require_binary("redis-server")
    if store == "memcached":
        require_binary("memcached")
    report = run_store(store, CONFIG, tmp_path)
    print("\n" + "\n".join(report.lines()))
    assert report.requests == CONFIG.requests
    assert report.kills == (CONFIG.requests - 1) // CONFIG.kill_every
    assert report.crossed == 0
    assert report.lost == 0
    assert report.unexplained == 0
    assert report.hung == 0
    assert report.non2xx_outside == 0, report.outside_examples
    assert report.rss_ratio <= MAX_RSS_RATIO
    if store in VOLATILE:
        assert report.lost_volatile > 0, "no session was reset: the kills were not observed"
    if store in APP_KILLED:
        assert report.non2xx_in_window > 0, "no request failed: the kills were not observed"


def checker(store: str) -> Client:
    """A client of the soak with no connection, to feed answers to its checks."""
    return Client(cast(Run, None), Report(store), [])


def test_kill_soak_checker_counts_crossed_lost_and_unexplained() -> None:
    client = checker("redis")
    mine = Visitor("m1")
    client.check(mine, {"marker": "m1", "count": 1, "fresh": True}, 0, 0)
    client.check(mine, {"marker": "m1", "count": 2, "fresh": False}, 0, 0)
    client.check(mine, {"marker": "m2", "count": 7, "fresh": False}, 0, 0)  # another's
    assert client.counts["crossed"] == 1
    client.check(mine, {"marker": "m1", "count": 1, "fresh": True}, 1, 1)  # 2 acked, gone
    assert client.counts["lost"] == 2
    mine.failed_since = 1  # the failed request's write may have landed
    client.check(mine, {"marker": "m1", "count": 3, "fresh": False}, 1, 1)
    assert client.counts["unexplained"] == 0
    client.check(mine, {"marker": "m1", "count": 5, "fresh": False}, 1, 1)  # one too many
    assert client.counts["unexplained"] == 1
    client.check(mine, {"marker": "m1", "count": 5, "fresh": False}, 1, 1)  # the 6th is lost
    assert client.counts["lost"] == 3


def test_kill_soak_checker_excuses_a_volatile_reset_only_across_a_kill() -> None:
    client = checker("memcached")
    mine = Visitor("m1")
    for count in (1, 2, 3):
        client.check(mine, {"marker": "m1", "count": count, "fresh": count == 1}, 0, 0)
    client.check(mine, {"marker": "m1", "count": 1, "fresh": True}, 0, 1)  # a kill ended it
    assert client.counts["lost_volatile"] == 3 and client.counts["lost"] == 0
    client.check(mine, {"marker": "m1", "count": 2, "fresh": False}, 1, 1)
    client.check(mine, {"marker": "m1", "count": 1, "fresh": True}, 1, 1)  # no kill: a loss
    assert client.counts["lost"] == 2
