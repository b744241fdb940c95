"""Attacker review of the standard-library value conversion in `tornsession.migrate`: hand-made
pickles that try to run code, crash the migrator, blow up its time or memory, smuggle a planted
call through a value that is converted, or come out in a form other than the documented one.
Each test asserts what SHOULD hold. On the first build 10 failed (planted calls in arguments or
state the reader ignored were dropped and the file converted; a million-digit Decimal shared
3,000 times ran out of memory; a set listed one item twice; a key that is a call was shown as
an object address); all fixed, and the long-timedelta case turned into the documented limit."""

from __future__ import annotations

import datetime
import decimal
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_migrate import original_id, run_cli
from tornsession import migrate
from tornsession._unpickle import UnsupportedSession, _load_inert

DATE_2019 = b"cdatetime\ndate\n(S'\\x07\\xe3\\x05\\x01'\ntR"
DT_2019 = b"cdatetime\ndatetime\n(S'\\x07\\xe3\\x05\\x01\\x0c\\x1e\\x00\\x00\\x00\\x00'\n"


def system(marker: Path) -> bytes:
    return f"cos\nsystem\n(S'touch {marker}'\ntR".encode()


def convert(blob: bytes) -> dict[str, Any]:
    return migrate.convert_data(_load_inert(blob))[0]


def left_by_cli(session_dir: Path, blob: bytes) -> str:
    """Plants blob, runs the CLI; asserts the file is left intact, no traceback; the stdout."""
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(blob)
    done = run_cli(str(session_dir))
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert path.read_bytes() == blob
    return done.stdout


# --- nothing runs, and a planted call is never converted away ---------------------------------


@pytest.mark.parametrize(
    "value",
    [
        # datetime whose packed bytes are a call
        "cdatetime\ndatetime\n({call}tR",
        # datetime whose tzinfo is a call
        DT_2019.decode() + "{call}tR",
        # timezone whose offset is a call
        DT_2019.decode() + "cdatetime\ntimezone\n({call}tRtR",
        # _codecs.encode with a call as the text / codec
        "cdatetime\ndate\n(c_codecs\nencode\n({call}S'latin1'\ntRtR",
        "cdatetime\ndate\n(c_codecs\nencode\n(S'abcd'\n{call}tRtR",
        # set holding a call, set of a set holding a call
        "c__builtin__\nset\n((lp1\n{call}atR",
        "c__builtin__\nfrozenset\n((lp1\nc__builtin__\nset\n((lp2\n{call}atRatR",
        # Decimal / timedelta of a call
        "cdecimal\nDecimal\n({call}tR",
        "cdatetime\ntimedelta\n({call}I0\nI0\ntR",
    ],
    ids=[
        "dt-bytes",
        "dt-tz",
        "tz-offset",
        "codecs-text",
        "codecs-codec",
        "set",
        "set-of-set",
        "decimal",
        "timedelta",
    ],
)
def test_a_planted_call_anywhere_in_a_value_never_runs_and_leaves_the_file(
    session_dir: Path, tmp_path: Path, value: str
) -> None:
    marker = tmp_path / "pwned"
    blob = b"(dp0\nS'k'\n" + value.format(call=system(marker).decode()).encode() + b"s."
    out = left_by_cli(session_dir, blob)
    assert "key 'k':" in out
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [
        # date(packed, <call>): a real date never has a second argument
        DATE_2019[:-2] + b"{call}tR",
        # datetime(packed, None, <call>): a real datetime has at most two
        DT_2019 + b"N{call}tR",
        # timezone(offset, <call>): the name is ignored, the call with it
        DT_2019 + b"cdatetime\ntimezone\n(cdatetime\ntimedelta\n(I0\nI3600\nI0\ntR{call}tRtR",
        # BUILD state on a date / set / Decimal: their own pickles never set state
        DATE_2019 + b"{call}b",
        b"c__builtin__\nset\n((lp1\nI1\natR{call}b",
        b"cdecimal\nDecimal\n(S'1.5'\ntR{call}b",
    ],
    ids=[
        "date-extra-arg",
        "datetime-third-arg",
        "timezone-name",
        "date-state",
        "set-state",
        "decimal-state",
    ],
)
def test_a_planted_call_hidden_in_an_ignored_argument_or_state_is_reported_not_dropped(
    session_dir: Path, tmp_path: Path, value: bytes
) -> None:
    """The module promises a pickle that calls anything else is reported and left; these
    hide os.system where the reader never looks, and the file is converted silently."""
    marker = tmp_path / "pwned"
    blob = b"(dp0\nS'k'\n" + value.replace(b"{call}", system(marker)) + b"s."
    out = left_by_cli(session_dir, blob)
    assert "key 'k':" in out
    assert not marker.exists()


# --- no crash, no blow-up: a clean "left" -----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"cdatetime\ntimedelta\n(I999999999999\nI0\nI0\ntR",  # OverflowError
        b"cdatetime\ntimedelta\n(I1\nI2\nI3\nI4\nI5\nI6\nI7\nI8\ntR",  # TypeError
        DT_2019 + b"cdatetime\ntimezone\n(cdatetime\ntimedelta\n(I1\nI0\nI0\ntRtRtR",  # 24h
        b"cdatetime\ndate\n(S'\\x00\\x00\\x01\\x01'\ntR",  # year 0
        b"cdatetime\ntime\n(S'\\x18\\x00\\x00\\x00\\x00\\x00'\ntR",  # hour 24
        b"cdatetime\ntime\n(S'\\x00\\x00\\x00\\xff\\xff\\xff'\ntR",  # microsecond 16M
        b"cdecimal\nDecimal\n(S'1e999999999999999999999'\ntR",
        b"cdatetime\ndate\n(c_codecs\nencode\n(V\\u0100\\u0100\\u0100\\u0100\nS'latin1'\ntRtR",
    ],
    ids=[
        "td-overflow",
        "td-8-args",
        "tz-24h",
        "year-0",
        "hour-24",
        "micro",
        "dec-exp",
        "codecs-nonlatin",
    ],
)
def test_out_of_range_arguments_are_left_cleanly(session_dir: Path, value: bytes) -> None:
    out = left_by_cli(session_dir, b"(dp0\nS'k'\n" + value + b"s.")
    assert "key 'k': holds a " in out and "that cannot be read" in out


def test_a_set_that_holds_itself_is_left_not_a_recursion_error(session_dir: Path) -> None:
    blob = b"(dp0\nS'k'\n(lp1\n0c__builtin__\nset\n(g1\ntRp2\n0g1\ng2\na0g2\ns."
    out = left_by_cli(session_dir, blob)
    assert "key 'k':" in out


def test_sets_nested_far_too_deep_are_left(session_dir: Path) -> None:
    inner = b"I1\n"
    for _ in range(400):
        inner = b"c__builtin__\nfrozenset\n((lp1\n" + inner + b"atR"
    out = left_by_cli(session_dir, b"(dp0\nS'k'\n" + inner + b"s.")
    assert "key 'k': holds values nested deeper than" in out


def test_a_huge_decimal_shared_many_times_is_left_not_out_of_memory(
    session_dir: Path, tmp_path: Path
) -> None:
    """A ~1 MB file: one 1-million-digit Decimal referenced 3000 times (memo gets). Each
    reference is rebuilt (~1 MB of text each, ~5 ms), the value budget counts it as one value:
    3 GB of JSON. A 1 M-reference file would need a terabyte and hours. Expected: refused (a
    size budget) with a clean "left"; run under a 1.5 GB address-space limit."""
    blob = pickle.dumps({"k": [decimal.Decimal("9" * 1_000_000)] * 3000}, 2)
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(blob)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
        from tornsession.migrate import main
        sys.exit(main([{str(session_dir)!r}]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 1 and "key 'k':" in done.stdout
    assert path.read_bytes() == blob


# --- the documented JSON form -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 3, 5])
def test_edges_of_the_range_and_fold_convert_exactly(protocol: int) -> None:
    value = {
        "first": datetime.datetime(1, 1, 1),
        "last": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, fold=1),
        "t": datetime.time(23, 59, 59, 999999, fold=1),
        "d": datetime.date(9999, 12, 31),
        "neg": datetime.timedelta(days=-1, microseconds=1),
        "min": datetime.timedelta.min,
        "utc": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        "neg_off": datetime.datetime(
            2020, 1, 1, tzinfo=datetime.timezone(-datetime.timedelta(hours=5, minutes=30), "X")
        ),
        "dec": decimal.Decimal("-0E-7"),
    }
    assert convert(pickle.dumps(value, protocol)) == {
        "first": "0001-01-01T00:00:00",
        "last": "9999-12-31T23:59:59.999999",
        "t": "23:59:59.999999",
        "d": "9999-12-31",
        "neg": -86399.999999,
        "min": -86399999913600,
        "utc": "2020-01-01T00:00:00+00:00",
        "neg_off": "2020-01-01T00:00:00-05:30",
        "dec": "-0E-7",
    }


def test_a_timedelta_is_exact_to_the_microsecond_for_a_century_and_a_float_beyond() -> None:
    """Seconds "as a number" (JSON numbers are doubles here): exact to the microsecond for
    spans up to 2**53 us (about 285 years), as documented; past that, the nearest double.
    (The review asked for 8.64e12 s and 1 us exactly, which no double holds.)"""
    century = datetime.timedelta(days=36_525, microseconds=1)
    got = convert(pickle.dumps({"k": century}, 2))["k"]
    assert decimal.Decimal(repr(got)) == decimal.Decimal("3155760000.000001")
    huge = datetime.timedelta(days=10**8, microseconds=1)
    assert convert(pickle.dumps({"k": huge}, 2))["k"] == huge.total_seconds()


def test_pytz_and_dateutil_utc_are_utc_and_named_zones_are_left(session_dir: Path) -> None:
    for zone in (b"cpytz\n_UTC\n(tR", b"cdateutil.tz.tz\ntzutc\n(tR", b"cdateutil.tz\ntzutc\n(tR"):
        assert convert(b"(dp0\nS'k'\n" + DT_2019 + zone + b"tRs.") == {
            "k": "2019-05-01T12:30:00+00:00"
        }
    # pytz.UTC with arguments, pytz's fixed offset: not UTC
    for zone in (b"cpytz\n_UTC\n(I1\ntR", b"cpytz\nFixedOffset\n(I60\ntR"):
        with pytest.raises(UnsupportedSession, match=r"key 'k': .*a time zone of pytz"):
            convert(b"(dp0\nS'k'\n" + DT_2019 + zone + b"tRs.")


def test_a_set_of_str_and_unicode_that_decode_alike_has_each_item_once() -> None:
    """Python 2's set(['\\xe9', u'\\xe9']) holds two items (a Latin-1 byte and the character);
    both decode to "é", so the JSON "set" lists "é" twice. Expected: each item once."""
    got = convert(b"(dp0\nS'k'\nc__builtin__\nset\n((lp1\nS'\\xe9'\naV\\u00e9\natRs.")
    assert got["k"] == ["é"]


def test_a_top_level_key_that_is_a_call_is_named_not_a_repr() -> None:
    """The report for a planted call as a session key names an object address."""
    with pytest.raises(UnsupportedSession) as error:
        convert(b"(dp0\ncos\nsystem\n(S'touch x'\ntRI1\ns.")
    assert "object at 0x" not in str(error.value)
    assert "os.system" in str(error.value)
