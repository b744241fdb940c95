"""`tornsession.migrate` on the standard library's values (issue 22): datetimes, dates, times,
timedeltas, Decimals, sets and tuples in real Python 2 (and Python 3) pickles are converted to
their documented JSON form without running anything; `--drop-key` drops an item whatever it
holds; a datetime whose time zone is code is left with its key named."""

from __future__ import annotations

import datetime
import decimal
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import tornsession
from test_migrate import SECRET, original_digest, original_id, plant, run_cli
from tornsession import migrate
from tornsession._unpickle import _load_inert

# The documented JSON form of what tests/fixtures/py2_sessions/stdlib_values*.pickle hold (made
# by CPython 2.7.18's cPickle, protocols 0 and 2, from datetime(2019, 5, 1, 12, 30, 15, 250000),
# date(1990, 7, 14), time(6, 45), timedelta(hours=1, minutes=30), timedelta(seconds=1.5),
# Decimal('19.90'), set(['b', 'a', 'c']), frozenset([3, 1, 2]) and (1, 'x')).
STDLIB_JSON = {
    "user": {"name": "ann", "created_at": "2019-05-01T12:30:15.250000"},
    "last_login": "2020-01-02T03:04:05",
    "birthday": "1990-07-14",
    "alarm": "06:45:00",
    "ttl": 5400,
    "slice": 1.5,
    "price": "19.90",
    "tags": ["a", "b", "c"],
    "frozen": [1, 2, 3],
    "pair": [1, "x"],
}


def opened(session_dir: Path, path: Path) -> dict[str, Any]:
    """What the visitor's original cookie opens after the migration."""
    session_id = path.name.removeprefix("SESSION")
    manager = tornsession.SessionManager(SECRET, session_dir)
    return dict(manager.get(session_id, original_digest(session_id)))


@pytest.mark.parametrize("fixture", ["stdlib_values.pickle", "stdlib_values_protocol2.pickle"])
def test_a_real_python_2_pickle_of_datetimes_converts_with_no_option(
    session_dir: Path, fixture: str
) -> None:
    path = plant(session_dir, fixture)
    done = run_cli(str(session_dir))
    assert done.returncode == 0, done.stdout
    assert "converted 1, already current 0, left 0" in done.stdout
    assert opened(session_dir, path) == STDLIB_JSON


def test_a_weibopy_user_with_a_created_at_becomes_a_dict_with_iso_times(session_dir: Path) -> None:
    """The case of the issue: weibopy's User (an app object) holding a datetime, and a
    last_login datetime beside it (a CPython 2.7 pickle of a weibopy.models.User)."""
    path = plant(session_dir, "weibopy_user.pickle")
    plain = run_cli(str(session_dir))
    assert plain.returncode == 1
    assert "key 'me': holds an object of class weibopy.models.User" in plain.stdout
    assert "datetime" not in plain.stdout, "the datetimes are not what is left"
    assert run_cli("--objects-as-dicts", str(session_dir)).returncode == 0
    assert opened(session_dir, path) == {
        "me": {"screen_name": "ann", "id": 1404376560, "created_at": "2011-08-15T09:30:00"},
        "last_login": "2013-02-03T04:05:06",
        "oauth_token": "abc",
    }


def test_drop_key_on_the_datetime_itself_drops_it(session_dir: Path) -> None:
    path = plant(session_dir, "weibopy_user.pickle")
    assert run_cli("--drop-key", "me", "--drop-key", "last_login", str(session_dir)).returncode == 0
    assert opened(session_dir, path) == {"oauth_token": "abc"}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_python_3_pickles_at_every_protocol_convert_with_their_utc_or_offset(
    protocol: int,
) -> None:
    utc = datetime.timezone.utc
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    value = {
        "when": datetime.datetime(2021, 3, 4, 5, 6, 7, 8, tzinfo=utc),
        "there": datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=plus_two),
        "at": datetime.time(1, 2, 3, 4),
        "amount": decimal.Decimal("-0.000100"),
        "seen": {"y", "x"},
        "gap": datetime.timedelta(days=-1, seconds=5),
    }
    data, notes = migrate.convert_data(_load_inert(pickle.dumps(value, protocol)))
    assert data == {
        "when": "2021-03-04T05:06:07.000008+00:00",
        "there": "2021-03-04T05:06:07+02:00",
        "at": "01:02:03.000004",
        "amount": "-0.000100",
        "seen": ["x", "y"],
        "gap": -86395,
    }
    assert notes == []


PYTZ_PARIS = (
    b"(dp0\nS'when'\ncdatetime\ndatetime\n(S'\\x07\\xe3\\x05\\x01\\x0c\\x1e\\x00\\x00\\x00\\x00'\n"
    b"cpytz\n_p\n(S'Europe/Paris'\nI7200\nI3600\nS'CEST'\ntRtRsS'name'\nS'ann'\ns."
)
PYTZ_UTC = (
    b"(dp0\nS'when'\ncdatetime\ndatetime\n(S'\\x07\\xe3\\x05\\x01\\x0c\\x1e\\x00\\x00\\x00\\x00'\n"
    b"cpytz\n_UTC\n(tRtRs."
)


def test_a_named_time_zone_is_left_with_its_key_unless_dropped(session_dir: Path) -> None:
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(PYTZ_PARIS)
    left = run_cli(str(session_dir))
    assert left.returncode == 1
    assert (
        "key 'when': holds a datetime.datetime that cannot be read: a time zone of pytz._p"
        in left.stdout
    )
    assert path.read_bytes() == PYTZ_PARIS
    assert run_cli("--drop-key", "when", str(session_dir)).returncode == 0
    assert opened(session_dir, path) == {"name": "ann"}


def test_pytz_utc_is_utc(session_dir: Path) -> None:
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(PYTZ_UTC)
    assert run_cli(str(session_dir)).returncode == 0
    assert opened(session_dir, path) == {"when": "2019-05-01T12:30:00+00:00"}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"cdatetime\ndatetime\n(S'\\x07\\xe3\\x05'\ntR", "not the 10 packed bytes of a datetime"),
        (
            b"cdatetime\ndatetime\n(S'\\x07\\xe3\\x0d\\x01\\x00\\x00\\x00\\x00\\x00\\x00'\ntR",
            "out of range (month must be in 1..12)",
        ),
        (b"cdatetime\ndate\n(I2019\nI5\nI1\ntR", "3 arguments, which its own pickle never"),
        (b"cdatetime\ntimedelta\n(S'x'\nI0\nI0\ntR", "a timedelta of something other than whole"),
        (b"cdecimal\nDecimal\n(S'ten'\ntR", "a Decimal of 'ten', which is not a number"),
        (b"c__builtin__\nset\n(S'abc'\ntR", "a set of something other than a list of items"),
    ],
    ids=[
        "short-datetime",
        "month-13",
        "date-from-ints",
        "timedelta-str",
        "decimal-text",
        "set-str",
    ],
)
def test_a_hand_made_value_is_left_naming_its_key_never_a_crash(
    session_dir: Path, value: bytes, says: str
) -> None:
    path = session_dir / f"SESSION{original_id()}"
    blob = b"(dp0\nS'k'\n" + value + b"s."
    path.write_bytes(blob)
    done = run_cli(str(session_dir))
    assert done.returncode == 1, done.stderr
    assert "key 'k': holds a " in done.stdout, done.stdout
    assert f"that cannot be read: {says}" in done.stdout, done.stdout
    assert path.read_bytes() == blob


def test_the_converted_file_is_the_json_tornsession_writes(session_dir: Path) -> None:
    path = plant(session_dir, "stdlib_values.pickle")
    assert run_cli(str(session_dir)).returncode == 0
    record = json.loads(path.read_bytes())
    assert record["d"] == STDLIB_JSON
