"""tornsession: sessions for Tornado web apps, with a Rust core.

A drop-in replacement for the classic ``session.py``: change ``import session`` to
``import tornsession as session`` and nothing else.
"""

from tornsession._core import (
    CookieStore,
    FileStore,
    InvalidSessionException,
    MemcachedStore,
    MemoryStore,
    RedisClusterStore,
    RedisSentinelStore,
    RedisStore,
    Session,
    SessionBusy,
    SessionConflict,
    SessionInfo,
    SessionManager,
    SessionStoreError,
    SqliteStore,
    TornadoSessionManager,
    WeakSecretWarning,
    __version__,
)
from tornsession._session import TornadoSession
from tornsession.application import session_manager_of
from tornsession.mixin import SessionMixin
from tornsession.protocols import RequestHandlerProtocol, SessionStoreProtocol
from tornsession.store_url import store_from_url

__all__ = [
    "CookieStore",
    "FileStore",
    "InvalidSessionException",
    "MemcachedStore",
    "MemoryStore",
    "RedisClusterStore",
    "RedisSentinelStore",
    "RedisStore",
    "RequestHandlerProtocol",
    "Session",
    "SessionBusy",
    "SessionConflict",
    "SessionInfo",
    "SessionManager",
    "SessionMixin",
    "SessionStoreError",
    "SessionStoreProtocol",
    "SqliteStore",
    "TornadoSession",
    "TornadoSessionManager",
    "WeakSecretWarning",
    "__version__",
    "session_manager_of",
    "store_from_url",
]
