"""``python -m tornsession copy --from URL --to URL``: moves the live sessions of one store to
another (File, SQLite, Redis, Redis Cluster, Sentinel, memcached) keeping their ids, records,
time left and owners' indexes, so no visitor is logged out by a change of store.

Run it while the app still serves from the old store, switch the app to the new one, and run it
again: the second run copies what changed since, ends in the target what was ended in the
source, and never overwrites what the app wrote in the target nor brings back what it ended
there (``_copy_plan.decide``). An interrupted run (Ctrl-C, kill) leaves its state behind
(``_copy_state``): running the same command again finishes the job. Every record it says it
copied is read back from the target and compared at the end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tornsession import _core
from tornsession._cli_common import (
    FAILED,
    USAGE,
    UsageError,
    check_idle_timeout,
    fail,
    masked,
    missing_path,
    open_store,
)
from tornsession._copy_plan import Action, Record, decide, digest
from tornsession._copy_state import CopyState, default_path
from tornsession._core import MemoryStore, SessionStoreError
from tornsession._progress import Progress

#: Threads doing the per-session work (the store calls release the GIL while they wait).
WORKERS = 8
#: Sessions handed to the threads at a time (bounds what is held in memory).
CHUNK = 2048
#: How many times one session is decided again after the app wrote the target meanwhile.
ATTEMPTS = 4
#: Failures printed one by one; beyond, only counted.
SHOWN_FAILURES = 10
#: Failures in a row, without one success, after which the store is taken to be down.
GIVE_UP_AFTER = 200
#: The summary's counts, in order.
COUNTS = [
    "copied",
    "extended",
    "unchanged",
    "kept",
    "skipped-ended",
    "deleted",
    "gone",
    "failed",
]


@dataclass(frozen=True)
class Listed:
    """A record as a store holds it: its bytes and the seconds it has left (None: no limit)."""

    blob: bytes
    remaining: float | None


@dataclass(frozen=True)
class Outcome:
    """What one session's work came to; ``action`` None when it failed (``error`` says why)."""

    session_id: str
    action: Action | None
    written: str | None = None
    remaining: float | None = None
    error: str | None = None


@dataclass
class CopyReport:
    listed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    verified: int = 0
    mismatched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.mismatched and not self.interrupted

    def summary(self, dry_run: bool) -> str:
        counts = ", ".join(f"{name} {self.counts[name]:,}" for name in COUNTS)
        if dry_run:
            counts = counts.replace("copied", "would copy").replace("deleted", "would delete")
            return f"dry run, nothing written: listed {self.listed:,}, {counts}"
        check = f"verified {self.verified:,}"
        if self.mismatched:
            check += f", mismatched {len(self.mismatched):,}"
        return f"listed {self.listed:,}, {counts}; {check}; {self.seconds:.1f} s"


class Copier:
    """One run of a copy: the per-session work (on worker threads) and the bookkeeping (on the
    calling thread)."""

    def __init__(
        self,
        source: Any,
        target: Any,
        state: CopyState,
        *,
        idle_timeout: float | None = None,
        dry_run: bool = False,
        workers: int = WORKERS,
    ) -> None:
        self.source = source
        self.target = target
        self.state = state
        self.idle_timeout = idle_timeout
        self.dry_run = dry_run
        self.workers = workers
        #: Every record written in this run: its digest and when it expires (monotonic).
        self.written: dict[str, tuple[str, float | None]] = {}
        #: Called on the calling thread after each session's outcome is recorded (tests).
        self.after_each: Callable[[Outcome], None] | None = None

    def _load(self, store: Any, session_id: str) -> Listed | None:
        got = _core._store_load_listed(store, session_id, self.idle_timeout)
        return None if got is None else Listed(got[0], got[1])

    def one(self, session_id: str, remembered: str | None, expires: float | None = None) -> Outcome:
        """Decides and does the work for one session (on a worker thread). ``expires``: when
        the record last written would expire untouched (Unix seconds), if it would."""
        try:
            for _ in range(ATTEMPTS):
                source = self._load(self.source, session_id)
                target = self._load(self.target, session_id)
                action = decide(
                    None if source is None else Record.of(source.blob, source.remaining),
                    None if target is None else Record.of(target.blob, target.remaining),
                    remembered,
                    None if expires is None else expires - time.time(),
                )
                if self.dry_run:
                    return Outcome(session_id, action)
                if action.writes:
                    assert source is not None  # decide writes only what the source holds
                    # Only over the record just read: a write of the app's since wins.
                    expected = None if target is None else target.blob
                    if _core._store_copy_in(
                        self.target,
                        session_id,
                        source.blob,
                        source.remaining,
                        expected,
                        self.idle_timeout,
                    ):
                        return Outcome(session_id, action, digest(source.blob), source.remaining)
                    continue  # the app wrote the target meanwhile: look again
                if action is Action.DELETE:
                    assert target is not None  # decide deletes only what the target holds
                    # Only the record read: a save of the app's that landed since is kept.
                    if not _core._store_delete_listed(self.target, session_id, target.blob):
                        continue  # the app wrote it meanwhile: look again
                if action in (Action.REMEMBER, Action.KEEP_TARGET) and target is not None:
                    # The target's record, remembered as if copied: the app ending it there
                    # later is then an end, never a session to copy again.
                    return Outcome(session_id, action, digest(target.blob), target.remaining)
                return Outcome(session_id, action)
        except SessionStoreError as error:
            return Outcome(session_id, None, error=masked(str(error)))
        return Outcome(
            session_id,
            None,
            error=f"the target's record changed {ATTEMPTS} times as it was copied (the app "
            "writing it): run copy again",
        )

    def _record(self, outcome: Outcome, report: CopyReport) -> None:
        action = outcome.action
        if action is None:
            report.counts["failed"] += 1
            report.failures.append((outcome.session_id, outcome.error or "failed"))
            return
        report.counts[action.counted_as] += 1
        if self.dry_run:
            return
        if outcome.written is not None:
            # Journalled only now that the write succeeded: a crash before only means the id
            # is looked at again.
            expires = None if outcome.remaining is None else time.time() + outcome.remaining
            known = self.state.expires.get(outcome.session_id)
            moved = (expires is None) != (known is None) or (
                expires is not None and known is not None and abs(expires - known) > 2
            )
            if outcome.written != self.state.copied.get(outcome.session_id) or moved:
                self.state.remember(outcome.session_id, outcome.written, expires)
            if action.writes:
                expires = None
                if outcome.remaining is not None:
                    expires = time.monotonic() + outcome.remaining
                self.written[outcome.session_id] = (outcome.written, expires)
        elif action in (Action.DELETE, Action.KEEP_USED, Action.FORGET):
            self.state.forget(outcome.session_id)

    def run(self, listed: list[str], progress: Progress | None = None) -> CopyReport:
        """Copies the ``listed`` source ids and looks at every id the state holds that the
        source no longer lists (ended there since)."""
        started = time.monotonic()
        # A listing may name an id twice (Redis SCAN does, as keys move between its buckets).
        listed = list(dict.fromkeys(listed))
        report = CopyReport(listed=len(listed))
        listed_set = set(listed)
        work = listed + [i for i in self.state.copied if i not in listed_set]
        if progress is not None:
            progress.total = len(work)
        failing = 0
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tornsession-copy")
        try:
            for start in range(0, len(work), CHUNK):
                futures = [
                    pool.submit(
                        self.one,
                        session_id,
                        self.state.copied.get(session_id),
                        self.state.expires.get(session_id),
                    )
                    for session_id in work[start : start + CHUNK]
                ]
                for future in as_completed(futures):
                    outcome = future.result()
                    self._record(outcome, report)
                    failing = failing + 1 if outcome.action is None else 0
                    if progress is not None:
                        progress.advance()
                    if self.after_each is not None:
                        self.after_each(outcome)
                if failing >= GIVE_UP_AFTER:
                    break
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            # Work already handed out finishes (its writes are whole), the rest is dropped.
            pool.shutdown(wait=True, cancel_futures=True)
            self.state.close()
            if progress is not None:
                progress.close()
        if not report.interrupted:
            self.state.compact()
            report.mismatched = self.verify()
            report.verified = len(self.written) - len(report.mismatched)
        report.seconds = time.monotonic() - started
        return report

    def verify(self) -> list[str]:
        """The ids whose record in the target is not the one this run wrote: read back one by
        one (a record that expired since counts as verified)."""

        def check(item: tuple[str, tuple[str, float | None]]) -> str | None:
            session_id, (written, expires) = item
            try:
                now = self._load(self.target, session_id)
            except SessionStoreError:
                return session_id
            if now is None:
                gone = expires is not None and time.monotonic() >= expires - 2
                return None if gone else session_id
            return None if digest(now.blob) == written else session_id

        with ThreadPoolExecutor(self.workers, thread_name_prefix="tornsession-verify") as pool:
            return [i for i in pool.map(check, self.written.items()) if i is not None]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    copy = commands.add_parser(
        "copy",
        help="copy live sessions from one store to another",
        description="Copy the live sessions of the store --from names to the one --to names, "
        "keeping ids, data, time left and the user index, so nobody is logged out. Run it "
        "while the app serves from --from, switch the app to --to, and run it again to copy "
        "what changed. Interrupted, it finishes when run again. Exit status 1 when a session "
        "failed or did not read back as written.",
    )
    copy.add_argument("--from", dest="from_url", required=True, metavar="URL")
    copy.add_argument("--to", dest="to_url", required=True, metavar="URL")
    copy.add_argument(
        "--dry-run", action="store_true", help="decide and report, write nothing (no state)"
    )
    copy.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="your app's idle_timeout: needed when either store is file:, whose files keep "
        "their last use, not an expiry",
    )
    copy.add_argument(
        "--state",
        type=Path,
        metavar="PATH",
        help="where the copy remembers what it wrote (default: ./.tornsession-copy-<hash of "
        "the two URLs>.json; no password is written in it)",
    )
    copy.add_argument("--workers", type=int, default=WORKERS, help=argparse.SUPPRESS)
    copy.set_defaults(run=copy_main)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """A kill (SIGTERM) stops the run as Ctrl-C does: the work in hand finishes, the state is
    written."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def copy_main(args: argparse.Namespace) -> int:
    try:
        if args.from_url.strip() == args.to_url.strip():
            raise UsageError("copy: --from and --to name the same store")
        if args.workers < 1:
            raise UsageError("copy: --workers must be 1 or more")
        source = open_store(args.from_url, "copy --from")
        if args.dry_run and missing_path(args.to_url) is not None:
            # Opening it would make it: a dry run writes nothing, so an empty stand-in.
            target = MemoryStore()
        else:
            target = open_store(args.to_url, "copy --to", existing=False)
        check_idle_timeout(args.idle_timeout, [source, target], "copy")
        path = args.state or default_path(args.from_url, args.to_url)
        state = CopyState(path, args.from_url, args.to_url, writable=not args.dry_run)
    except UsageError as error:
        return fail(error, USAGE)
    copier = Copier(
        source,
        target,
        state,
        idle_timeout=args.idle_timeout,
        dry_run=args.dry_run,
        workers=args.workers,
    )
    with _terminate_as_interrupt():
        try:
            listed = _core._store_session_ids(source)
        except SessionStoreError as error:
            return fail(f"copy: cannot list the sessions of --from: {error}", FAILED)
        except KeyboardInterrupt:
            return fail("interrupted before anything was copied", 130)
        progress = Progress("copy", len(listed), sys.stderr)
        try:
            report = copier.run(listed, progress)
        except KeyboardInterrupt:
            # Interrupted again while stopping, or while reading the copies back.
            return fail("interrupted: run the same command again to finish", 130)
    for session_id, reason in report.failures[:SHOWN_FAILURES]:
        print(f"failed {session_id}: {reason}", file=sys.stderr)
    if len(report.failures) > SHOWN_FAILURES:
        print(f"... and {len(report.failures) - SHOWN_FAILURES} more failed", file=sys.stderr)
    for session_id in report.mismatched[:SHOWN_FAILURES]:
        print(f"mismatched {session_id}: the target holds another record", file=sys.stderr)
    if report.interrupted:
        done = sum(report.counts.values())
        return fail(
            f"interrupted after {done:,} sessions: run the same command again to finish "
            f"(the state is in {state.path})",
            130,
        )
    print(report.summary(args.dry_run))
    return 0 if report.ok else FAILED
