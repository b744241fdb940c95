"""`tornsession.store_from_url`, attacker review: hostile or odd URLs and options. Each test says
what should hold: a ValueError (or TypeError) naming the URL for anything wrong, never the
password, never another exception class, and never a store other than the one the URL names.
On the first build 21 failed (passwords in errors through a nested revocation URL, a query
password or an unescaped '/', '?' or '#'; OverflowError, SessionStoreError; sqlite:///:memory:
as a file; paths and credentials silently dropped; RecursionError); all fixed."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest
import tornsession


def raised_by(url: str, **options: object) -> ValueError:
    with pytest.raises(ValueError) as raised:
        tornsession.store_from_url(url, **options)
    return raised.value


# -- the password never shows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "cookie:?revocation=redis://u:s3cret-pass@h/0?nope=1",
        "cookie:?revocation=" + quote("redis://u:s3cret-pass@h/0?nope=1", safe=""),
        "cookie:?revocation=" + quote("redis://u:s3cret-pass@h/0?timeout=abc", safe=""),
        "cookie:?revocation=redis://u:s3cret-pass@[::1",
    ],
)
def test_a_revocation_url_in_an_error_has_its_password_masked(url: str) -> None:
    assert "s3cret-pass" not in str(raised_by(url))


def test_a_sentinel_password_given_in_the_query_is_masked_in_errors() -> None:
    for url in [
        "redis+sentinel://a/m?password=s3cret-pass&nope=1",
        "redis+sentinel://a/m?password=s3cret-pass&timeout=abc",
    ]:
        assert "s3cret-pass" not in str(raised_by(url)), url


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:s3cret/pass@h/0",  # an unescaped '/', '#' or '?' ends the host part
        "redis://u:s3cret#pass@h/0",
        "redis://u:s3cret?pass@h/0",
        "redis+cluster://u:s3cret/pass@h:7000",
        "memcached://u:s3cret#pass@h:11211",
    ],
)
def test_a_password_that_needs_escaping_is_not_shown_when_it_was_not(url: str) -> None:
    assert "s3cret" not in str(raised_by(url))


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://u:p@ss@h:6379/0", "p@ss"),
        ("redis://u:p%40ss@h:6379/0", "p%40ss"),
        ("redis://u:p:ss@h:6379/0", "p:ss"),
        ("redis://u:p%25ss@h:6379/0", "p%25ss"),
        (" \tredis://u:pass@h:6379/0\n", "pass"),
        ("rediss+cluster://u:p@ss@h:7000,h2:7001", "p@ss"),
    ],
)
def test_passwords_with_at_colon_or_percent_are_masked(url: str, password: str) -> None:
    store = tornsession.store_from_url(url)
    assert password not in repr(store)
    assert password not in str(raised_by(url.strip() + "?nope=1"))
    assert password not in str(raised_by(url.strip() + "?timeout=abc"))
    assert password not in str(raised_by(url.strip() + "?pool_size=0"))


def test_a_sentinel_password_is_masked_in_errors_and_repr() -> None:
    url = "redis+sentinel://u:s3cret@a:26379/m/1"
    assert "s3cret" not in repr(tornsession.store_from_url(url))
    assert "s3cret" not in str(raised_by(url + "?pool_size=0"))
    assert "s3cret" not in str(raised_by("redis+sentinel://a/m", password="s3cret", timeout=-1))


# -- only ValueError / TypeError, never a crash, a hang or a recursion error --------------------


def test_a_bad_ipv6_bracket_is_a_value_error_naming_the_store_url() -> None:
    error = raised_by("redis://u:s3cret@[::1/0")
    assert "store URL" in str(error) and "s3cret" not in str(error)


def test_a_huge_sentinel_db_is_a_value_error() -> None:
    error = raised_by("redis+sentinel://a:26379/m/99999999999999999999")  # OverflowError today
    assert "store URL" in str(error)


@pytest.mark.parametrize("scheme", ["file", "sqlite"])
def test_a_nul_byte_in_a_path_is_a_value_error(tmp_path: Path, scheme: str) -> None:
    for url in [f"{scheme}://{tmp_path}/a%00b", f"{scheme}://{tmp_path}/a\x00b"]:
        assert "store URL" in str(raised_by(url))  # SessionStoreError today


def test_deeply_nested_revocation_urls_are_a_value_error_not_a_recursion_error() -> None:
    url = "memory:"
    for _ in range(300):
        url = "cookie:?revocation=" + quote(url, safe="")
    raised_by(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h?timeout=nan",
        "redis://h?timeout=inf",
        "redis://h?connect_timeout=1e400",
        "redis://h?pool_size=99999999999999999999999",
        "redis://h?pool_size=1e3",
        "redis://h:²",
        "redis://h:١٢",
        "memcached://a:١٢",
        "memcached://a:+1",
        "redis://::1",
        "memcached://[::1]x",
        "memory:?max_sessions=",
        "file:///tmp/x?durable=",
        "cookie:?revocation=",
        "cookie:?revocation=cookie:",
        "cookie:?revocation=cookie:?revocation=memory:",
        "unix:///run/redis.sock",
        "redis+unix:///run/redis.sock",
        "redis:///run/redis.sock",
        "redis://h:6379,h2:6379",
    ],
)
def test_odd_values_are_a_value_error_naming_the_url(url: str) -> None:
    assert "store URL" in str(raised_by(url))


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("memory:", {"max_sessions": "10"}),
        ("file:///tmp/never-made", {"durable": "no"}),
        ("redis://h", {"prefix": None}),
        ("redis://h", {"timeout": object()}),
        ("redis://h", {"bogus": 1}),
        ("sqlite:///tmp/never-made.db", {"path": "/tmp/other.db"}),
        ("memcached://a", {"servers": ["b:1"]}),
        ("redis+sentinel://a/m", {"service_name": "x"}),
        ("cookie:", {"revocation": "memory:"}),
        ("cookie:", {"revocation": tornsession.CookieStore()}),
    ],
)
def test_keyword_options_of_the_wrong_type_or_clashing_with_the_url_are_value_errors(
    url: str, options: dict[str, object]
) -> None:
    assert "store URL" in str(raised_by(url, **options))
    assert not Path("/tmp/never-made").exists()


def test_long_urls_do_not_hang() -> None:
    start = time.monotonic()
    store = tornsession.store_from_url("memcached://" + ",".join(["a:1"] * 50_000))
    assert isinstance(store, tornsession.MemcachedStore)
    raised_by("redis://" + "h" * 1_000_000 + ":99999")
    raised_by("memory:?" + "&".join(["bogus=1"] * 100_000))
    assert time.monotonic() - start < 5


# -- the store built is the one the URL names ---------------------------------------------------


def test_sqlite_memory_is_not_a_file_named_memory_in_the_root() -> None:
    planted = Path("/:memory:")
    existed = planted.exists()
    try:
        try:
            store = tornsession.store_from_url("sqlite:///:memory:")
        except ValueError:
            return  # refusing it is fine
        assert store.path != planted  # today: a database file "/:memory:" is created
    finally:
        if not existed:
            for suffix in ["", "-wal", "-shm"]:
                Path(f"/:memory:{suffix}").unlink(missing_ok=True)


def test_a_cluster_url_with_a_db_is_refused_not_dropped() -> None:
    # Redis Cluster has only db 0; the /3 is silently ignored today.
    assert "store URL" in str(raised_by("redis+cluster://h:7000,h2:7001/3"))


@pytest.mark.parametrize("url", ["memcached://u:pw@a:11211", "memcached://a:11211/sessions"])
def test_memcached_refuses_credentials_or_a_path_it_would_ignore(url: str) -> None:
    error = raised_by(url)
    assert "store URL" in str(error) and ":pw@" not in str(error)


def test_a_negative_redis_db_is_refused() -> None:
    assert "store URL" in str(raised_by("redis://h:6379/-1"))


def test_a_repeated_query_option_is_refused_not_last_wins() -> None:
    assert "prefix" in str(raised_by("redis://h?prefix=a:&prefix=b:"))


def test_ipv6_hosts_with_and_without_ports() -> None:
    assert tornsession.store_from_url("redis://[::1]:6380/1").url == "redis://[::1]:6380/1"
    assert tornsession.store_from_url("redis://[::1]").url == "redis://[::1]"
    cluster = tornsession.store_from_url("redis+cluster://[::1]:7000,[::2]")
    assert cluster.urls == ["redis://[::1]:7000", "redis://[::2]:6379"]
    sentinel = tornsession.store_from_url("redis+sentinel://[::1],[::2]:26380/m")
    assert sentinel.sentinels == ["[::1]:26379", "[::2]:26380"]
    memcached = tornsession.store_from_url("memcached://[::1]")
    assert "'[::1]:11211'" in repr(memcached)


def test_fragments_and_queries_do_not_reach_the_store() -> None:
    store = tornsession.store_from_url("redis://u:pw@h:6379/2?prefix=p:#frag")
    assert (store.url, store.prefix) == ("redis://u:***@h:6379/2", "p:")
    cluster = tornsession.store_from_url("redis+cluster://h:7000?prefix=p:#x")
    assert cluster.urls == ["redis://h:7000"]


def test_the_sentinel_path_gives_the_service_name_decoded() -> None:
    sentinel = tornsession.store_from_url("rediss+sentinel://:pw@a,b:1/my%20master/3")
    assert (sentinel.sentinels, sentinel.service_name) == (["a:26379", "b:1"], "my master")
    assert "store URL" in str(raised_by("redis+sentinel://a/m/0/1"))


def test_file_paths_are_taken_as_written(tmp_path: Path) -> None:
    store = tornsession.store_from_url(f"file://{tmp_path}/s%23x/")
    assert store.path == tmp_path / "s#x"
    store = tornsession.store_from_url(f"file://{tmp_path}/a/../b")
    assert store.path == Path(f"{tmp_path}/a/../b")
    for url in ["file://~/x", "file:~/x", "file://localhost/tmp/x", "file:relative", "sqlite://"]:
        assert "store URL" in str(raised_by(url)), url


def test_nested_revocation_urls_build_the_store_they_name(tmp_path: Path) -> None:
    inner = quote("redis://u:pw@h:6390/4?prefix=rev:", safe="")
    cookie = tornsession.store_from_url(f"cookie:?revocation={inner}")
    assert isinstance(cookie.revocation, tornsession.RedisStore)
    assert (cookie.revocation.url, cookie.revocation.prefix) == ("redis://u:***@h:6390/4", "rev:")
    assert "takes no option 'prefix'" in str(
        raised_by("cookie:?revocation=redis://h/0&prefix=rev:")
    )
