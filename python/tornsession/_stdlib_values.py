"""Standard-library values in the original module's pickles, read without running anything
(for :mod:`tornsession.migrate`): ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``,
``set`` and ``frozenset``, as the inert unpickler (``_unpickle._InertUnpickler``) leaves them:
a stand-in named after the class, holding the arguments its pickle passed. Each is rebuilt here
from those arguments alone (a datetime's packed bytes are decoded by hand), and given its
documented JSON form:

=============================  =================================================
value                          JSON
=============================  =================================================
``datetime``                   ISO 8601 text, ``"2019-05-01T12:30:00"`` (with
                               ``+00:00`` when it had UTC or a fixed offset)
``date``                       ``"2019-05-01"``
``time``                       ``"12:30:00.250000"``
``timedelta``                  seconds, a number (``5400`` or ``1.5``; exact to the
                               microsecond up to 2**53 µs, about 285 years)
``Decimal``                    its text, ``"19.90"`` (exact)
``set``, ``frozenset``         a list (sorted when its items can be)
``tuple``                      a list (as always)
=============================  =================================================
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from typing import Any

from tornsession._unpickle import _SETS, _Inert

#: The classes whose pickles this module reads.
STDLIB_VALUES = frozenset(
    {
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "decimal.Decimal",
        "cdecimal.Decimal",
        "_pydecimal.Decimal",
    }
    | _SETS
)

_UTC_ZONES = frozenset({"pytz._UTC", "pytz.utc", "dateutil.tz.tz.tzutc", "dateutil.tz.tzutc"})


#: The longest Decimal text read: far beyond any price or quantity, and short enough that a
#: planted million-digit one referenced many times cannot make the migrator run out of memory.
MAX_DECIMAL_TEXT = 1000

# How many arguments each class's own pickle passes (the packed bytes, and a time zone).
_ARGUMENTS = {
    "datetime.datetime": (1, 2),
    "datetime.date": (1, 1),
    "datetime.time": (1, 2),
    "datetime.timedelta": (3, 3),
    "decimal.Decimal": (1, 1),
    "cdecimal.Decimal": (1, 1),
    "_pydecimal.Decimal": (1, 1),
}


class NotAValue(ValueError):
    """The arguments are not what the class's own pickle passes (a hand-made file)."""


def _as_its_own_pickle_makes_it(value: _Inert, fewest: int, most: int) -> None:
    """Refuses what the class's own pickle never writes: other argument counts, keyword
    arguments, a state (``BUILD``). Anything there would otherwise be dropped unread, and a
    planted call with it."""
    if value.kwargs or value.has_state:
        raise NotAValue("keyword arguments or a state, which its own pickle never writes")
    count = len(value.args)
    if not fewest <= count <= most:
        plural = "" if count == 1 else "s"
        raise NotAValue(f"{count} argument{plural}, which its own pickle never writes")


def _qualname(value: Any) -> str:
    return type(value).qualname if isinstance(value, _Inert) else ""


def _packed(arg: Any, what: str) -> bytes:
    """A datetime's packed state: bytes (Python 2, and 3 at protocol 3+), or the
    ``_codecs.encode(text, 'latin1')`` call Python 3 writes at protocols 0-2."""
    if isinstance(arg, bytes):
        return arg
    if _qualname(arg) == "_codecs.encode" and len(arg.args) == 2 and not arg.kwargs:
        text, codec = arg.args
        if isinstance(text, str) and codec in ("latin1", "latin-1"):
            return text.encode("latin-1")
    raise NotAValue(f"not the packed bytes of a {what}")


def _zone(args: tuple[Any, ...], at: int) -> datetime.tzinfo | None:
    """The time zone argument at ``at``: none, UTC (datetime's, pytz's, dateutil's) or a fixed
    offset (``datetime.timezone(timedelta)``); any other zone is refused (its rules are code)."""
    if len(args) <= at or args[at] is None:
        return None
    zone = args[at]
    name = _qualname(zone)
    if name in _UTC_ZONES and not zone.args and not zone.kwargs and not zone.has_state:
        return datetime.timezone.utc
    if name == "datetime.timezone":
        # timezone(offset) or timezone(offset, name): the offset is what the JSON keeps.
        _as_its_own_pickle_makes_it(zone, 1, 2)
        if len(zone.args) == 2 and not isinstance(zone.args[1], (str, bytes)):
            raise NotAValue("a time zone whose name is not text")
        return datetime.timezone(_timedelta(zone.args[0]))
    raise NotAValue(
        f"a time zone of {name or type(zone).__name__}, whose rules are code "
        "(--drop-key KEY leaves its item out)"
    )


def _timedelta(value: Any) -> datetime.timedelta:
    if _qualname(value) != "datetime.timedelta":
        raise NotAValue("not a timedelta")
    _as_its_own_pickle_makes_it(value, 3, 3)
    if not all(isinstance(part, int) and not isinstance(part, bool) for part in value.args):
        raise NotAValue("a timedelta of something other than whole numbers")
    return datetime.timedelta(*value.args)


def _datetime(value: _Inert) -> str:
    packed = _packed(value.args[0], "datetime") if value.args else b""
    if len(packed) != 10:
        raise NotAValue("not the 10 packed bytes of a datetime")
    # The layout of datetime's own pickle (Modules/_datetimemodule.c): year (2 bytes), month
    # (its top bit: fold), day, hour, minute, second, microsecond (3 bytes).
    fold, month = packed[2] >> 7, packed[2] & 0x7F
    micro = (packed[7] << 16) | (packed[8] << 8) | packed[9]
    day, hour, minute, second = packed[3:7]
    made = datetime.datetime(
        packed[0] * 256 + packed[1],
        month,
        day,
        hour,
        minute,
        second,
        micro,
        tzinfo=_zone(value.args, 1),
        fold=fold,
    )
    return made.isoformat()


def _date(value: _Inert) -> str:
    packed = _packed(value.args[0], "date") if value.args else b""
    if len(packed) != 4:
        raise NotAValue("not the 4 packed bytes of a date")
    return datetime.date(packed[0] * 256 + packed[1], packed[2], packed[3]).isoformat()


def _time(value: _Inert) -> str:
    packed = _packed(value.args[0], "time") if value.args else b""
    if len(packed) != 6:
        raise NotAValue("not the 6 packed bytes of a time")
    fold, hour = packed[0] >> 7, packed[0] & 0x7F
    micro = (packed[3] << 16) | (packed[4] << 8) | packed[5]
    made = datetime.time(hour, packed[1], packed[2], micro, tzinfo=_zone(value.args, 1), fold=fold)
    return made.isoformat()


def _seconds(value: _Inert) -> float | int:
    delta = _timedelta(value)
    if delta.microseconds:
        return delta.total_seconds()
    return delta.days * 86_400 + delta.seconds


def _decimal(value: _Inert) -> str:
    if len(value.args) != 1:
        raise NotAValue("a Decimal of other than one argument")
    text = value.args[0]
    if not isinstance(text, (str, bytes)):
        raise NotAValue("a Decimal of something other than its text")
    if len(text) > MAX_DECIMAL_TEXT:
        raise NotAValue(f"a Decimal of {len(text)} characters, over {MAX_DECIMAL_TEXT}")
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    # Decimal's own parser checks it (no code from the file runs: the text is data).
    try:
        return str(decimal.Decimal(text))
    except decimal.InvalidOperation:
        raise NotAValue(f"a Decimal of {text!r}, which is not a number") from None


_READERS: dict[str, Callable[[_Inert], Any]] = {
    "datetime.datetime": _datetime,
    "datetime.date": _date,
    "datetime.time": _time,
    "datetime.timedelta": _seconds,
    "decimal.Decimal": _decimal,
    "cdecimal.Decimal": _decimal,
    "_pydecimal.Decimal": _decimal,
}


def set_items(value: _Inert) -> list[Any]:
    """The items of a pickled ``set([...])``/``frozenset([...])`` (still to convert)."""
    _as_its_own_pickle_makes_it(value, 0, 1)
    items = value.args[0] if value.args else []
    if not isinstance(items, list):
        raise NotAValue("a set of something other than a list of items")
    return items


def stdlib_value(value: _Inert) -> Any:
    """The JSON form of a datetime, date, time, timedelta or Decimal (see the table above);
    :class:`NotAValue` for arguments its own pickle never passes."""
    qualname = type(value).qualname
    _as_its_own_pickle_makes_it(value, *_ARGUMENTS[qualname])
    try:
        return _READERS[qualname](value)
    except (TypeError, ValueError, OverflowError) as error:
        if isinstance(error, NotAValue):
            raise
        raise NotAValue(f"out of range ({error})") from None
