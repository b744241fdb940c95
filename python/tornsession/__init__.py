"""tornsession: sessions for Tornado web apps, with a Rust core.

A drop-in replacement for the classic ``session.py``: change ``import session`` to
``import tornsession as session`` and nothing else.
"""

from tornsession._core import (
    FileStore,
    InvalidSessionException,
    MemoryStore,
    Session,
    SessionManager,
    SessionStoreError,
    TornadoSession,
    TornadoSessionManager,
    __version__,
)
from tornsession.protocols import RequestHandlerProtocol, SessionStoreProtocol

__all__ = [
    "FileStore",
    "InvalidSessionException",
    "MemoryStore",
    "RequestHandlerProtocol",
    "Session",
    "SessionManager",
    "SessionStoreError",
    "SessionStoreProtocol",
    "TornadoSession",
    "TornadoSessionManager",
    "__version__",
]
