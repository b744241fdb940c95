"""``python -m tornsession stats URL``: how many live sessions a store holds, their bytes, their
ages (by the record's creation time) and how many have an owner (``set_user``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from tornsession import _core
from tornsession._cli_common import (
    FAILED,
    USAGE,
    UsageError,
    check_idle_timeout,
    fail,
    masked,
    open_store,
)
from tornsession._core import SessionStoreError
from tornsession._progress import Progress

#: The age buckets, by the most seconds a session in each may be old.
AGES = [("<1h", 3600), ("<1d", 86400), ("<7d", 7 * 86400), ("<30d", 30 * 86400)]
OLDER = "older"
WORKERS = 8
#: Errors in a row, without one record read, after which the store is taken to be down.
FAILING = 50


@dataclass
class Stats:
    sessions: int = 0
    bytes: int = 0
    owned: int = 0
    anonymous: int = 0
    #: Records that are not tornsession's JSON (an unconverted pickle, say): no age, no owner.
    unreadable: int = 0
    #: Records the store would not give (over the 1 MiB a session may have, say), and why the
    #: first one was not.
    failed: int = 0
    error: str = ""
    users: int = 0
    ages: dict[str, int] = field(default_factory=lambda: dict.fromkeys([*dict(AGES), OLDER], 0))

    def lines(self) -> Iterator[str]:
        average = self.bytes // self.sessions if self.sessions else 0
        yield f"sessions    {self.sessions:,}"
        yield f"bytes       {self.bytes:,} (average {average:,})"
        owners = f"{self.users:,} user{'' if self.users == 1 else 's'}"
        yield f"owned       {self.owned:,} ({owners})"
        yield f"anonymous   {self.anonymous:,}"
        if self.unreadable:
            yield f"unreadable  {self.unreadable:,} (not tornsession JSON records)"
        if self.failed:
            yield f"failed      {self.failed:,} (the store would not give them)"
        yield "created     " + ", ".join(f"{name} {n:,}" for name, n in self.ages.items())


def age_bucket(age: float) -> str:
    for name, limit in AGES:
        if age < limit:
            return name
    return OLDER


def gather(store: Any, idle_timeout: float | None, progress: Progress | None = None) -> Stats:
    """Reads every live record of ``store`` (over a few threads) and counts."""
    ids = list(dict.fromkeys(_core._store_session_ids(store)))  # SCAN may name one twice
    if progress is not None:
        progress.total = len(ids)
    stats = Stats()
    owners: set[str] = set()
    now = time.time()

    def load(session_id: str) -> bytes | SessionStoreError | None:
        try:
            got = _core._store_load_listed(store, session_id, idle_timeout)
        except SessionStoreError as error:
            return error  # one record the store refuses (too large, say) stops nothing
        return None if got is None else got[0]

    try:
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="tornsession-stats") as pool:
            for blob in pool.map(load, ids):
                if progress is not None:
                    progress.advance()
                if blob is None:
                    continue  # ended or expired since it was listed
                if isinstance(blob, SessionStoreError):
                    stats.failed += 1
                    stats.error = stats.error or str(blob)
                    if stats.failed >= FAILING and stats.sessions == 0:
                        raise blob  # the store is down, not one record
                    continue
                stats.sessions += 1
                stats.bytes += len(blob)
                try:
                    record = json.loads(blob)
                    created = record["c"]
                    if not isinstance(created, (int, float)) or isinstance(created, bool):
                        raise TypeError
                    age = now - created
                # Not tornsession's record: not JSON, no "c", one nested too deep to parse, or
                # a creation time no clock holds (a 400-digit int).
                except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
                    stats.unreadable += 1
                    continue
                stats.ages[age_bucket(age)] += 1
                owner = record.get("u")
                if isinstance(owner, str):
                    stats.owned += 1
                    owners.add(owner)
                else:
                    stats.anonymous += 1
    finally:
        if progress is not None:
            progress.close()
    stats.users = len(owners)
    return stats


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = commands.add_parser(
        "stats",
        help="count a store's live sessions, their bytes and ages",
        description="Count the live sessions in the store URL names: their bytes, their ages "
        "(by creation time) and how many have an owner. Reads every record.",
    )
    stats.add_argument("url", metavar="URL", help="the store URL your app uses")
    stats.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="your app's idle_timeout (needed for file:, whose files keep their last use)",
    )
    stats.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    stats.set_defaults(run=stats_main)


def stats_main(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.url, "stats")
        check_idle_timeout(args.idle_timeout, [store], "stats")
    except UsageError as error:
        return fail(error, USAGE)
    progress = None if args.json else Progress("stats", 0, sys.stderr)
    try:
        stats = gather(store, args.idle_timeout, progress)
    except SessionStoreError as error:
        return fail(f"stats: {error}", FAILED)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    if args.json:
        print(json.dumps(asdict(stats)))
    else:
        print(f"store       {masked(args.url)}")
        for line in stats.lines():
            print(line)
    if stats.failed:
        return fail(f"stats: {stats.failed:,} records could not be read: {stats.error}", FAILED)
    return 0
