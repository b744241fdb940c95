"""Internal: a cookie whose ``Set-Cookie`` line tornsession made (``cookie_jar.rs``).

Tornado's ``flush()`` writes each cookie of the handler's ``_new_cookie`` jar as its
``OutputString()``. A real ``Morsel`` would check every attribute as it is set and format the
line (with the expiry through ``email.utils``) again at flush, some 3 µs that a ``CookieStore``
pays on every write; this one carries the finished line, byte for byte what Tornado's own
``set_cookie`` writes (``tests/test_cookie_line.py``). Tornado's ``set_cookie`` and
``clear_cookie`` for the same name replace it, as they replace any morsel.
"""

from __future__ import annotations

from http.cookies import Morsel


class CookieLine(Morsel[str]):
    """The name and value as a ``Morsel`` has them, and the line ``OutputString()`` gives."""

    def __init__(self, key: str, value: str, line: str) -> None:
        # No Morsel.__init__: its attributes live in the line, not in the dict.
        self._key = key
        self._value = value
        self._coded_value = value
        self._line = line

    def OutputString(self, attrs: object = None) -> str:
        return self._line
