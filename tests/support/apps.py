"""What the apps under tests/apps share: their command line (``--port``, and ``--store KIND``
with where the store is), the store it names, and serving on the port it names (``--port 0``:
one the system picks, printed as "listening on PORT" for the test that started the process)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornsession

from support.stores import DictStore


def store_parser(kinds: list[str], timeout: float | None = None) -> argparse.ArgumentParser:
    """``--port``, ``--store`` (one of ``kinds``) and where that store is."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True, choices=kinds)
    parser.add_argument("--path", help="file store folder or SQLite database")
    parser.add_argument("--url", help="Redis URL; Redis Cluster or memcached: comma-separated")
    parser.add_argument("--servers", nargs="*", default=[], help="memcached servers")
    parser.add_argument("--durable", action="store_true", help="file and SQLite: fsync each save")
    parser.add_argument("--timeout", type=float, default=timeout, help="Redis and memcached")
    return parser


def store_from_args(
    args: argparse.Namespace, python: Callable[[], Any] = DictStore, **network: Any
) -> Any:
    """The store ``--store`` names; ``network`` options go to Redis and memcached."""
    kind = args.store
    if kind == "memory":
        return tornsession.MemoryStore()
    if kind == "file":
        return tornsession.FileStore(args.path, durable=args.durable)
    if kind == "sqlite":
        return tornsession.SqliteStore(args.path, durable=args.durable)
    if kind == "redis":
        return tornsession.RedisStore(args.url, **network)
    if kind == "cluster":
        return tornsession.RedisClusterStore(args.url.split(","), **network)
    if kind == "memcached":
        return tornsession.MemcachedStore(args.servers or args.url.split(","), **network)
    if kind == "python":
        return python()
    raise SystemExit(f"unknown store {kind!r}")


def serve_forever(port: int, make_app: Callable[[int], tornado.web.Application]) -> None:
    """Serves ``make_app(bound_port)`` on 127.0.0.1 until the process is ended."""
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    bound: int = sockets[0].getsockname()[1]
    app = make_app(bound)

    async def serve() -> None:
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        print(f"listening on {bound}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())
