"""A stand-in for a Tornado RequestHandler, for the API tests that need no server."""

from __future__ import annotations

from typing import Any


class CookieJarHandler:
    """Just the cookie methods of a RequestHandler, over a cookie jar (``cookies``); not
    'started' (no ``path_args``), like a handler whose get() has not begun."""

    def __init__(self) -> None:
        self.cookies: dict[str, bytes] = {}

    def get_secure_cookie(self, name: str) -> bytes | None:
        return self.cookies.get(name)

    def set_secure_cookie(self, name: str, value: str, **kwargs: Any) -> None:
        self.cookies[name] = value.encode()

    def clear_cookie(self, name: str, **kwargs: Any) -> None:
        self.cookies.pop(name, None)
