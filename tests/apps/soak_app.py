"""A Tornado app for the soak test: GET /inc increments the session's counter and answers it.

    python -m tests.apps.soak_app --port N --store memory|file|sqlite|redis|memcached [--path P]
        [--url U] [--servers S ...]

Prints "listening on PORT" once it accepts connections
(--port 0: a free port).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornsession

SECRET = "soak-test-secret"


class IncHandler(tornado.web.RequestHandler):
    def initialize(self, manager: tornsession.TornadoSessionManager) -> None:
        self.session = tornsession.TornadoSession(manager, self)

    def get(self) -> None:
        self.session["count"] = self.session.get("count", 0) + 1
        self.session["history"] = [*self.session.get("history", [])[-20:], self.session["count"]]
        self.session.save()
        self.write({"count": self.session["count"]})


def make_store(args: argparse.Namespace) -> Any:
    if args.store == "memory":
        return tornsession.MemoryStore()
    if args.store == "sqlite":
        return tornsession.SqliteStore(args.path)
    if args.store == "redis":
        return tornsession.RedisStore(args.url)
    if args.store == "memcached":
        return tornsession.MemcachedStore(args.servers)
    return None  # file: session_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--store", required=True, choices=["memory", "file", "sqlite", "redis", "memcached"]
    )
    parser.add_argument("--path")
    parser.add_argument("--url")
    parser.add_argument("--servers", nargs="*", default=[])
    args = parser.parse_args()
    store = make_store(args)
    if store is None:
        manager = tornsession.TornadoSessionManager(SECRET, args.path)
    else:
        manager = tornsession.TornadoSessionManager(SECRET, store=store)
    app = tornado.web.Application(
        [(r"/inc", IncHandler, {"manager": manager})], cookie_secret=SECRET
    )

    # --port 0: the system picks a free port, printed for the test that started this process.
    sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")

    async def serve() -> None:
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        print(f"listening on {sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
