"""The interfaces tornsession talks to: a store object, and a Tornado request handler."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SessionStoreProtocol(Protocol):
    """What any Python object given as ``store=`` must provide (a redis-py or pymemcache client
    wrapped in three methods, for example).

    Keys are ``"tornsession:" + session_id``; values are the serialized session (JSON bytes).
    An exception from any method becomes ``SessionStoreError`` for the request (with the session
    id in its message replaced by a salted hash: messages reach logs). A value longer than the
    manager's read limit is treated as lost (a fresh session), checked after ``get``.

    Saving a session that was loaded from the store must not bring back a record another
    request deleted meanwhile. A store with ``set_if_exists`` does that atomically if its method
    is atomic (Redis: ``SET key value XX EX ttl``; memcached: ``replace``). Without it,
    tornsession calls ``get(key)`` and then ``set(...)`` only if a value was found: two calls, so
    a delete landing between them is undone (not atomic).
    """

    def get(self, key: str, /) -> bytes | None:
        """The stored value, or None when there is none."""

    def set(self, key: str, value: bytes, ttl: int | None, /) -> Any:
        """Store ``value`` under ``key``, expiring after ``ttl`` whole seconds (None: never)."""

    def delete(self, key: str, /) -> Any:
        """Remove ``key``; removing a missing key is not an error."""

    # Optional, not part of the checked protocol:
    # - touch(key, ttl) -> Any: move the expiry without rewriting (called on loads);
    # - set_if_exists(key, value, ttl) -> bool: store ``value`` only if ``key`` exists,
    #   atomically; False, writing nothing, when it does not (see above for the fallback);
    # - compare_and_set(key, expected: bytes | None, value, ttl) -> bool: store ``value`` only if
    #   the key still holds ``expected`` (None: only if absent), atomically; needed for
    #   ``detect_conflicts=True``.
    # - per-user sessions (``Session.set_user`` and the manager's ``user_sessions``,
    #   ``destroy_user_sessions``, ``destroy_session``) need all three of:
    #   add_to_user(user_key, key, ttl) -> Any: file ``key`` under ``user_key`` (32 hex digits),
    #   for ``ttl`` seconds (None: as long as the record);
    #   remove_from_user(user_key, key) -> Any: take it out (a missing one is not an error);
    #   user_keys(user_key) -> list[str]: the keys filed under it (entries whose record is gone
    #   are taken out by tornsession as it finds them).
    #   Without them, those calls raise NotImplementedError.


@runtime_checkable
class RequestHandlerProtocol(Protocol):
    """The part of ``tornado.web.RequestHandler`` that tornsession uses."""

    def get_secure_cookie(self, name: str, /) -> bytes | None:
        """The verified value of a signed cookie, or None."""

    def set_secure_cookie(self, name: str, value: str, *args: Any, **kwargs: Any) -> None:
        """Sign and set a cookie (tornsession passes expires_days, path, httponly ...)."""
