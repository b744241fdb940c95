"""Python store objects for the tests (a store is any object with get/set/delete): one over a
dict, and the same with each optional method of SessionStoreProtocol. Standard library only, so
the apps under tests/apps use them too."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tornsession


def saved_session(manager: tornsession.SessionManager, /, **items: Any) -> tornsession.Session:
    """A new session of ``manager`` holding ``items``, saved."""
    s = manager.get()
    s.update(items)
    manager.set(s)
    return s


class DictStore:
    """A Python store over a dict that records its calls in ``calls``; each call waits ``delay``
    seconds first (a slow store)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.data: dict[str, bytes] = {}
        self.delay = delay
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def _call(self, name: str) -> threading.Lock:
        """Waits ``delay`` (outside the lock: slow calls overlap), records ``name``; the lock."""
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(name)
        return self.lock

    def get(self, key: str) -> bytes | None:
        with self._call("get"):
            return self.data.get(key)

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        with self._call("set"):
            self.data[key] = value

    def delete(self, key: str) -> None:
        with self._call("delete"):
            self.data.pop(key, None)

    def writes(self) -> int:
        return sum(call != "get" for call in self.calls)


class AtomicDictStore(DictStore):
    """A Python store with the optional set_if_exists."""

    def set_if_exists(self, key: str, value: bytes, ttl: int | None) -> bool:
        with self._call("set_if_exists"):
            if key not in self.data:
                return False
            self.data[key] = value
            return True


class CasDictStore(DictStore):
    """A Python store with the optional compare_and_set."""

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: int | None
    ) -> bool:
        with self._call("compare_and_set"):
            if self.data.get(key) != expected:
                return False
            self.data[key] = value
            return True


class UserDictStore(DictStore):
    """A Python store with the optional per-user methods of SessionStoreProtocol."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, set[str]] = {}

    def add_to_user(self, user_key: str, key: str, ttl: int | None) -> None:
        self.users.setdefault(user_key, set()).add(key)

    def remove_from_user(self, user_key: str, key: str) -> None:
        self.users.get(user_key, set()).discard(key)

    def user_keys(self, user_key: str) -> list[str]:
        return sorted(self.users.get(user_key, set()))
