"""Type stubs for tornsession's Rust core (``tornsession._core``)."""

import os
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar, final, overload

from typing_extensions import Self, disjoint_base

from tornsession.protocols import RequestHandlerProtocol, SessionStoreProtocol

__all__ = [
    "CookieStore",
    "FileStore",
    "InvalidSessionException",
    "MemcachedStore",
    "MemoryStore",
    "RedisClusterStore",
    "RedisSentinelStore",
    "RedisStore",
    "Session",
    "SessionBusy",
    "SessionConflict",
    "SessionInfo",
    "SessionManager",
    "SessionStoreError",
    "SqliteStore",
    "TornadoSession",
    "TornadoSessionManager",
    "WeakSecretWarning",
    "_Ready",
    "_Store",
    "_StoreTask",
    "_Turn",
    "_WireConnection",
    "_WireServer",
    "__version__",
    "_clear_turns_after_fork",
    "_enqueue_for_turn",
    "_mixin_finish",
    "_mixin_prepare",
    "_process_metrics",
    "_read_signed_cookie",
    "_release_when_finished",
    "_store_copy_in",
    "_store_delete_listed",
    "_store_load",
    "_store_load_listed",
    "_store_save_if_exists",
    "_store_session_ids",
    "_take_turn_now",
    "_turns_in_table",
]
__version__: str

# Every store that keeps records on a server (what `CookieStore(revocation=)` takes).
_ServerStore: TypeAlias = (
    MemoryStore
    | FileStore
    | SqliteStore
    | RedisStore
    | RedisClusterStore
    | RedisSentinelStore
    | MemcachedStore
    | SessionStoreProtocol
)

_T = TypeVar("_T")

class _Latency(TypedDict):
    buckets: list[tuple[float, int]]
    count: int
    sum: float

class _Metrics(TypedDict):
    loads: dict[Literal["found", "missing", "expired", "unreadable"], int]
    fresh: int
    saves: dict[Literal["written", "unchanged", "dropped"], int]
    conflicts: int
    busy: int
    store_errors: dict[
        Literal["unavailable", "unreadable_record", "oversized_record", "unsupported", "crossed"],
        int,
    ]
    resyncs: int
    cookies_sent: int
    latency: dict[Literal["load", "save", "delete"], _Latency]

def _process_metrics() -> _Metrics:
    """Every manager's ``metrics()`` of this process added up, dropped managers' included."""

class InvalidSessionException(Exception):
    """The session id and digest from the request do not match: a forged or foreign cookie."""

class SessionConflict(Exception):
    """Another request saved this session since it was loaded; nothing was written (only with
    ``detect_conflicts=True``). Load it again and redo the change."""

class SessionStoreError(Exception):
    """The session store could not load, save or delete a session; the message names the store."""

class SessionBusy(SessionStoreError):
    """An earlier request of the same session did not finish within the manager's
    ``order_timeout``; this request was not served with the session (see ``order_requests``)."""

class WeakSecretWarning(UserWarning):
    """A session secret is short enough to be guessed offline from one digest cookie."""

@disjoint_base
class _Store:
    """What every tornsession store class is: a store a manager drives (not made itself)."""

@final
class MemoryStore(_Store):
    """Sessions in this process's memory: thread-safe, bounded in count and bytes; evicted
    least recently used first, sessions used once before those used on several requests."""

    def __new__(cls, max_sessions: int = 100000, *, max_bytes: int = 268435456) -> Self:
        """Keep at most ``max_sessions`` sessions (at least 1) holding at most ``max_bytes``
        bytes (at least 1; each session counts its record plus about 100 bytes). A record
        larger than ``max_bytes`` cannot be saved (SessionStoreError)."""

    @property
    def max_sessions(self) -> int:
        """The bound on the number of sessions kept."""

    @property
    def max_bytes(self) -> int:
        """The bound on the bytes the sessions take."""

    def __len__(self) -> int:
        """How many sessions are held now."""

@final
class CookieStore(_Store):
    """Sessions sealed in their visitors' cookies: nothing is kept on the server.

    The record is sealed (XChaCha20-Poly1305, keys from the secret(s) by HKDF-SHA256) as the id
    cookie's value, ``v1.`` then base64url; cookies of an older secret open and are resealed.
    Expiry is checked inside the seal. A ``Set-Cookie`` line over 4,096 bytes is a ValueError.
    """

    def __new__(cls, *, revocation: _ServerStore | None = None) -> Self:
        """``revocation``: any server store, keeping a per-user generation counter so that
        ``destroy_user_sessions()`` can end a user's cookie sessions."""

    @property
    def revocation(self) -> _ServerStore | None:
        """The store that keeps the per-user generation counters, or None."""

@final
class FileStore(_Store):
    """One file per session, ``SESSION<id>``, in one folder (created 0700); writes are atomic."""

    def __new__(cls, path: str | os.PathLike[str], *, durable: bool = False) -> Self:
        """Open (creating when missing) the folder ``path``.

        ``durable=True`` flushes every save and delete to disk (the file, then the folder)
        before it returns: a power cut then loses nothing, at a few milliseconds per write.
        """

    @property
    def path(self) -> Path:
        """The folder holding the session files."""

    @property
    def durable(self) -> bool:
        """Whether writes are flushed to disk before they return."""

    def cleanup(self, idle_timeout: float | None = None) -> tuple[int, int]:
        """Delete session files unused for longer than ``idle_timeout`` seconds (default: the
        idle timeout of the manager using this store) and stale temporary files; returns
        ``(expired, stale_temporary)``. ValueError unless ``idle_timeout`` is a positive
        finite number."""

@final
class SqliteStore(_Store):
    """Sessions in one SQLite database file, shared safely by several processes of one machine.

    WAL journal, ``synchronous=NORMAL`` (``FULL`` with ``durable=True``), rows expire at
    ``idle_timeout`` after their last save and expired rows are swept now and then.
    """

    def __new__(
        cls, path: str | os.PathLike[str], *, timeout: float = 5.0, durable: bool = False
    ) -> Self:
        """Open (creating when missing) the database file ``path``.

        ``timeout`` is how many seconds (above 0, at most 3600) a write waits for another
        process's write. ``durable=True`` sets ``synchronous=FULL``: every commit is on disk
        before it returns, so a power cut loses nothing.
        """

    @property
    def path(self) -> Path:
        """The database file."""

    @property
    def durable(self) -> bool:
        """Whether commits are flushed to disk (``synchronous=FULL``)."""

    def _synchronous(self) -> int:
        """SQLite's ``synchronous`` setting in force: 1 (NORMAL) or 2 (FULL)."""

@final
class RedisStore(_Store):
    """Sessions in one Redis server, keys ``prefix + session_id``, expiring after idle_timeout.

    Any failure (refused, unreachable, timed out) raises SessionStoreError; a broken connection
    is dropped and the next request connects again.
    """

    def __new__(
        cls,
        url: str,
        *,
        prefix: str = "tornsession:",
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        pool_size: int = 8,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> Self:
        """``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/redis.sock``.

        Connects at first use. ``timeout`` bounds each command; ``pool_size`` connections are
        kept for reuse. Over ``rediss://`` the server's certificate is checked against the
        system's CA roots, or only the PEM CA(s) in ``ssl_ca_certs``; ``ssl_certfile`` and
        ``ssl_keyfile`` (PEM, together) are a client certificate for servers that ask for one.
        The files are read here; a certificate that does not verify fails each request with
        SessionStoreError. Timeouts are seconds above 0 and at most 3600, ``pool_size`` from 1
        to 1024 (ValueError otherwise).
        """

    @property
    def url(self) -> str:
        """The server's URL, password masked."""

    @property
    def prefix(self) -> str:
        """What every key starts with."""

@final
class RedisClusterStore(_Store):
    """Sessions in a Redis Cluster, each key on the node owning its slot."""

    def __new__(
        cls,
        urls: list[str],
        *,
        prefix: str = "tornsession:",
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        pool_size: int = 8,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> Self:
        """``redis://host:port`` (or ``rediss://``) URLs of one or more nodes; the rest are
        discovered. The ``ssl_*`` files as for ``RedisStore``."""

    @property
    def urls(self) -> list[str]:
        """The node URLs given, passwords masked."""

    @property
    def prefix(self) -> str:
        """What every key starts with."""

@final
class RedisSentinelStore(_Store):
    """Sessions in the master of a Redis replica set watched by Redis Sentinel.

    The master's address comes from the sentinels and is kept until a connection to it fails;
    then the sentinels are asked again, so a failover is followed without a restart (requests
    during the failover raise SessionStoreError).
    """

    def __new__(
        cls,
        sentinels: list[str],
        service_name: str,
        *,
        prefix: str = "tornsession:",
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        pool_size: int = 8,
        ssl: bool = False,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> Self:
        """``sentinels``: ``"host:port"`` of each sentinel; ``service_name``: the master's name in
        their configuration. ``ssl``, ``db``, ``username`` and ``password`` are how to reach the
        master (the sentinels themselves are reached in plain TCP); the ``ssl_*`` files (with
        ``ssl=True``) as for ``RedisStore``."""

    @property
    def sentinels(self) -> list[str]:
        """The sentinel addresses given."""

    @property
    def service_name(self) -> str:
        """The master's name in the sentinels' configuration."""

    @property
    def prefix(self) -> str:
        """What every key starts with."""

@final
class MemcachedStore(_Store):
    """Sessions in one or several memcached servers, keys spread across them by hash."""

    def __new__(
        cls,
        servers: list[str],
        *,
        prefix: str = "tornsession:",
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        pool_size: int = 8,
    ) -> Self:
        """``servers`` like ``["127.0.0.1:11211", "memcache://127.0.0.1:11212"]``.

        Connects at first use; ``pool_size`` idle connections are kept per server. ``timeout``
        bounds each command as a whole. Timeouts are seconds above 0 and at most 3600,
        ``pool_size`` from 1 to 1024 (ValueError otherwise).
        """

    @property
    def servers(self) -> list[str]:
        """The servers, as given."""

    @property
    def prefix(self) -> str:
        """What every key starts with."""

def _store_save_if_exists(store: Any, session_id: str, blob: bytes, ttl: int | None = None) -> bool:
    """Test hook: save ``blob`` only over an existing record of ``session_id`` in ``store``."""

def _store_load(store: Any, session_id: str, max_bytes: int) -> bytes | None:
    """Test hook: the record of ``session_id`` in ``store``, refusing more than ``max_bytes``."""

# Listing and copying records, for ``python -m tornsession`` (tornsession_core::stores::listing).
def _store_session_ids(store: _Store) -> list[str]: ...
def _store_load_listed(
    store: _Store, session_id: str, idle_timeout: float | None = None
) -> tuple[bytes, float | None] | None: ...
def _store_copy_in(
    store: _Store,
    session_id: str,
    blob: bytes,
    remaining: float | None,
    expected: bytes | None,
    idle_timeout: float | None = None,
) -> bool: ...
def _store_delete_listed(store: _Store, session_id: str, expected: bytes | None = None) -> bool: ...

@disjoint_base
class Session(dict[str, Any]):
    """A plain ``dict`` with ``session_id`` and ``hmac_digest`` attributes, as in the original."""

    session_id: Any
    """The session's id, 32 hex digits (a new one from the OS's random source). It is what the
    cookie carries: whoever has it has the session, so tornsession never logs it."""
    hmac_digest: Any
    """The id's HMAC-SHA256 under the manager's newest secret (the original's second cookie)."""

    def __init__(self, session_id: Any = None, hmac_digest: Any = None) -> None:
        """An empty session with the given id and digest."""

    def set_user(self, user_id: str) -> None:
        """Record who owns the session (saved with it, and filed in the store's per-user
        index; on MemcachedStore saved with the owner's generation); a non-str is a
        TypeError."""

    @property
    def user_id(self) -> str | None:
        """The owner given to ``set_user()``, or None."""

    def set_info(self, **fields: Any) -> None:
        """Attach small JSON metadata (at most 2 KiB) shown in the owner's session list."""

@final
class SessionInfo:
    """One session of a user, as ``SessionManager.user_sessions`` lists it."""

    @property
    def id(self) -> str:
        """A hashed id, safe to show and to pass to ``destroy_session()``; not a cookie."""

    @property
    def created(self) -> int:
        """When the session was created, in seconds since the epoch."""

    @property
    def last_seen(self) -> int | None:
        """When the session was last saved, to the minute, in seconds since the epoch."""

    @property
    def info(self) -> dict[str, Any]:
        """What ``set_info()`` attached."""

@disjoint_base
class SessionManager:
    """Keeps the secret(s) and the store; hands out and stores sessions."""

    def __new__(
        cls,
        secret: str | bytes | list[str | bytes] | tuple[str | bytes, ...],
        session_dir: str | os.PathLike[str] | None = None,
        *,
        store: _ServerStore | CookieStore | None = None,
        cookie_name: str = "session_id",
        digest_cookie_name: str = "hmac_digest",
        cookie_format: Literal["pair", "compact"] = "pair",
        cookie_httponly: bool = True,
        cookie_samesite: Literal["Lax", "Strict", "None"] | None = "Lax",
        cookie_secure: bool | Literal["auto"] = "auto",
        cookie_domain: str | None = None,
        cookie_path: str = "/",
        cookie_expires_days: float | None = 30.0,
        idle_timeout: float | timedelta | None = None,
        lifetime: float | timedelta | None = None,
        max_idle_timeout: float | timedelta | None = None,
        max_lifetime: float | timedelta | None = None,
        max_size: int | None = None,
        max_read_size: int | None = None,
        detect_conflicts: bool = False,
        order_requests: bool = True,
        order_timeout: float | timedelta = 10.0,
        metrics: bool = True,
    ) -> Self:
        """``session_dir`` means a FileStore there; neither it nor ``store`` means a MemoryStore.

        ``cookie_format`` picks the cookies sent: ``"pair"`` (the original's two Tornado-signed
        cookies, ``cookie_name`` and ``digest_cookie_name``; needs the app's ``cookie_secret``) or
        ``"compact"`` (one cookie, ``cookie_name``, of about 70 bytes: id, issue time and a MAC
        made with ``secret``; no ``cookie_secret`` needed). Both formats are always read, so
        switching logs nobody out: a session read from the other format gets its cookies sent
        again in this one.

        Every option is checked here; a bad one raises ValueError or TypeError naming it. A
        secret shorter than 32 bytes gives a ``WeakSecretWarning``. ``max_size`` defaults to the
        read limit (``max_read_size``, 1 MiB; a ``max_read_size`` below ``max_size`` is a
        ValueError), at most 1 MiB less 1 KiB with a ``MemcachedStore``. ``metrics=False`` counts
        nothing (``metrics()`` then reads all zero)."""

    @property
    def order_requests(self) -> bool:
        """Whether requests of one session wait for each other within this process."""

    @property
    def order_timeout(self) -> float:
        """How long, in seconds, a request waits for an earlier request of its session."""

    def get(
        self, session_id: str | bytes | None = None, hmac_digest: str | bytes | None = None
    ) -> Session:
        """A new session without an id; else the stored one, after checking the digest.

        Raises InvalidSessionException when the digest does not match the id.
        """

    def set(self, session: Session) -> None:
        """Store the session's items, replacing what was stored."""

    def user_sessions(self, user_id: str) -> list[SessionInfo]:
        """The live sessions ``user_id`` owns, oldest first ([] for an unknown user).
        NotImplementedError, naming the stores that list, on one that cannot (MemcachedStore)."""

    def destroy_user_sessions(self, user_id: str, keep: Session | str | None = None) -> int:
        """End every session ``user_id`` owns but ``keep`` (a session, its id or its
        ``SessionInfo.id``); how many were ended. On MemcachedStore the user's generation
        moves on instead (each session ends as it is next loaded) and the count is 0: not known
        there; pass the current session itself as ``keep`` so its later saves keep it."""

    def destroy_session(self, hashed_id: str) -> int:
        """End the session a ``SessionInfo.id`` names: 1, or 0 when it names none.
        NotImplementedError on a store that cannot list (MemcachedStore)."""

    def hashed_id(self, session: Session) -> str | None:
        """The ``SessionInfo.id`` of a session with an owner, or None."""

    def metrics(self) -> _Metrics:
        """What this manager's sessions did since it was made, counted: loads by what they found,
        fresh sessions, saves by what they did, conflicts, requests that waited too long for
        their turn (``busy``: 503), store errors by kind, connections replaced to get back in
        step (``resyncs``), cookies sent, and each store operation's latency (cumulative
        buckets in seconds, as Prometheus keeps them). See ``tornsession.metrics``."""

    def _count_busy(self) -> None: ...
    def _count_conflict(self) -> None: ...
    async def auser_sessions(self, user_id: str) -> list[SessionInfo]:
        """``user_sessions()`` without blocking the IOLoop."""

    async def adestroy_user_sessions(self, user_id: str, keep: Session | str | None = None) -> int:
        """``destroy_user_sessions()`` without blocking the IOLoop."""

    async def adestroy_session(self, hashed_id: str) -> int:
        """``destroy_session()`` without blocking the IOLoop."""

class TornadoSessionManager(SessionManager):
    """A SessionManager that reads and writes the session cookies through a RequestHandler."""

    def get(self, requestHandler: RequestHandlerProtocol | None = None) -> Session:  # type: ignore[override]
        """The session the handler's cookies name; a new one without handler or cookies."""

    def set(self, requestHandler: RequestHandlerProtocol, session: Session) -> None:  # type: ignore[override]
        """Store the session, then set its cookies on the handler. RuntimeError, before the store
        is touched, when a session the browser has no cookie for would be written after the
        handler's headers are out (``flush()``, a WebSocket's 101)."""

@disjoint_base
class TornadoSession(Session):
    """A Session bound to a manager and a handler; loads at first use, saved with save()."""

    def __init__(
        self, tornado_session_manager: SessionManager, request_handler: RequestHandlerProtocol
    ) -> None:
        """Bind to the manager and handler; the store is read at first use, not here."""

    @property
    def session_manager(self) -> SessionManager:
        """The manager this session was made with."""

    @property
    def request_handler(self) -> RequestHandlerProtocol:
        """The handler whose cookies name this session."""

    def save(self) -> None:
        """Write the session if it changed, set its cookies when due: manager.set(handler, self).
        RuntimeError, before the store is touched, when it is new (no cookie yet) and the
        handler's headers are already out (``flush()``, a WebSocket's 101)."""

    def regenerate(self) -> None:
        """A new id and digest for the same data; the old record is deleted and the new cookies
        set. Call it right after a login (session fixation). RuntimeError, with the session left
        as it was, when the handler's headers are already out (``flush()``, a WebSocket)."""

    def destroy(self) -> None:
        """Logout: delete the stored record, clear the session's cookies of both formats (unless
        the headers are already out) and empty the session."""

    def set_expiry(
        self,
        idle_timeout: float | timedelta | None = None,
        lifetime: float | timedelta | None = None,
        persistent: bool | None = None,
    ) -> None:
        """This session's own limits (up to the manager's ``max_idle_timeout``/``max_lifetime``,
        else its own), and whether its cookies outlive the browser; None leaves one as is."""

    def flash(self, message: Any, category: str = "info") -> None:
        """Queue a message for a later request (kept in the session under ``"_flashes"``)."""

    def pop_flashes(self) -> list[tuple[str, Any]]:
        """The queued ``(category, message)`` pairs, oldest first, removed from the session."""

    # Steps of the async API in tornsession.TornadoSession; not for direct use.
    def _bind(self, tornado_session_manager: Any, request_handler: Any) -> None: ...
    def _begin_load(self) -> _StoreTask | None: ...
    def _end_load(self, task: _StoreTask) -> _StoreTask | None: ...
    def _abandon_load(self) -> None: ...
    def _ensure_loaded(self) -> None: ...
    def _is_loaded(self) -> bool: ...
    def _is_changed(self) -> bool: ...
    def _begin_save(self) -> _StoreTask | None: ...
    def _end_save(self, task: _StoreTask | None = None) -> None: ...
    def _is_stored(self) -> bool: ...
    def _rotate_id(self) -> str | None: ...
    def _forget_task(self, session_id: str) -> _StoreTask: ...
    def _ended_elsewhere(self, old_id: str) -> None: ...
    def _begin_destroy(self) -> _StoreTask | None: ...
    def _end_destroy(self) -> None: ...

    # The dict methods, each loading the session first.
    @overload
    def get(self, key: str, default: None = None, /) -> Any | None: ...
    @overload
    def get(self, key: str, default: _T, /) -> Any | _T: ...
    @overload
    def pop(self, key: str, /) -> Any: ...
    @overload
    def pop(self, key: str, default: _T, /) -> Any | _T: ...
    def setdefault(self, key: str, default: Any = None, /) -> Any: ...

def _read_signed_cookie(
    cookie_secret: str | bytes | dict[int, str | bytes],
    name: str,
    cookie_header: str,
    now: float,
    max_age_days: float = 31.0,
) -> tuple[bool, bytes | None]:
    """Internal, for tests: the Rust reader of Tornado signed cookies."""

@final
class _StoreTask:
    """Internal: one store operation of a session, run inline, over the store's own protocol
    (``_WireConnection``) or on a worker thread by the async API."""

    def run(self) -> None:
        """Do the store I/O (releases the GIL around native stores' I/O)."""

    @property
    def blocks(self) -> bool:
        """Whether run() may wait on I/O (False for the MemoryStore: run it inline)."""

    @property
    def session_id(self) -> str | None:
        """The session id a load task is for (what requests of one session are ordered by)."""

    def result(self) -> bool:
        """Delete tasks: whether there was a record, or raise what the store raised."""

    @property
    def wire_server(self) -> _WireServer | None:
        """The server of the store's own protocol this task's request goes to (prepared for
        ``_WireConnection.send``), or None when it runs on a worker thread."""

    def wire_failed(self, cause: str) -> None:
        """The connection failed before the replies came: the task's result is the store's
        error with this cause."""

@final
class _Turn:
    """Internal: a request's turn with its session (``tornsession._ordering``)."""

    @property
    def session_id(self) -> str: ...
    hooked: bool
    def release(self) -> None:
        """The request finished: the next request of the session takes the turn."""

    def pass_on(self) -> None:
        """The request keeps running but gives up its turn; its later writes are fenced."""

    def begin_write(self) -> None:
        """A write of the session is on its way: the turn stays until ``end_write()``."""

    def end_write(self) -> None:
        """The write ``begin_write()`` announced was answered or failed."""

    def attach(self, session: Any) -> None:
        """`session` is one this request loaded: the lease looks at it for changes."""

    def fence(self, session: Any, regenerating: bool = False) -> bool:
        """Before a write of `session`: whether to write; SessionConflict if it must not."""

def _take_turn_now(session_id: str, owner: int) -> _Turn | None:
    """Internal: the turn without waiting, or None when another request has it."""

def _enqueue_for_turn(session_id: str, owner: int, event_loop: Any) -> tuple[_Turn, Any | None]:
    """Internal: a claim on the turn, and the future to await first when it must wait."""

def _release_when_finished(handler: Any, turn: _Turn) -> None:
    """Internal: the turn ends with the handler (hooks on its on_finish and close callbacks)."""

_SessionT = TypeVar("_SessionT", bound=TornadoSession)

def _mixin_prepare(
    handler: Any, session_class: type[_SessionT]
) -> tuple[_SessionT | None, _StoreTask | None, Any] | None:
    """Internal: SessionMixin.prepare()'s work; None when done, else what is left to await."""

def _mixin_finish(handler: Any, chunk: Any, mixin: type) -> tuple[bool, Any]:
    """Internal: SessionMixin.finish()'s work: (True, finish's future) or (False, the save to
    await)."""

@final
class _Ready:
    """Internal: an awaitable that is done at once."""

    def __init__(self) -> None: ...
    def __await__(self) -> _Ready: ...
    def __iter__(self) -> _Ready: ...
    def __next__(self) -> None: ...

def _turns_in_table() -> tuple[int, int]:
    """Internal: sessions with a request in flight, and claims the turn table still knows."""

def _clear_turns_after_fork() -> None:
    """Internal: empties the turn table in a forked child (``os.register_at_fork``)."""

@final
class _WireServer:
    """Internal: one Redis or memcached server as the async API's connections reach it."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def connect_timeout(self) -> float:
        """Seconds connecting may take."""

    @property
    def describe(self) -> str:
        """The store, as its errors name it."""

    def link_for(self, event_loop: Any, busy_ok: bool = False) -> _WireConnection | None:
        """The connection of this event loop a new request goes to; ``None`` when another
        should be made (or, with ``busy_ok``, when the loop has none at all)."""

    def new_link(self, event_loop: Any) -> _WireConnection:
        """A protocol object for ``loop.create_connection``."""

    def adopt(self, link: _WireConnection) -> None:
        """Adds a connected, greeted ``link`` to those requests on its loop use."""

@final
class _WireConnection:
    """Internal: an ``asyncio.Protocol`` pipelining session requests to one server."""

    def connection_made(self, transport: Any) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self, exc: BaseException | None = None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def check_deadlines(self) -> None:
        """Fails each request whose own deadline passed, alone, and retires the connection."""

    def greet(self) -> Awaitable[None] | None:
        """Sends the store's greeting (AUTH, SELECT), if it has one."""

    def send(self, task: _StoreTask) -> Awaitable[bool]:
        """Sends the task's prepared request; resolves to whether the task is done."""

    def close(self) -> None:
        """Drops the connection; waiting requests fail."""

    def flush(self) -> None:
        """Writes the requests queued in this loop iteration."""

    @property
    def usable(self) -> bool: ...
    @property
    def in_flight(self) -> int:
        """How many requests wait for replies."""
