"""A tiny Tornado app counting visits in a session, for tests running two of them on one store.

    python shared_store_app.py --port 8001 --store redis --url redis://127.0.0.1:6379/0

GET /count increments the session's counter and answers it with this process's port; a store
failure answers 500 (Tornado's default for an uncaught exception).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornsession

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


def make_store(args: argparse.Namespace) -> Any:
    if args.store == "sqlite":
        return tornsession.SqliteStore(args.path)
    if args.store == "redis":
        return tornsession.RedisStore(args.url, timeout=args.timeout)
    if args.store == "memcached":
        return tornsession.MemcachedStore(args.servers, timeout=args.timeout)
    if args.store == "redis-py":
        return RedisPyStore(args.url, args.timeout)
    if args.store == "file":
        return None  # session_dir= below
    raise SystemExit(f"unknown store {args.store!r}")


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--store", required=True, choices=["sqlite", "redis", "redis-py", "memcached", "file"]
    )
    parser.add_argument("--path", help="sqlite database file, or file store folder")
    parser.add_argument("--url", help="redis URL")
    parser.add_argument("--servers", nargs="*", default=[], help="memcached servers")
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    store = make_store(args)
    if store is None:
        manager = tornsession.TornadoSessionManager(SECRET, args.path, idle_timeout=3600)
    else:
        manager = tornsession.TornadoSessionManager(SECRET, store=store, idle_timeout=3600)
    # --port 0: the system picks a free port, printed for the test that started this process.
    sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")
    port = sockets[0].getsockname()[1]
    app = tornado.web.Application(
        [(r"/count", CountHandler, {"manager": manager, "port": port})],
        cookie_secret=SECRET,
    )

    async def serve() -> None:
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        print(f"listening on {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
