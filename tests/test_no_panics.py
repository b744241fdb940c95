"""Spec: no Rust panic crosses into Python, whatever the arguments.

Every constructor, option and method of the public API is driven with extreme values (huge and
tiny floats, infinities, NaN, zero, negatives, integers past 64 bits, huge strings). Only
``Exception`` subclasses may come out: ``pyo3_runtime.PanicException`` is a ``BaseException``
that ``except Exception`` does not catch. A number out of an option's range is a ``ValueError``
whose message names the option.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import tornado.httputil
import tornado.web
import tornsession
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.servers import RedisServer, ServerProcess
from tornsession import _core

SECRET = "no-panics-secret-" + "s" * 32
INF = math.inf
NAN = math.nan
HUGE_TEXT = "x" * 1_000_000

#: Numbers no option accepts: not finite, zero or negative.
INVALID_NUMBERS: list[Any] = [INF, -INF, NAN, 0, 0.0, -1, -1.0, -1e300, -(2**200), 5e-324 * -1]
#: Numbers past what a duration or a counter holds: refused with a ValueError naming the option,
#: or accepted and then usable.
HUGE_NUMBERS: list[Any] = [1e300, 1e20, 2**64, 2**64 - 1, 2**200, 1.7976931348623157e308]
#: Odd but harmless values: tiny and odd types.
ODD_VALUES: list[Any] = [5e-324, 1e-300, True, HUGE_TEXT, "1", b"1", [], timedelta.max]
EXTREMES = INVALID_NUMBERS + HUGE_NUMBERS + ODD_VALUES


def ids(values: list[Any]) -> list[str]:
    return [repr(v)[:24] for v in values]


def outcome(call: Callable[[], object]) -> BaseException | None:
    """What ``call()`` raised (None: nothing); fails the test on anything but an Exception."""
    try:
        call()
    except BaseException as error:  # a PanicException is a BaseException, not an Exception
        if not isinstance(error, Exception):
            pytest.fail(f"{type(error).__module__}.{type(error).__qualname__} escaped: {error}")
        return error
    return None


def assert_names_option(error: BaseException | None, option: str, value: Any) -> None:
    assert isinstance(error, ValueError), f"{option}={value!r}: want ValueError, got {error!r}"
    assert option in str(error), f"{option}={value!r}: the message does not name it: {error}"


def check_range(error: BaseException | None, option: str, value: Any) -> None:
    """An invalid number must be refused by name; a huge one may be accepted."""
    if option in INTEGER_OPTIONS and not isinstance(value, int):
        return
    if value in INVALID_NUMBERS or (value in HUGE_NUMBERS and error is not None):
        assert_names_option(error, option, value)


def use_manager(manager: tornsession.SessionManager) -> None:
    """Save a session, load it back and change it, as an app would."""
    session = manager.get()
    session["n"] = 1
    manager.set(session)
    loaded = manager.get(session.session_id, session.hmac_digest)
    loaded["n"] = 2
    manager.set(loaded)
    assert manager.get(session.session_id, session.hmac_digest)["n"] == 2


def fake_handler(cookie: str = "") -> Any:
    """A real RequestHandler on a request that never reaches a socket."""
    app = tornado.web.Application(cookie_secret=SECRET)
    headers = tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"})
    if cookie:
        headers["Cookie"] = cookie
    start = tornado.httputil.RequestStartLine("GET", "/", "HTTP/1.1")
    request = tornado.httputil.HTTPServerRequest(
        start_line=start, headers=headers, connection=mock.Mock()
    )
    return tornado.web.RequestHandler(app, request)


def use_tornado_manager(manager: tornsession.TornadoSessionManager) -> None:
    """Set the cookies of a new session, then load it through them."""
    first = fake_handler()
    session = manager.get(first)
    session["n"] = 1
    manager.set(first, session)
    cookies = "; ".join(f"{m.key}={m.coded_value}" for m in first._new_cookie.values())
    again = manager.get(fake_handler(cookies))
    assert again.get("n") in (1, None)


# --- the managers' options ----------------------------------------------------------------------

NUMERIC_OPTIONS = ["idle_timeout", "lifetime", "max_size", "cookie_expires_days"]
#: Options that count things: a float is a type error there, and only integers are range-checked.
INTEGER_OPTIONS = {"max_size", "max_sessions", "pool_size"}


@pytest.mark.parametrize("value", INVALID_NUMBERS, ids=ids(INVALID_NUMBERS))
@pytest.mark.parametrize("option", NUMERIC_OPTIONS)
def test_an_invalid_number_is_a_value_error_naming_the_option(option: str, value: Any) -> None:
    check_range(
        outcome(lambda: tornsession.SessionManager(SECRET, **{option: value})), option, value
    )


@pytest.mark.parametrize("value", HUGE_NUMBERS, ids=ids(HUGE_NUMBERS))
@pytest.mark.parametrize("option", NUMERIC_OPTIONS)
@pytest.mark.parametrize("store", ["memory", "file"])
def test_a_huge_number_is_refused_by_name_or_works(
    option: str, value: Any, store: str, tmp_path: Path
) -> None:
    folder = str(tmp_path) if store == "file" else None
    made: list[tornsession.SessionManager] = []
    error = outcome(
        lambda: made.append(tornsession.SessionManager(SECRET, folder, **{option: value}))
    )
    if option in INTEGER_OPTIONS and isinstance(value, float):
        return  # a float for a count: a TypeError is as good as a ValueError
    if error is not None:
        assert_names_option(error, option, value)
        return
    assert outcome(lambda: use_manager(made[0])) is None
    tornado_manager = tornsession.TornadoSessionManager(SECRET, folder, **{option: value})
    assert outcome(lambda: use_tornado_manager(tornado_manager)) is None


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
@pytest.mark.parametrize(
    "option",
    [
        *NUMERIC_OPTIONS,
        "cookie_name",
        "digest_cookie_name",
        "cookie_samesite",
        "cookie_secure",
        "cookie_httponly",
        "cookie_domain",
        "cookie_path",
        "detect_conflicts",
        "store",
    ],
)
def test_any_option_value_gives_an_exception_or_a_working_manager(option: str, value: Any) -> None:
    plain: list[tornsession.SessionManager] = []
    if outcome(lambda: plain.append(tornsession.SessionManager(SECRET, **{option: value}))) is None:
        outcome(lambda: use_manager(plain[0]))
    tornado: list[tornsession.TornadoSessionManager] = []
    built = outcome(
        lambda: tornado.append(tornsession.TornadoSessionManager(SECRET, **{option: value}))
    )
    if built is None:
        outcome(lambda: use_tornado_manager(tornado[0]))


@pytest.mark.parametrize(
    "secret",
    [
        "",
        b"",
        [],
        (),
        HUGE_TEXT,
        HUGE_TEXT.encode(),
        [HUGE_TEXT, "b" * 32],
        "\udcff" * 40,
        "\x00" * 40,
        0,
        2**200,
        NAN,
        None,
    ],
    ids=lambda v: repr(v)[:24],
)
def test_any_secret_gives_an_exception_or_a_working_manager(secret: Any) -> None:
    made: list[tornsession.SessionManager] = []
    if outcome(lambda: made.append(tornsession.SessionManager(secret))) is None:
        assert outcome(lambda: use_manager(made[0])) is None


@pytest.mark.parametrize(
    "args",
    [
        (HUGE_TEXT, HUGE_TEXT),
        ("a" * 64, HUGE_TEXT),
        ("\x00" * 10, "\x00"),
        ("\udcff", "\udcff"),
        (b"\xff" * 64, b"\xff" * 64),
        (2**200, NAN),
        (None, "a" * 64),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_manager_get_with_odd_ids_and_digests(args: tuple[Any, Any]) -> None:
    manager = tornsession.SessionManager(SECRET)
    outcome(lambda: manager.get(*args))


# --- the stores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
def test_memory_store_max_sessions(value: Any) -> None:
    error = outcome(lambda: tornsession.MemoryStore(max_sessions=value))
    if isinstance(value, int) and not isinstance(value, bool) and not 0 < value < 2**64:
        assert_names_option(error, "max_sessions", value)
    if error is None:
        store = tornsession.MemoryStore(max_sessions=value)
        assert outcome(lambda: use_manager(tornsession.SessionManager(SECRET, store=store))) is None


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
def test_file_store_cleanup(value: Any, tmp_path: Path) -> None:
    store = tornsession.FileStore(tmp_path)
    use_manager(tornsession.SessionManager(SECRET, store=store))
    check_range(outcome(lambda: store.cleanup(value)), "idle_timeout", value)


@pytest.mark.parametrize("value", [HUGE_TEXT, "\x00", "", "/nonexistent/\x00/x", 2**200, NAN])
def test_file_and_sqlite_store_paths(value: Any) -> None:
    outcome(lambda: tornsession.FileStore(value))
    outcome(lambda: tornsession.SqliteStore(value))


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
def test_sqlite_store_timeout(value: Any, tmp_path: Path) -> None:
    made: list[tornsession.SqliteStore] = []
    error = outcome(lambda: made.append(tornsession.SqliteStore(tmp_path / "s.db", timeout=value)))
    check_range(error, "timeout", value)
    if made:
        assert (
            outcome(lambda: use_manager(tornsession.SessionManager(SECRET, store=made[0]))) is None
        )


NETWORK_OPTIONS = ["connect_timeout", "timeout", "pool_size"]


@pytest.fixture
def network_stores(
    redis_server: RedisServer, memcached_servers: list[ServerProcess]
) -> Iterator[dict[str, Callable[..., Any]]]:
    yield {
        "RedisStore": lambda **kw: tornsession.RedisStore(redis_server.url, **kw),
        "RedisClusterStore": lambda **kw: tornsession.RedisClusterStore(
            ["redis://127.0.0.1:1"], **kw
        ),
        "MemcachedStore": lambda **kw: tornsession.MemcachedStore(
            [memcached_servers[0].address], **kw
        ),
    }


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
@pytest.mark.parametrize("option", NETWORK_OPTIONS)
@pytest.mark.parametrize("kind", ["RedisStore", "RedisClusterStore", "MemcachedStore"])
def test_network_store_options(
    kind: str, option: str, value: Any, network_stores: dict[str, Callable[..., Any]]
) -> None:
    made: list[Any] = []
    check_range(
        outcome(lambda: made.append(network_stores[kind](**{option: value}))), option, value
    )
    if made and kind != "RedisClusterStore":  # no cluster here: the cluster store only builds
        assert (
            outcome(lambda: use_manager(tornsession.SessionManager(SECRET, store=made[0]))) is None
        )


@pytest.mark.parametrize("value", [HUGE_TEXT, "", "\x00", "redis://[", "redis://h:99999999/0"])
def test_network_store_addresses_and_prefixes(value: str) -> None:
    for build in (
        lambda: tornsession.RedisStore(value),
        lambda: tornsession.RedisStore("redis://127.0.0.1:1/0", prefix=value),
        lambda: tornsession.RedisClusterStore([value]),
        lambda: tornsession.MemcachedStore([value]),
        lambda: tornsession.MemcachedStore(["127.0.0.1:1"], prefix=value),
    ):
        outcome(build)


# --- the signed cookie reader -------------------------------------------------------------------


@pytest.mark.parametrize("value", EXTREMES, ids=ids(EXTREMES))
def test_signed_cookie_reader_now_and_max_age(value: Any) -> None:
    header = "session_id=2|1:0|10:1700000000|10:session_id|8:YWJjZA==|" + "0" * 64
    outcome(lambda: _core._read_signed_cookie(SECRET, "session_id", header, value))
    outcome(lambda: _core._read_signed_cookie(SECRET, "session_id", header, 1.7e9, value))


# --- random mixes -------------------------------------------------------------------------------

numbers = (
    st.floats()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([*INVALID_NUMBERS, *HUGE_NUMBERS])
)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    options=st.dictionaries(
        st.sampled_from(NUMERIC_OPTIONS), numbers | st.none() | st.timedeltas(), max_size=4
    )
)
def test_random_option_mixes_never_panic(options: dict[str, Any]) -> None:
    plain: list[tornsession.SessionManager] = []
    if outcome(lambda: plain.append(tornsession.SessionManager(SECRET, **options))) is None:
        outcome(lambda: use_manager(plain[0]))
    tornado: list[tornsession.TornadoSessionManager] = []
    if (
        outcome(lambda: tornado.append(tornsession.TornadoSessionManager(SECRET, **options)))
        is None
    ):
        outcome(lambda: use_tornado_manager(tornado[0]))


# --- the cleanup command ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-1", "0", "1e20", "5e-324"])
def test_cleanup_command_never_panics(value: str, tmp_path: Path) -> None:
    use_manager(tornsession.SessionManager(SECRET, tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "tornsession.cleanup", str(tmp_path), f"--idle-timeout={value}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, RUST_BACKTRACE="0"),
    )
    assert "PanicException" not in done.stderr and "panicked" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode != 0:
        assert done.stderr.strip(), "a failure says why"
