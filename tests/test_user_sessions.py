"""Per-user sessions over real HTTP on every store (issue 14): a user's sessions listed, one
ended, all others ended, a password change, two processes sharing Redis, remember-me, and an
index that stays bounded under churn."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tornsession
from support.any_store import StoreOpener
from support.browser import Browser
from support.processes import AppProcess
from support.servers import memcached_stats
from support.stores import DictStore

STORES = ["memory", "file", "sqlite", "redis", "cluster", "python"]


@pytest.fixture
def users_app(
    request: pytest.FixtureRequest, start_app_process: Callable[..., AppProcess]
) -> Callable[..., AppProcess]:
    """``users_app(kind, *options)``: tests/apps/users_app.py on this test's store of ``kind``."""

    def start(kind: str, *options: str) -> AppProcess:
        store = StoreOpener(kind, request).args()
        return start_app_process("tests.apps.users_app", *store, *options)

    return start


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def login(browser: Browser, name: str, remember: bool = False) -> None:
    query = f"user={name}" + ("&remember=1" if remember else "")
    assert browser.request("POST", f"/login?{query}", "") == (200, "ok")


def me(browser: Browser) -> Any:
    status, text = browser.get("/me")
    assert status == 200, text
    return json.loads(text)["user"]


def sessions(browser: Browser) -> list[dict[str, Any]]:
    status, text = browser.get("/sessions")
    assert status == 200, text
    listed: list[dict[str, Any]] = json.loads(text)["sessions"]
    return listed


def me_with(app: AppProcess, cookies: dict[str, str]) -> Any:
    """Who a new browser holding ``cookies`` is logged in as."""
    with Browser(app.port) as replay:
        replay.cookies = dict(cookies)
        return me(replay)


@pytest.fixture
def visitors(browsers: list[Browser]) -> Callable[..., list[Browser]]:
    """``visitors(app, count, name=None)``: ``count`` browsers on ``app``, each logged in as
    ``name`` when one is given; closed after the test."""

    def make(app: AppProcess, count: int, name: str | None = None) -> list[Browser]:
        made = [Browser(app.port) for _ in range(count)]
        browsers.extend(made)
        for browser in made:
            if name is not None:
                login(browser, name)
        return made

    return make


def post(browser: Browser, path: str) -> Any:
    status, text = browser.request("POST", path, "")
    assert status == 200, text
    return json.loads(text)


@pytest.mark.parametrize("store", STORES)
def test_three_clients_listed_one_ended_then_all_but_the_current(
    store: str, users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app(store)
    name = user()
    clients = visitors(app, 3, name)
    [stranger] = visitors(app, 1, user())
    listed = sessions(clients[0])
    assert len(listed) == 3
    assert [s["current"] for s in listed].count(True) == 1
    assert all(set(s["info"]) == {"agent"} for s in listed)
    # The ids shown are not the session cookies.
    for s in listed:
        assert s["id"] not in json.dumps(clients[0].cookies)
    # "End this session": client 1's session, from client 0's list.
    mine = {s["id"] for s in listed if s["current"]}
    target = next(s for s in listed if not s["current"])["id"]
    ended_before = {me(c) for c in clients}
    assert ended_before == {name}
    assert post(clients[0], f"/end?id={target}") == {"ended": 1}
    assert post(clients[0], f"/end?id={target}") == {"ended": 0}
    assert sorted(me(c) is None for c in clients) == [False, False, True]
    left = sessions(clients[0])
    assert len(left) == 2 and mine <= {s["id"] for s in left}
    # "Log out everywhere else".
    assert post(clients[0], "/others") == {"ended": 1}
    assert [me(c) for c in clients] == [name, None, None]
    assert [s["id"] for s in sessions(clients[0])] == list(mine)
    # Another user's sessions were never touched; unknown ids are a no-op.
    assert me(stranger) is not None
    assert post(clients[0], "/end?id=" + "0" * 64) == {"ended": 0}
    assert post(clients[0], "/end?id=nonsense") == {"ended": 0}
    # Logging out leaves the list empty.
    assert clients[0].request("POST", "/logout", "")[0] == 200
    login(clients[1], name)
    assert len(sessions(clients[1])) == 1


@pytest.mark.parametrize("store", [*STORES, "memcached"])
def test_a_password_change_ends_the_other_sessions(
    store: str, users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app(store)
    name = user()
    clients = visitors(app, 3, name)
    old_cookies = dict(clients[2].cookies)
    # memcached cannot count what a generation ends: 0, documented.
    assert post(clients[2], "/password") == {"ended": 0 if store == "memcached" else 2}
    assert [me(c) for c in clients] == [None, None, name]
    # The survivor was regenerated (memcached: under the new generation): its old cookie opens
    # nothing either.
    assert clients[2].cookies != old_cookies
    assert me_with(app, old_cookies) is None
    if store == "memcached":  # which cannot list
        assert me(clients[2]) == name
    else:
        assert len(sessions(clients[2])) == 1


def test_two_processes_sharing_redis_see_each_others_sessions(
    users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    one, two = users_app("redis"), users_app("redis")
    name = user()
    a, b = visitors(one, 1)[0], visitors(two, 1)[0]
    login(a, name)
    login(b, name)
    assert len(sessions(a)) == 2
    assert len(sessions(b)) == 2
    # Ended from one process, gone in the other.
    assert post(a, "/others") == {"ended": 1}
    assert me(b) is None
    assert len(sessions(a)) == 1


@pytest.mark.parametrize("store", ["memory", "file", "sqlite", "redis", "cluster", "memcached"])
def test_a_remember_me_session_outlives_a_normal_one(
    store: str, users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app(store, "--idle-timeout", "1")
    name = user()
    normal, remembered = visitors(app, 2)
    login(normal, name)
    assert not any("expires" in c.lower() for c in normal.last_set_cookie)
    login(remembered, name, remember=True)
    assert all("expires" in c.lower() for c in remembered.last_set_cookie)
    time.sleep(2.5)
    assert me(normal) is None
    assert me(remembered) == name
    if store != "memcached":  # which cannot list
        assert len(sessions(remembered)) == 1


class FakeHandler:
    """Enough of a RequestHandler for manager.get/set: cookies in a dict."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def get_secure_cookie(self, name: str, *args: Any, **kwargs: Any) -> bytes | None:
        value = self.cookies.get(name)
        return value.encode() if value is not None else None

    def set_secure_cookie(self, name: str, value: str, *args: Any, **kwargs: Any) -> None:
        self.cookies[name] = value


def index_size(store: Any, store_name: str, redis_url: str | None, folder: Path) -> int:
    """How many index entries the store holds, counted in its own terms."""
    if store_name == "memory":
        return len(store)  # index entries live in entries: never more than the entries
    if store_name == "file":
        return sum(len(p.read_text().splitlines()) for p in folder.glob("USERS*"))
    if store_name == "sqlite":
        import sqlite3

        with sqlite3.connect(folder / "s.sqlite3") as db:
            (n,) = db.execute(
                "SELECT count(*) FROM tornsession_sessions WHERE user_key IS NOT NULL"
            ).fetchone()
            return int(n)
    import redis

    assert redis_url is not None
    client = redis.Redis.from_url(redis_url)
    return sum(int(client.zcard(key)) for key in client.scan_iter("churn:user:*"))


@pytest.mark.parametrize("store_name", ["memory", "file", "sqlite", "redis"])
def test_the_index_stays_bounded_after_10000_logins_with_expiry(
    store_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    redis_url = None
    if store_name == "memory":
        store: Any = tornsession.MemoryStore()
    elif store_name == "file":
        store = tornsession.FileStore(tmp_path)
    elif store_name == "sqlite":
        store = tornsession.SqliteStore(tmp_path / "s.sqlite3")
    else:
        redis_url = request.getfixturevalue("redis_server").url
        store = tornsession.RedisStore(redis_url, prefix="churn:")
    manager = tornsession.TornadoSessionManager(
        "churn-test-secret-of-32-bytes-or-more", store=store, idle_timeout=1
    )
    users = [f"churn-{n}" for n in range(20)]
    for n in range(10_000):
        session = manager.get()
        session.set_user(users[n % len(users)])
        manager.set(FakeHandler(), session)
        if n % 2500 == 2499:
            time.sleep(1.2)  # the sessions so far expire
    time.sleep(1.2)
    # A user's next login (or list) prunes what expired; other users' indexes expire or are
    # pruned as the store goes (Redis key expiry, SQLite rows, memory entries, file cleanup).
    for name in users:
        assert manager.user_sessions(name) == []
    if store_name == "file":
        store.cleanup(1)
    # Bounded by the logins of one expiry period (2,500 here), not by all 10,000.
    size = index_size(store, store_name, redis_url, tmp_path)
    assert size <= 2_600, size


def test_bad_input_and_stores_that_cannot_list() -> None:
    manager = tornsession.TornadoSessionManager(
        "api-test-secret-of-32-bytes-or-more!", idle_timeout=60, max_idle_timeout=600
    )
    session = manager.get()
    for bad in (5, b"ann", None):
        with pytest.raises(TypeError, match="user_id must be a str"):
            session.set_user(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="user_id must be a str"):
            manager.user_sessions(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="user_id must be a str"):
            manager.destroy_user_sessions(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        session.set_user("")
    with pytest.raises(ValueError, match="2048"):
        session.set_info(blob="x" * 3000)
    # Unknown users and ids are a no-op, whatever their shape.
    assert manager.user_sessions("nobody") == []
    assert manager.destroy_user_sessions("nobody") == 0
    for hashed in ("", "0" * 64, "zz", "A" * 64, "0" * 65):
        assert manager.destroy_session(hashed) == 0
    # Stores without an index say which ones have one.
    other = tornsession.SessionManager("api-test-secret-of-32-bytes-or-more!", store=DictStore())
    owned = other.get()
    owned.set_user("ann")
    with pytest.raises(NotImplementedError, match="RedisStore"):
        other.set(owned)
    with pytest.raises(NotImplementedError, match="SqliteStore"):
        other.user_sessions("ann")


def test_set_expiry_stays_within_the_manager_limits() -> None:
    manager = tornsession.TornadoSessionManager(
        "api-test-secret-of-32-bytes-or-more!", idle_timeout=60, max_idle_timeout=600
    )

    class Handler(FakeHandler):
        path_args: tuple[str, ...] = ()
        prepare = None

    handler = Handler()  # held: the session keeps only a weak reference
    session = tornsession.TornadoSession(manager, handler)
    session.set_expiry(idle_timeout=600, persistent=True)
    with pytest.raises(ValueError, match="max_idle_timeout"):
        session.set_expiry(idle_timeout=601)
    no_max = tornsession.TornadoSessionManager("api-test-secret-of-32-bytes-or-more!", lifetime=10)
    other = tornsession.TornadoSession(no_max, handler)
    with pytest.raises(ValueError, match="lifetime"):
        other.set_expiry(lifetime=11)
    other.set_expiry(lifetime=5, idle_timeout=10**6)


def test_a_store_that_is_down_raises_session_store_error() -> None:
    store = tornsession.RedisStore("redis://127.0.0.1:1/0", connect_timeout=0.2, timeout=0.2)
    manager = tornsession.SessionManager("api-test-secret-of-32-bytes-or-more!", store=store)
    with pytest.raises(tornsession.SessionStoreError):
        manager.user_sessions("ann")
    with pytest.raises(tornsession.SessionStoreError):
        manager.destroy_user_sessions("ann")
    with pytest.raises(tornsession.SessionStoreError):
        manager.destroy_session(manager.hashed_id(_owned(manager)) or "")


def _owned(manager: tornsession.SessionManager) -> tornsession.Session:
    session = manager.get()
    session.set_user("ann")
    return session


# memcached: no listing, a per-user generation counter instead.


def test_memcached_log_out_everywhere_ends_every_client(
    users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app("memcached")
    name = user()
    clients = visitors(app, 3, name)
    [stranger] = visitors(app, 1, user())
    assert [me(c) for c in clients] == [name] * 3
    # memcached cannot count what a generation ends: 0, documented.
    assert post(clients[0], "/everywhere") == {"ended": 0}
    assert [me(c) for c in clients] == [None] * 3
    assert me(stranger) is not None
    # Logins after it carry the new generation and live; the next bump ends them too.
    login(clients[1], name)
    login(clients[2], name)
    assert [me(c) for c in clients] == [None, name, name]
    assert post(clients[1], "/everywhere") == {"ended": 0}
    assert [me(c) for c in clients] == [None, None, None]
    assert me(stranger) is not None


def test_memcached_log_out_everywhere_else_keeps_the_current_session(
    users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app("memcached")
    name = user()
    clients = visitors(app, 3, name)
    assert post(clients[0], "/others") == {"ended": 0}
    assert [me(c) for c in clients] == [name, None, None]
    # The kept session goes on saving under the new generation.
    for _ in range(3):
        assert me(clients[0]) == name
    login(clients[1], name)
    assert post(clients[1], "/others") == {"ended": 0}
    assert [me(c) for c in clients] == [None, name, None]


def test_memcached_a_kept_remember_me_session_keeps_its_own_expiry(
    users_app: Callable[..., AppProcess], visitors: Callable[..., list[Browser]]
) -> None:
    app = users_app("memcached", "--idle-timeout", "1")
    name = user()
    normal, remembered = visitors(app, 2)
    login(normal, name)
    login(remembered, name, remember=True)
    assert post(remembered, "/others") == {"ended": 0}
    assert me(normal) is None  # ended by the generation, not by its idle timeout
    time.sleep(2.5)  # past the manager's idle timeout, not the session's own
    assert me(remembered) == name


def test_memcached_listing_raises_naming_the_stores_that_list(memcached_servers: Any) -> None:
    store = tornsession.MemcachedStore([s.address for s in memcached_servers])
    manager = tornsession.SessionManager("api-test-secret-of-32-bytes-or-more!", store=store)
    owned = manager.get()
    owned.set_user("ann")
    manager.set(owned)  # set_user() works here
    for call in (
        lambda: manager.user_sessions("ann"),
        lambda: manager.destroy_session(manager.hashed_id(owned) or ""),
    ):
        with pytest.raises(NotImplementedError) as raised:
            call()
        message = str(raised.value)
        for listing in ("MemoryStore", "FileStore", "SqliteStore", "RedisStore"):
            assert listing in message, message
        assert "destroy_user_sessions() works" in message, message
    assert manager.destroy_user_sessions("nobody") == 0


MEMCACHED_COUNTERS = ("cmd_get", "cmd_set", "cmd_touch", "incr_hits", "incr_misses", "cas_hits")


def memcached_counts(servers: list[Any]) -> dict[str, int]:
    """The command counters of every server, summed."""
    totals = dict.fromkeys(MEMCACHED_COUNTERS, 0)
    for server in servers:
        stats = memcached_stats(server)
        for name in totals:
            totals[name] += int(stats.get(name, 0))
    return totals


def test_memcached_round_trips_owned_sessions_cost_one_counter_get(
    memcached_servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = tornsession.MemcachedStore([s.address for s in memcached_servers])
    manager = tornsession.SessionManager(
        "api-test-secret-of-32-bytes-or-more!", store=store, idle_timeout=600
    )

    def counted(step: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
        before = memcached_counts(memcached_servers)
        result = step()
        after = memcached_counts(memcached_servers)
        return result, {
            k: after[k] - before[k] for k in MEMCACHED_COUNTERS if after[k] != before[k]
        }

    def load(session: tornsession.Session) -> tornsession.Session:
        return manager.get(session.session_id, session.hmac_digest)

    def change(session: tornsession.Session) -> None:
        session["n"] = session.get("n", 0) + 1
        manager.set(session)

    plain = manager.get()
    change(plain)
    owned = manager.get()
    owned.set_user(user())
    # A login: one get of the counter before the record is written.
    _, login_cost = counted(lambda: manager.set(owned))
    assert login_cost == {"cmd_get": 1, "cmd_set": 1}, login_cost
    # Loads: one touching get (`mg v T`, which memcached counts as a touch, not a get); an
    # owned one gets the counter too.
    plain_loaded, plain_load = counted(lambda: load(plain))
    owned_loaded, owned_load = counted(lambda: load(owned))
    assert plain_load == {"cmd_touch": 1}, plain_load
    assert owned_load == {"cmd_get": 1, "cmd_touch": 1}, owned_load
    # Saves of loaded sessions: one replace (`ms MR`) either way; the generation came with the
    # load.
    _, plain_save = counted(lambda: change(plain_loaded))
    _, owned_save = counted(lambda: change(owned_loaded))
    assert plain_save == owned_save == {"cmd_set": 1}, (plain_save, owned_save)
    # "Log out everywhere": ma (ma, ms ME, ma the first time); nothing per session.
    _, bump = counted(lambda: manager.destroy_user_sessions(owned.user_id or ""))
    assert bump in ({"incr_hits": 1}, {"incr_misses": 1, "cmd_set": 1, "incr_hits": 1}), bump
    # The next load of the session finds it ended, says so with a hashed id, and deletes it.
    with caplog.at_level(logging.INFO, logger="tornsession"):
        assert load(owned_loaded).user_id is None
    assert "ended with all its owner's sessions" in caplog.text, caplog.text
    assert owned_loaded.session_id not in caplog.text
    assert tornsession._core._store_load(store, owned_loaded.session_id, 1 << 20) is None
