"""The interfaces tornsession talks to: a store object, and a Tornado request handler."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SessionStoreProtocol(Protocol):
    """What any Python object given as ``store=`` must provide (a redis-py or pymemcache client
    wrapped in three methods, for example).

    Keys are ``"tornsession:" + session_id``; values are the serialized session (JSON bytes).
    An exception from any method becomes ``SessionStoreError`` for the request.
    """

    def get(self, key: str, /) -> bytes | None:
        """The stored value, or None when there is none."""

    def set(self, key: str, value: bytes, ttl: int | None, /) -> Any:
        """Store ``value`` under ``key``, expiring after ``ttl`` whole seconds (None: never)."""

    def delete(self, key: str, /) -> Any:
        """Remove ``key``; removing a missing key is not an error."""

    # Optional, not part of the checked protocol:
    # - touch(key, ttl) -> Any: move the expiry without rewriting (called on loads);
    # - compare_and_set(key, expected: bytes | None, value, ttl) -> bool: store ``value`` only if
    #   the key still holds ``expected`` (None: only if absent), atomically; needed for
    #   ``detect_conflicts=True``.


@runtime_checkable
class RequestHandlerProtocol(Protocol):
    """The part of ``tornado.web.RequestHandler`` that tornsession uses."""

    def get_secure_cookie(self, name: str, /) -> bytes | None:
        """The verified value of a signed cookie, or None."""

    def set_secure_cookie(self, name: str, value: str, *args: Any, **kwargs: Any) -> None:
        """Sign and set a cookie (tornsession passes expires_days, path, httponly ...)."""
