"""What ``python -m tornsession copy`` does with one session: a pure function of the source's
record, the target's and the digest the state remembers for the id (the record it last wrote
there), so that a copy run again (after an interruption, or after the app switched stores)
finishes the job without overwriting what the app wrote in the target since, and without
bringing back a session the app ended there."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

#: How much longer the source's record must have left than the target's same record for the
#: copy to move the target's expiry on (a second copy after the app read sessions).
EXPIRY_SLACK = 2.0


def digest(blob: bytes) -> str:
    """What the state remembers of a record: 128 bits of its SHA-256, in hex."""
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class Record:
    """A record as the decision needs it: its digest, the last time its own fields say it was
    written (the later of ``"c"``, created, and ``"s"``, last seen to the minute; 0 for a
    record that is not tornsession's JSON) and the seconds it has left in its store (None: no
    limit)."""

    digest: str
    written: int
    remaining: float | None = None

    @classmethod
    def of(cls, blob: bytes, remaining: float | None = None) -> Record:
        return cls(digest(blob), written_at(blob), remaining)

    def outlives(self, other: Record) -> bool:
        """Whether this record has clearly longer left than ``other``: a read of an idle
        session moves its expiry on without changing the record."""
        if self.remaining is None:
            return other.remaining is not None
        return other.remaining is not None and self.remaining > other.remaining + EXPIRY_SLACK


def written_at(blob: bytes) -> int:
    """The later of the record's creation time and last-seen stamp, 0 when it names neither
    (or is no JSON this can read: a planted record nested too deep is no time either)."""
    try:
        fields = json.loads(blob)
    except (ValueError, RecursionError):
        return 0
    if not isinstance(fields, dict):
        return 0
    times = [fields.get("c"), fields.get("s")]
    # bool is an int in Python, never a time here.
    return max([t for t in times if isinstance(t, int) and not isinstance(t, bool)], default=0)


class Action(enum.Enum):
    """What to do; ``counted_as`` is how the summary counts it. (Distinct values: two members
    of one value would be one member, and a target's newer record kept would be forgotten as a
    session ended.)"""

    #: Write the source's record where the target has none (never over a new session there).
    COPY_NEW = enum.auto()
    #: Write the source's record over the target's, only if the target's still is the one read.
    COPY_OVER = enum.auto()
    #: The target already holds the same bytes: remember them as copied, write nothing.
    REMEMBER = enum.auto()
    #: The same bytes on both sides, but the source's were read since and live longer: the
    #: target's record is written again (only if unchanged) with the source's time left.
    EXTEND = enum.auto()
    #: Neither changed since the last copy (or the source did not and the target did).
    UNCHANGED = enum.auto()
    #: The target's record is as new as the source's or newer: the app's write there wins.
    KEEP_TARGET = enum.auto()
    #: Copied once, ended or expired in the target since: never brought back.
    SKIP_ENDED = enum.auto()
    #: Ended in the source since the last copy and untouched in the target: end it there too.
    DELETE = enum.auto()
    #: Ended in the source since the last copy but used in the target since: the app's now.
    KEEP_USED = enum.auto()
    #: Ended in both: nothing to do but forget it.
    FORGET = enum.auto()

    @property
    def writes(self) -> bool:
        return self in (Action.COPY_NEW, Action.COPY_OVER, Action.EXTEND)

    @property
    def counted_as(self) -> str:
        return _COUNTED_AS[self]


_COUNTED_AS = {
    Action.COPY_NEW: "copied",
    Action.COPY_OVER: "copied",
    Action.REMEMBER: "unchanged",
    Action.EXTEND: "extended",
    Action.UNCHANGED: "unchanged",
    Action.KEEP_TARGET: "kept",
    Action.SKIP_ENDED: "skipped-ended",
    Action.DELETE: "deleted",
    Action.KEEP_USED: "kept",
    Action.FORGET: "gone",
}


def decide(
    source: Record | None,
    target: Record | None,
    remembered: str | None,
    remembered_left: float | None = None,
) -> Action:
    """What to do with one session id. ``source`` is None when the source no longer holds it
    (ended or expired since it was listed or last copied), ``target`` None when the target
    holds none, ``remembered`` the digest the state keeps for the id (None: never copied) and
    ``remembered_left`` the seconds the record it wrote would have left now, untouched (None:
    no limit, or not known)."""
    if source is None:
        if remembered is None:
            return Action.FORGET  # ended in the source before it was ever copied
        if target is None:
            return Action.FORGET
        if target.digest != remembered or _read_since(target, remembered_left):
            return Action.KEEP_USED
        return Action.DELETE
    if remembered is None:
        if target is None:
            return Action.COPY_NEW
        if target.digest == source.digest:
            return _same(source, target, remembered)
        return _newer_wins(source, target)
    if target is None:
        return Action.SKIP_ENDED
    if source.digest == remembered:
        # The target's own changes since win; an untouched one follows the source's expiry.
        return (
            _same(source, target, remembered) if target.digest == remembered else Action.UNCHANGED
        )
    if target.digest == remembered:
        return Action.COPY_OVER
    if target.digest == source.digest:
        return _same(source, target, remembered)
    return _newer_wins(source, target)


def _read_since(target: Record, remembered_left: float | None) -> bool:
    """Whether the target's record, the same bytes as copied, lives longer than it would
    untouched: the app read it there since (its idle expiry moved on). Gone from the source
    then means expired there, unused, not ended: the visitor is on the new store."""
    if remembered_left is None:
        return False
    return target.remaining is None or target.remaining > remembered_left + EXPIRY_SLACK


def _same(source: Record, target: Record, remembered: str | None) -> Action:
    """The same record on both sides: the target's expiry moves on if the source's did."""
    if source.outlives(target):
        return Action.EXTEND
    return Action.UNCHANGED if remembered == source.digest else Action.REMEMBER


def _newer_wins(source: Record, target: Record) -> Action:
    # A tie (the same minute, or no time at all) keeps the target: the app may be serving it.
    return Action.COPY_OVER if source.written > target.written else Action.KEEP_TARGET
