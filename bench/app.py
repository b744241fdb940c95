"""One Tornado app for the benchmarks, with the session library and store picked by a flag.

    python -m bench.app --variant tornsession-memory --port 8001
    python -m bench.app --variant pycket-redis --port 8002 --redis-port 6380   # peers venv

Two handlers: ``GET /write`` increments a counter in the session and saves it (the seed's
pattern), ``GET /read`` reads it and writes it out. Prints ``listening on PORT`` when ready.
Listens on 127.0.0.1 only.

tornsession is measured two ways: ``tornsession-<store>`` is the original module's usage
(``TornadoSession(manager, self)`` in ``__init__``, an explicit ``save()``), and
``tornsession-mixin-<store>`` is ``SessionMixin`` (loaded in ``prepare()``, saved on
``finish()`` when changed). ``old-tornsession-<store>`` is the drop-in usage again, meant to run
under another install of tornsession (an earlier release: ``bench.run --old-python``).
``floor-redis`` is the least a Redis-backed session can do: a plain (unsigned) id cookie,
redis-py ``GET``/``SET`` of a JSON value, on the IOLoop thread as the drop-in's load and save.
``floor-asyncio-redis`` is the same over one pipelined asyncio connection (RESP by hand, replies
matched in order), ``floor-dict-json`` the least an in-process session can do (a plain id
cookie, a module-level dict of JSON strings). ``none-with-pair-cookies`` is the no-session app
again: bench/run.py sends it a Cookie header like tornsession's two signed cookies (366 bytes).
``tornsession-mixin-memory-compact`` is the mixin on a MemoryStore with
``cookie_format="compact"`` (issue 20); where the manager lacks that option the app prints
``not available: ...`` and exits with status 3 (``--check`` does only that test).
``tornsession-cookie`` and ``tornsession-mixin-cookie`` are the drop-in and the mixin on
``CookieStore`` (issue 21: the session sealed in its cookie, nothing on the server); likewise "not
available" where tornsession has no ``CookieStore``.

The tornsession and reference variants run on the main interpreter; the torndsession and pycket
variants need the peers venv (``bench/.venv-peers``), where tornsession is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import json
import os
import signal
import sys
import tempfile
import uuid
from collections import deque
from typing import Any

import tornado.web

# 32 bytes or more: a shorter secret makes tornsession warn (WeakSecretWarning).
SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
HOST = "127.0.0.1"
# bench.app's exit status when the installed tornsession lacks what the variant needs.
NOT_AVAILABLE_STATUS = 3

TORNSESSION_STORES = ("memory", "sqlite", "file", "redis", "memcached")
DROP_IN_VARIANTS = tuple(f"tornsession-{store}" for store in TORNSESSION_STORES)
MIXIN_VARIANTS = tuple(f"tornsession-mixin-{store}" for store in TORNSESSION_STORES)
# Variants on a manager option an earlier (or the current) tornsession may lack: "not available".
COMPACT_VARIANTS = ("tornsession-mixin-memory-compact",)
# The mixin on MemoryStore with its metrics off (issue 22: what counting costs).
NO_METRICS_VARIANTS = ("tornsession-mixin-memory-nometrics",)
# The drop-in and the mixin on CookieStore (issue 21): no old twins (no earlier release has it).
COOKIE_VARIANTS = ("tornsession-cookie", "tornsession-mixin-cookie")
# The drop-in and mixin variants again, run by another interpreter with an earlier tornsession
# installed.
OLD_VARIANTS = tuple(
    f"old-{variant}" for variant in (*DROP_IN_VARIANTS, *MIXIN_VARIANTS, *COMPACT_VARIANTS)
)
# The no-session app, sent a Cookie header like tornsession's two signed cookies by bench/run.py.
NONE_WITH_COOKIE = "none-with-pair-cookies"
# The least a session layer can do in process, and over one pipelined asyncio Redis connection.
FLOOR_DICT = "floor-dict-json"
FLOOR_ASYNCIO_REDIS = "floor-asyncio-redis"
VARIANTS = (
    "none",
    NONE_WITH_COOKIE,
    "cookies-only",
    *DROP_IN_VARIANTS,
    *MIXIN_VARIANTS,
    *COMPACT_VARIANTS,
    *NO_METRICS_VARIANTS,
    *COOKIE_VARIANTS,
    *OLD_VARIANTS,
    FLOOR_DICT,
    FLOOR_ASYNCIO_REDIS,
    "floor-redis",
    "reference-file",
    "torndsession-memory",
    "torndsession-file",
    "torndsession-redis",
    "pycket-redis",
    "pycket-memcached",
)
PEER_VARIANTS = tuple(v for v in VARIANTS if v.startswith(("torndsession", "pycket")))


# --- no session ----------------------------------------------------------------------------


class PlainWrite(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("1")


class PlainRead(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("0")


class CookiesOnlyWrite(tornado.web.RequestHandler):
    """What the original does with cookies on a saved request, and nothing else: no store."""

    def get(self) -> None:
        session_id = self.get_secure_cookie("session_id") or b"0" * 32
        digest = self.get_secure_cookie("hmac_digest") or b"0" * 64
        self.set_secure_cookie("session_id", session_id)
        self.set_secure_cookie("hmac_digest", digest)
        self.write("1")


class CookiesOnlyRead(tornado.web.RequestHandler):
    """What the original does with cookies on a request that only reads: two signed reads."""

    def get(self) -> None:
        self.get_secure_cookie("session_id")
        self.get_secure_cookie("hmac_digest")
        self.write("0")


# --- the redis-py floor: a plain cookie, GET/SET of JSON, no signing ------------------------


FLOOR_COOKIE = "floor_sid"


class FloorHandler(tornado.web.RequestHandler):
    """A session id in a plain cookie (a new one when missing), the data as JSON under it."""

    def session_key(self) -> str:
        sid = self.get_cookie(FLOOR_COOKIE)
        if not sid:
            sid = uuid.uuid4().hex
            self.set_cookie(FLOOR_COOKIE, sid)
        return f"floor:{sid}"


class FloorRedisHandler(FloorHandler):
    def load(self, key: str) -> dict[str, Any]:
        raw = self.application.redis.get(key)  # type: ignore[attr-defined]
        data: dict[str, Any] = json.loads(raw) if raw else {}
        return data


class FloorRedisWrite(FloorRedisHandler):
    def get(self) -> None:
        key = self.session_key()
        data = self.load(key)
        data["n"] = data.get("n", 0) + 1
        self.application.redis.set(key, json.dumps(data))  # type: ignore[attr-defined]
        self.write(str(data["n"]))


class FloorRedisRead(FloorRedisHandler):
    def get(self) -> None:
        self.write(str(self.load(self.session_key()).get("n", 0)))


# --- the in-process floor: a plain cookie, a module-level dict of JSON strings ---------------


FLOOR_DICT_STORE: dict[str, str] = {}


class FloorDictWrite(FloorHandler):
    def get(self) -> None:
        key = self.session_key()
        raw = FLOOR_DICT_STORE.get(key)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        data["n"] = data.get("n", 0) + 1
        FLOOR_DICT_STORE[key] = json.dumps(data)
        self.write(str(data["n"]))


class FloorDictRead(FloorHandler):
    def get(self) -> None:
        raw = FLOOR_DICT_STORE.get(self.session_key())
        data: dict[str, Any] = json.loads(raw) if raw else {}
        self.write(str(data.get("n", 0)))


# --- the pipelined asyncio Redis floor: one connection, RESP by hand --------------------------


class PipelinedRedis:
    """One asyncio connection to Redis: each command is written at once (no waiting for the
    previous reply), replies are matched to commands in order through a deque of futures.
    Hand-written on purpose: it is the floor a Redis session layer on asyncio is compared with."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected: asyncio.Future[None] | None = None
        self.pending: deque[asyncio.Future[bytes | None]] = deque()
        self.writer: asyncio.StreamWriter | None = None
        self.replies: asyncio.Task[None] | None = None  # kept: a task nobody holds may vanish

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.replies = asyncio.get_running_loop().create_task(self.read_replies(reader))

    async def command(self, *parts: bytes) -> bytes | None:
        if self.connected is None:
            self.connected = asyncio.ensure_future(self.connect())
        await self.connected
        assert self.writer is not None and self.replies is not None
        if self.replies.done():
            raise ConnectionError("redis closed the connection")
        frame = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        reply: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.pending.append(reply)
        self.writer.write(frame)  # 8 connections' worth of small commands: no drain needed
        return await reply

    async def read_replies(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            value: bytes | Exception | None = line[1:-2]  # +OK and the like
            if line[:1] == b"$":
                size = int(line[1:-2])
                value = None if size < 0 else (await reader.readexactly(size + 2))[:-2]
            elif line[:1] == b"-":
                value = RuntimeError(line[1:-2].decode())
            reply = self.pending.popleft()
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)
        for reply in self.pending:
            reply.set_exception(ConnectionError("redis closed the connection"))


class FloorAsyncioRedisWrite(FloorHandler):
    async def get(self) -> None:
        key = self.session_key().encode()
        redis: PipelinedRedis = self.application.redis  # type: ignore[attr-defined]
        raw = await redis.command(b"GET", key)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        data["n"] = data.get("n", 0) + 1
        await redis.command(b"SET", key, json.dumps(data).encode())
        self.write(str(data["n"]))


class FloorAsyncioRedisRead(FloorHandler):
    async def get(self) -> None:
        redis: PipelinedRedis = self.application.redis  # type: ignore[attr-defined]
        raw = await redis.command(b"GET", self.session_key().encode())
        data: dict[str, Any] = json.loads(raw) if raw else {}
        self.write(str(data.get("n", 0)))


# --- tornsession and the original module: TornadoSession(manager, self) in __init__ ---------


class OriginalStyleHandler(tornado.web.RequestHandler):
    """The original module's usage: the session is made in the handler's ``__init__``."""

    session_module: Any = None  # tornsession or bench.reference_session

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.application.session_manager  # type: ignore[attr-defined]
        self.session = self.session_module.TornadoSession(manager, self)


class OriginalStyleWrite(OriginalStyleHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.session.save()
        self.write(str(self.session["n"]))


class OriginalStyleRead(OriginalStyleHandler):
    def get(self) -> None:
        self.write(str(self.session.get("n", 0)))


# --- tornsession's SessionMixin: loaded in prepare(), saved in finish() when changed ---------


def mixin_handlers() -> tuple[type[tornado.web.RequestHandler], ...]:
    import tornsession

    class MixinWrite(tornsession.SessionMixin, tornado.web.RequestHandler):
        def get(self) -> None:
            self.session["n"] = self.session.get("n", 0) + 1
            self.write(str(self.session["n"]))

    class MixinRead(tornsession.SessionMixin, tornado.web.RequestHandler):
        def get(self) -> None:
            self.write(str(self.session.get("n", 0)))

    return (MixinWrite, MixinRead)


class NotAvailable(Exception):
    """The installed tornsession lacks what the variant needs (an option of a later release)."""


def tornsession_store(variant: str) -> str:
    """The store of a tornsession variant: ``redis`` for ``tornsession-mixin-redis``."""
    return (
        variant.removeprefix("old-")
        .removeprefix("tornsession-")
        .removeprefix("mixin-")
        .removesuffix("-compact")
    )


def compact_manager() -> Any:
    """A MemoryStore manager with ``cookie_format="compact"``; NotAvailable when the manager
    does not take that option (before issue 20)."""
    import tornsession

    # through a dict: the option is in the stubs of one release and not of the other
    options: dict[str, Any] = {"cookie_format": "compact"}
    try:
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.MemoryStore(), **options)
    except TypeError as e:
        raise NotAvailable(f"tornsession {tornsession.__version__}: {e}") from e


def uncounted_manager() -> Any:
    """A MemoryStore manager with ``metrics=False``; NotAvailable before issue 22."""
    import tornsession

    options: dict[str, Any] = {"metrics": False}
    try:
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.MemoryStore(), **options)
    except TypeError as e:
        raise NotAvailable(f"tornsession {tornsession.__version__}: {e}") from e


def tornsession_manager(store: str, args: argparse.Namespace) -> Any:
    import tornsession

    if store == "memory":
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.MemoryStore())
    if store == "sqlite":
        path = f"{args.data_dir}/sessions.sqlite3"
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.SqliteStore(path))
    if store == "file":
        return tornsession.TornadoSessionManager(SECRET, f"{args.data_dir}/tornsession-files")
    if store == "redis":
        url = f"redis://{HOST}:{args.redis_port}/0"
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.RedisStore(url))
    if store == "memcached":
        servers = [f"{HOST}:{args.memcached_port}"]
        return tornsession.TornadoSessionManager(SECRET, store=tornsession.MemcachedStore(servers))
    if store == "cookie":
        # through getattr: the class is in the stubs of one release and not of the other
        cookie_store = getattr(tornsession, "CookieStore", None)
        if cookie_store is None:
            raise NotAvailable(f"tornsession {tornsession.__version__} has no CookieStore")
        return tornsession.TornadoSessionManager(SECRET, store=cookie_store())
    raise SystemExit(f"unknown tornsession store {store!r}")


# --- peers: their mixins ---------------------------------------------------------------------


def counter_handlers(name: str, *bases: type) -> tuple[type[tornado.web.RequestHandler], ...]:
    """The benchmark's write and read handlers on a peer's session classes."""

    def write(self: Any) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.write(str(self.session.get("n")))

    def read(self: Any) -> None:
        self.write(str(self.session.get("n", 0)))

    return (type(f"{name}Write", bases, {"get": write}), type(f"{name}Read", bases, {"get": read}))


def torndsession_handlers() -> tuple[type[tornado.web.RequestHandler], ...]:
    """torndsession's SessionBaseHandler: SessionMixin, and a flush() of dirty data in on_finish."""
    base: Any = importlib.import_module("torndsession.sessionhandler").SessionBaseHandler
    return counter_handlers("Torndsession", base)


def pycket_handlers() -> tuple[type[tornado.web.RequestHandler], ...]:
    """pycket's SessionMixin: every get reads the store, every set reads and writes it."""
    mixin: Any = importlib.import_module("pycket.session").SessionMixin
    return counter_handlers("Pycket", tornado.web.RequestHandler, mixin)


# --- the application -------------------------------------------------------------------------


def make_app(args: argparse.Namespace) -> tornado.web.Application:
    variant: str = args.variant
    settings: dict[str, Any] = {"cookie_secret": SECRET}
    handlers: tuple[type[tornado.web.RequestHandler], ...]
    manager: Any = None
    if variant in ("none", NONE_WITH_COOKIE):
        handlers = (PlainWrite, PlainRead)
    elif variant == "cookies-only":
        handlers = (CookiesOnlyWrite, CookiesOnlyRead)
    elif variant == "floor-redis":
        import redis

        handlers = (FloorRedisWrite, FloorRedisRead)
        floor_redis = redis.Redis(host=HOST, port=args.redis_port, db=0)
    elif variant == FLOOR_DICT:
        handlers = (FloorDictWrite, FloorDictRead)
    elif variant == FLOOR_ASYNCIO_REDIS:
        handlers = (FloorAsyncioRedisWrite, FloorAsyncioRedisRead)
    elif variant.removeprefix("old-") in COMPACT_VARIANTS:
        manager = compact_manager()
        handlers = mixin_handlers()
    elif variant in NO_METRICS_VARIANTS:
        manager = uncounted_manager()
        handlers = mixin_handlers()
    elif variant.removeprefix("old-") in MIXIN_VARIANTS or variant == "tornsession-mixin-cookie":
        manager = tornsession_manager(tornsession_store(variant), args)
        handlers = mixin_handlers()
    elif variant in (*DROP_IN_VARIANTS, *OLD_VARIANTS, "tornsession-cookie", "reference-file"):
        if variant == "reference-file":
            from bench import reference_session as module

            folder = f"{args.data_dir}/reference-files"
            os.makedirs(folder, exist_ok=True)  # the original never creates its folder
            manager = module.TornadoSessionManager(SECRET, folder)
        else:
            import tornsession as module  # type: ignore[no-redef]

            manager = tornsession_manager(tornsession_store(variant), args)
        write_cls = type("Write", (OriginalStyleWrite,), {"session_module": module})
        read_cls = type("Read", (OriginalStyleRead,), {"session_module": module})
        handlers = (write_cls, read_cls)
    elif variant.startswith("torndsession-"):
        driver = variant.removeprefix("torndsession-")
        driver_settings: dict[str, Any]
        if driver == "memory":
            driver_settings = {}  # the application itself, set below
        elif driver == "file":
            driver_settings = {"host": f"{args.data_dir}/torndsession-files"}
        else:
            driver_settings = {"host": HOST, "port": args.redis_port, "db": 0}
        settings["session"] = {
            "driver": driver,
            "driver_settings": driver_settings,
            "force_persistence": False,  # SessionBaseHandler flushes dirty data in on_finish
            "cache_driver": True,
        }
        handlers = torndsession_handlers()
    elif variant.startswith("pycket-"):
        engine = variant.removeprefix("pycket-")
        storage: dict[str, Any]
        if engine == "redis":
            storage = {"host": HOST, "port": args.redis_port, "db_sessions": 0}
        else:
            storage = {"servers": [f"{HOST}:{args.memcached_port}"]}
        settings["pycket"] = {"engine": engine, "storage": storage}
        handlers = pycket_handlers()
    else:
        raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    app = tornado.web.Application([(r"/write", handlers[0]), (r"/read", handlers[1])], **settings)
    app.session_manager = manager  # type: ignore[attr-defined]
    if variant == "floor-redis":
        app.redis = floor_redis  # type: ignore[attr-defined]
    if variant == FLOOR_ASYNCIO_REDIS:
        app.redis = PipelinedRedis(args.redis_port)  # type: ignore[attr-defined]
    if variant == "torndsession-memory":
        settings["session"]["driver_settings"]["host"] = app
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--memcached-port", type=int, default=11211)
    parser.add_argument(
        "--data-dir", help="folder for file and SQLite stores (default: a temp dir)"
    )
    parser.add_argument("--profile", help="run under cProfile; dump the stats here on SIGTERM")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only build the app: exit 0, or print 'not available: ...' and exit 3",
    )
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = tempfile.mkdtemp(prefix="tornsession-bench-")
    try:
        app = make_app(args)
    except NotAvailable as e:
        print(f"not available: {e}", flush=True)
        sys.exit(NOT_AVAILABLE_STATUS)
    if args.check:
        return

    async def serve() -> None:
        if args.profile:
            profiler = cProfile.Profile()

            def dump() -> None:
                profiler.disable()
                profiler.dump_stats(args.profile)
                os._exit(0)

            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, dump)
            profiler.enable()
        app.listen(args.port, address=HOST)
        print(f"listening on {args.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
