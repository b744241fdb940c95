"""Internal: a cookie whose ``Set-Cookie`` line tornsession made (``cookie_jar.rs``).

Tornado's ``flush()`` writes each cookie of the handler's ``_new_cookie`` jar as its
``OutputString()``. A ``Morsel`` filled through ``Morsel.__setitem__`` (as Tornado's
``set_cookie`` fills it) checks every attribute as it is set and formats the line again at
flush, some 3 µs that a ``CookieStore`` pays on every write. This one is filled with the
attributes as they are and carries the finished line, byte for byte what Tornado's own
``set_cookie`` writes (``tests/test_cookie_line.py``). It reads as Tornado's morsel would; once
an app changes its attributes, or a copy lost the line, ``Morsel``'s own formatting takes over.
"""

from __future__ import annotations

from http.cookies import Morsel
from typing import Any


class CookieLine(Morsel[str]):
    """A ``Morsel`` and the line ``OutputString()`` gives while its attributes are as made."""

    _line: str | None = None
    _attributes: dict[str, Any] | None = None

    def __init__(self, key: str, value: str, line: str, attributes: dict[str, Any]) -> None:
        # Not Morsel.__init__ and set(): ``attributes`` holds every key a Morsel has, checked.
        dict.update(self, attributes)
        self._key = key
        self._value = value
        self._coded_value = value
        self._line = line
        self._attributes = attributes

    def OutputString(self, attrs: Any = None) -> str:
        if attrs is None and self._line is not None and dict.__eq__(self, self._attributes):
            return self._line
        return super().OutputString(attrs)
