"""In-process cost of one session cycle, with timeit, for each implementation and store.

    python -m bench.inprocess --impl tornsession-memory --impl reference-file ... [--json]

A cycle is what a request does with its session: build a tornado RequestHandler for a request
carrying the session's cookies (Tornado's real RequestHandler on an HTTPServerRequest without a
socket), load the session, read a key, write a key, save (``write``); or load and read only
(``read``). The cost of building the bare handler is measured the same way and subtracted
(``net``). The tornsession and reference implementations run on the main interpreter, the peers
(torndsession, pycket) on the peers venv's.

tornsession's ``SessionMixin`` is not timed here: it loads in an async ``prepare()`` and saves
in ``finish()``, which need an event loop and a connection that takes the response, so its
cycle would not be the same cycle as the others'. The wrk part measures it end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import timeit
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import tornado.web
from tornado.httputil import HTTPConnection, HTTPHeaders, HTTPServerRequest

from bench.app import (
    COMPACT_VARIANTS,
    COOKIE_VARIANTS,
    FLOOR_ASYNCIO_REDIS,
    FLOOR_DICT,
    HOST,
    MIXIN_VARIANTS,
    NO_METRICS_VARIANTS,
    NONE_WITH_COOKIE,
    OLD_VARIANTS,
    SECRET,
    VARIANTS,
    pycket_handlers,
    torndsession_handlers,
    tornsession_manager,
)

# Every variant that has a session (the no-session ones have no cycle to time), but the mixin
# (see above), the old-* ones (another interpreter's tornsession, compared end to end only) and
# the floors (end to end only).
IMPLS = tuple(
    v
    for v in VARIANTS
    if v not in ("none", NONE_WITH_COOKIE, "cookies-only", "floor-redis")
    and v not in (FLOOR_DICT, FLOOR_ASYNCIO_REDIS)
    and v not in MIXIN_VARIANTS
    and v not in COMPACT_VARIANTS
    and v not in NO_METRICS_VARIANTS
    and v not in COOKIE_VARIANTS[1:]  # the CookieStore mixin; its drop-in twin is timed
    and v not in OLD_VARIANTS
)


class FakeConnection(HTTPConnection):
    """What RequestHandler.__init__ needs of a connection: nothing is ever sent."""

    def set_close_callback(self, callback: Any) -> None:
        pass


def cookie_header(handler: tornado.web.RequestHandler) -> str:
    """The Cookie header a browser would send back after this handler's response."""
    jar: SimpleCookie = getattr(handler, "_new_cookie", None) or SimpleCookie()
    return "; ".join(f"{name}={morsel.coded_value}" for name, morsel in jar.items())


class Bench:
    """Builds handlers of one class for requests carrying one session's cookies."""

    def __init__(self, settings: dict[str, Any], handler_cls: type[tornado.web.RequestHandler]):
        self.app = tornado.web.Application([], cookie_secret=SECRET, **settings)
        self.handler_cls = handler_cls
        self.cookies = ""

    def handler(self) -> tornado.web.RequestHandler:
        headers = HTTPHeaders()
        if self.cookies:
            headers["Cookie"] = self.cookies
        request = HTTPServerRequest(
            method="GET", uri="/", headers=headers, connection=FakeConnection()
        )
        return self.handler_cls(self.app, request)


def cycles(
    impl: str, args: argparse.Namespace
) -> tuple[Bench, Callable[[], Any], Callable[[], Any]]:
    """(bench, write cycle, read cycle) for one implementation and store."""
    ns = argparse.Namespace(
        data_dir=tempfile.mkdtemp(prefix="tornsession-inproc-"),
        redis_port=args.redis_port,
        memcached_port=args.memcached_port,
    )
    if impl.startswith("tornsession-") or impl == "reference-file":
        if impl == "reference-file":
            from bench import reference_session as module

            os.makedirs(f"{ns.data_dir}/files")
            manager: Any = module.TornadoSessionManager(SECRET, f"{ns.data_dir}/files")
        else:
            import tornsession as module  # type: ignore[no-redef]

            manager = tornsession_manager(impl.removeprefix("tornsession-"), ns)
        bench = Bench({}, tornado.web.RequestHandler)

        def write() -> Any:
            h = bench.handler()
            s = module.TornadoSession(manager, h)
            s["n"] = s.get("n", 0) + 1
            s.save()
            return h

        def read() -> Any:
            h = bench.handler()
            s = module.TornadoSession(manager, h)
            return s.get("n", 0)

        return bench, write, read

    if impl.startswith("torndsession-"):
        driver = impl.removeprefix("torndsession-")
        if driver == "memory":
            driver_settings: dict[str, Any] = {}
        elif driver == "file":
            driver_settings = {"host": f"{ns.data_dir}/files"}
        else:
            driver_settings = {"host": HOST, "port": args.redis_port, "db": 0}
        session = {
            "driver": driver,
            "driver_settings": driver_settings,
            "force_persistence": False,
            "cache_driver": True,
        }
        write_cls, _ = torndsession_handlers()
        bench = Bench({"session": session}, write_cls)
        if driver == "memory":
            driver_settings["host"] = bench.app

        def t_write() -> Any:
            h: Any = bench.handler()
            h.session["n"] = h.session.get("n", 0) + 1
            h.on_finish()  # SessionBaseHandler: flush() the dirty session
            return h

        def t_read() -> Any:
            h: Any = bench.handler()
            n = h.session.get("n", 0)
            h.on_finish()  # not dirty: writes nothing
            return n

        return bench, t_write, t_read

    if impl.startswith("pycket-"):
        engine = impl.removeprefix("pycket-")
        if engine == "redis":
            storage: dict[str, Any] = {"host": HOST, "port": args.redis_port, "db_sessions": 0}
        else:
            storage = {"servers": [f"{HOST}:{args.memcached_port}"]}
        write_cls, _ = pycket_handlers()
        bench = Bench({"pycket": {"engine": engine, "storage": storage}}, write_cls)

        def p_write() -> Any:
            h: Any = bench.handler()
            h.session["n"] = h.session.get("n", 0) + 1
            return h

        def p_read() -> Any:
            h: Any = bench.handler()
            return h.session.get("n", 0)

        return bench, p_write, p_read

    raise SystemExit(f"unknown implementation {impl!r}")


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """Best of 5 timeit repeats, each about ``seconds`` long, in µs per call."""
    timer = timeit.Timer(fn)
    number, took = timer.autorange()
    number = max(1, int(number * seconds / max(took, 1e-9)))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def measure(impl: str, args: argparse.Namespace) -> dict[str, float]:
    bench, write, read = cycles(impl, args)
    first = write()  # a new session: its cookies go into every later request
    bench.cookies = cookie_header(first)
    assert bench.cookies, f"{impl}: the first save set no cookie"
    # CookieStore sends the session back in a new cookie at every write: the next request's.
    bench.cookies = cookie_header(write()) or bench.cookies
    assert int(read()) >= 2, f"{impl}: the session did not keep its counter"
    handler_us = per_call_us(bench.handler, args.seconds)
    write_us = per_call_us(write, args.seconds)
    read_us = per_call_us(read, args.seconds)
    return {
        "handler_us": handler_us,
        "write_us": write_us,
        "read_us": read_us,
        "write_net_us": write_us - handler_us,
        "read_net_us": read_us - handler_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", action="append", choices=IMPLS, required=True)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--memcached-port", type=int, default=11211)
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one timeit repeat")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {impl: measure(impl, args) for impl in args.impl}
    if args.json:
        print(json.dumps(results))
    else:
        for impl, r in results.items():
            print(
                f"{impl:24} handler {r['handler_us']:7.1f} µs  write {r['write_net_us']:7.1f} µs"
                f"  read {r['read_net_us']:7.1f} µs (net of the handler)"
            )


if __name__ == "__main__":
    main()
