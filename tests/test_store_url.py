"""`tornsession.store_from_url`: every store from one URL (issue 22, groundwork): the class and
options each URL gives, options in the query and as keywords, an error naming what is wrong
(never the password) for anything else, and the stores it makes working on real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.servers import RedisServer, ServerProcess


def test_memory_and_cookie_take_their_options_from_the_query() -> None:
    memory = tornsession.store_from_url("memory:?max_sessions=10&max_bytes=4096")
    assert isinstance(memory, tornsession.MemoryStore)
    assert (memory.max_sessions, memory.max_bytes) == (10, 4096)
    assert isinstance(tornsession.store_from_url("memory:"), tornsession.MemoryStore)
    assert isinstance(tornsession.store_from_url(" cookie: "), tornsession.CookieStore)


def test_files_and_sqlite_take_an_absolute_path(tmp_path: Path) -> None:
    folder = tmp_path / "sessions dir"
    files = tornsession.store_from_url(f"file://{folder.as_posix().replace(' ', '%20')}?durable=1")
    assert isinstance(files, tornsession.FileStore)
    assert (files.path, files.durable) == (folder, True)
    db = tornsession.store_from_url(f"sqlite://{tmp_path}/s.db?timeout=2&durable=no")
    assert isinstance(db, tornsession.SqliteStore)
    assert db.path == tmp_path / "s.db"


def test_network_urls_name_their_servers_and_options() -> None:
    redis = tornsession.store_from_url("redis://u:pw@127.0.0.1:6390/2?prefix=app:&timeout=0.5")
    assert isinstance(redis, tornsession.RedisStore)
    assert (redis.url, redis.prefix) == ("redis://u:***@127.0.0.1:6390/2", "app:")
    cluster = tornsession.store_from_url("rediss+cluster://127.0.0.1:7000,127.0.0.1")
    assert isinstance(cluster, tornsession.RedisClusterStore)
    assert cluster.urls == ["rediss://127.0.0.1:7000", "rediss://127.0.0.1:6379"]
    sentinel = tornsession.store_from_url("redis+sentinel://:pw@a:26379,b/mymaster/3")
    assert isinstance(sentinel, tornsession.RedisSentinelStore)
    assert (sentinel.sentinels, sentinel.service_name) == (["a:26379", "b:26379"], "mymaster")
    memcached = tornsession.store_from_url("memcached://a:11211,[::1]:11212,c?prefix=x:")
    assert isinstance(memcached, tornsession.MemcachedStore)
    assert "'[::1]:11212'" in repr(memcached) and "'c:11211'" in repr(memcached)


def test_keyword_options_win_over_the_query(tmp_path: Path) -> None:
    store = tornsession.store_from_url("redis://127.0.0.1:6390?prefix=query:", prefix="kw:")
    assert store.prefix == "kw:"
    revocation = tornsession.SqliteStore(tmp_path / "rev.db")
    cookie = tornsession.store_from_url("cookie:", revocation=revocation)
    assert cookie.revocation is revocation
    nested = tornsession.store_from_url(f"cookie:?revocation=sqlite://{tmp_path}/rev2.db")
    assert isinstance(nested.revocation, tornsession.SqliteStore)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com", "unknown scheme 'http'"),
        ("", "unknown scheme ''"),
        ("memory:?bogus=1", "takes no option 'bogus' (it takes: max_bytes, max_sessions)"),
        ("memory://host", "takes no host or path"),
        ("memory:?max_sessions=many", "max_sessions='many' is not a whole number"),
        ("file://relative/sessions", "'relative' reads as a host"),
        ("sqlite:relative.db", "a path must be absolute"),
        ("file:///tmp/x?durable=maybe", "durable='maybe' is not a yes/no value"),
        ("redis://", "names no server"),
        ("redis://h?timeout=abc", "timeout='abc' is not a number"),
        ("redis://h?timeout=0", "timeout must be"),
        ("memcached://a:99999", "the port after 'a' is not a number from 1 to 65535"),
        ("memcached://a,,b", "'' is not host:port"),
        ("redis+sentinel://a:26379", "the path is the master's service name"),
        ("redis+sentinel://a:26379/m/x", "the db after the service name is a number"),
        ("cookie:?revocation=http://x", "revocation='http://x' is not a store URL"),
    ],
)
def test_a_wrong_url_is_a_value_error_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="store URL") as raised:
        tornsession.store_from_url(url)
    assert says in str(raised.value)


def test_an_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as raised:
        tornsession.store_from_url("redis://user:s3cret-pass@h:6379/0?nope=1")
    assert "s3cret-pass" not in str(raised.value)
    assert "user:***@h" in str(raised.value)


def test_a_url_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="as a str"):
        tornsession.store_from_url(b"memory:")  # type: ignore[arg-type]


def round_trip(store: Any) -> dict[str, Any]:
    """A session saved through a manager on `store`, loaded again by id."""
    manager = tornsession.SessionManager("store-url-secret-" + "x" * 32, store=store)
    session = manager.get()
    session["n"] = 42
    manager.set(session)
    return dict(manager.get(session.session_id, session.hmac_digest))


def test_the_stores_work_on_real_servers_and_files(
    redis_server: RedisServer, memcached_servers: list[ServerProcess], tmp_path: Path
) -> None:
    servers = ",".join(f"127.0.0.1:{server.port}" for server in memcached_servers)
    urls = [
        "memory:",
        f"file://{tmp_path}/files",
        f"sqlite://{tmp_path}/sessions.db",
        f"{redis_server.url}?prefix=url-test:",
        f"memcached://{servers}?prefix=url-test:",
    ]
    for url in urls:
        assert round_trip(tornsession.store_from_url(url)) == {"n": 42}, url


def test_redis_cluster_urls_reach_a_real_cluster(redis_cluster: list[RedisServer]) -> None:
    hosts = ",".join(node.url.removeprefix("redis://").removesuffix("/0") for node in redis_cluster)
    store = tornsession.store_from_url(f"redis+cluster://{hosts}?prefix=url-test:")
    assert round_trip(store) == {"n": 42}
