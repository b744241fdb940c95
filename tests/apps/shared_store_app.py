"""A tiny Tornado app counting visits in a session, for tests running two of them on one store.

    python -m tests.apps.shared_store_app --port 8001 --store redis --url redis://127.0.0.1:6379/0

GET /count increments the session's counter and answers it with this process's port; a store
failure answers 500 (Tornado's default for an uncaught exception).
"""

from __future__ import annotations

from typing import Any

import tornado.web
import tornsession
from support.apps import serve_forever, store_from_args, store_parser

SECRET = "shared-store-test-secret"


class RedisPyStore:
    """A redis-py client behind the three methods tornsession takes from any Python object."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def get(self, key: str) -> bytes | None:
        value = self.client.get(key)
        assert value is None or isinstance(value, bytes)
        return value

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        self.client.set(key, value, ex=ttl)

    def delete(self, key: str) -> None:
        self.client.delete(key)


class CountHandler(tornado.web.RequestHandler):
    def initialize(self, manager: tornsession.TornadoSessionManager, port: int) -> None:
        self.manager = manager
        self.port = port

    def get(self) -> None:
        session = self.manager.get(self)
        session["count"] = session.get("count", 0) + 1
        self.manager.set(self, session)
        self.write({"count": session["count"], "port": self.port})


def main() -> None:
    kinds = ["sqlite", "redis", "redis-py", "memcached", "file"]
    args = store_parser(kinds, timeout=1.0).parse_args()
    if args.store == "file":
        options: dict[str, Any] = {"session_dir": args.path}
    elif args.store == "redis-py":
        options = {"store": RedisPyStore(args.url, args.timeout)}
    else:
        options = {"store": store_from_args(args, timeout=args.timeout)}
    manager = tornsession.TornadoSessionManager(SECRET, idle_timeout=3600, **options)
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
            [(r"/count", CountHandler, {"manager": manager, "port": port})], cookie_secret=SECRET
        ),
    )


if __name__ == "__main__":
    main()
