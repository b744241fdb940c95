"""One visitor over real HTTP to 127.0.0.1: keep-alive connections and a cookie jar, as a browser
keeps them."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from http.cookies import SimpleCookie
from typing import Any

from support.threads import run_concurrently

HOST = "127.0.0.1"


class Browser:
    """A cookie jar and one keep-alive connection per port. Paths go to ``port``; a full URL
    (``http://127.0.0.1:PORT/path``) to its own port, with the same cookies, as a browser sends
    a host's cookies to every port of it."""

    def __init__(self, port: int = 0, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.connections: dict[int, http.client.HTTPConnection] = {}
        self.last_set_cookie: list[str] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> http.client.HTTPConnection:
        """The connection to ``port``."""
        return self._connection(self.port)

    def _connection(self, port: int) -> http.client.HTTPConnection:
        if port not in self.connections:
            self.connections[port] = http.client.HTTPConnection(HOST, port, timeout=self.timeout)
        return self.connections[port]

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        port = self.port
        if "://" in path:
            url = urllib.parse.urlsplit(path)
            assert url.scheme == "http" and url.hostname == HOST and url.port, path
            port, path = url.port, url.path + (f"?{url.query}" if url.query else "")
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = self._connection(port)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        self.last_set_cookie = response.headers.get_all("Set-Cookie") or []
        for header in self.last_set_cookie:
            for name, morsel in SimpleCookie(header).items():
                if (morsel["expires"] and "1970" in morsel["expires"]) or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.coded_value
        return response.status, text

    def get(self, path: str) -> tuple[int, str]:
        return self.request("GET", path)

    def get_json(self, path: str) -> dict[str, Any]:
        """A GET that must answer 200 with a JSON object."""
        status, text = self.get(path)
        assert status == 200, (status, text)
        data: dict[str, Any] = json.loads(text)
        return data

    def status(self, path: str) -> int:
        return self.get(path)[0]

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()


def hammer_one_session(port: int, path: str, connections: int, requests: int) -> dict[str, str]:
    """One session, made by a first visit to ``path``, then visited at ``path`` by
    ``connections`` keep-alive connections at once, ``requests`` times each (every answer 200);
    the session's cookies."""
    with Browser(port) as first:
        status, body = first.get(path)
        assert status == 200, body
        cookies = dict(first.cookies)

    def visitor(_: int) -> None:
        with Browser(port) as browser:
            browser.cookies = dict(cookies)
            for _ in range(requests):
                status, body = browser.get(path)
                assert status == 200, body

    run_concurrently(visitor, connections)
    return cookies
