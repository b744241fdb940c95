"""Attacks on the fixes of issue 20's first review (1 of 2): a save in flight and its turn, loops
closed mid-save, the mixin's wrapper of an app's own prepare(). A test whose docstring says
"Found:" failed on 9d8585c (fixed since); the others held."""

from __future__ import annotations

import abc
import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
import tornsession
from support.browser import Browser
from support.engine_app import Mixin, Server, peek
from support.request_path import (
    KEPT,
    GatedStore,
    Inc,
    Peek,
    PrepAsyncNoSuper,
    bad_chunk_routes,
    inc_awaiting,
    make_app,
)
from support.stores import DictStore
from support.threads import run_concurrently
from tornsession import _core

pytestmark = pytest.mark.usefixtures("_table_baseline", "_no_log_capture")

# ---------------------------------------------------------------- 1. begin_write without end_write


@pytest.mark.parametrize("kind", ["thread", "redis"])
def test_finish_whose_chunk_write_raises_after_begin_write_does_not_lock_the_session(
    servers: Any, make_store: Callable[[str], Any], kind: str
) -> None:
    """`self.finish(chunk)` where `write(chunk)` raises (a list: TypeError) in a handler that
    changed its session, on a store whose save is deferred (thread or wire). `_mixin_finish`
    has already called begin_write; `SessionMixin.finish` then raises from `self.write(chunk)`
    before `_save_then_finish` exists, so nothing ever calls end_write. The error page's
    finish releases the turn, which the table defers (a write is in flight): the claim holds
    the turn until its `_Turn` is dropped, i.e. until the handler is freed: at once by
    refcount when nothing else holds it (checked by hand, gc off: the next request is then
    served), later when a logged traceback is kept (pytest's log capture does; an error
    reporter may) or a cycle holds it; here kept alive in KEPT. Found: the session's next
    request waits order_timeout and answers 503. Should: 500 for the bad request, then 200.
    Suspect: python/tornsession/mixin.py finish(): `self.write(chunk)` after `_mixin_finish`
    returned (False, ...) with no end_write on its error path (crates/py/src/tornado_session/
    request.rs begin_write() before the Python side can fail)."""
    store = GatedStore() if kind == "thread" else make_store("redis")
    server = servers(bad_chunk_routes(), store, order_timeout=1.0)
    KEPT.clear()
    try:
        with Browser(server.port) as browser:
            assert browser.get("/inc")[0] == 200
            assert browser.get("/bad-chunk")[0] == 500
            status, body = browser.get("/inc")
            assert status == 200, (status, body, _core._turns_in_table())
    finally:
        KEPT.clear()


# ---------------------------------------------------------------- 5. a loop closed mid-save


class IncThenStopLoop(Mixin):
    """Changes its session, finishes (the save deferred: on its way to the store), then its
    app shuts the loop down before the save is answered."""

    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.finish("stopping")
        asyncio.get_running_loop().stop()


class IncStopLoopThenFinish(Mixin):
    """The control: the loop is stopped before the request finishes (no save in flight)."""

    async def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        asyncio.get_running_loop().stop()
        await asyncio.sleep(30)


@pytest.mark.parametrize(
    "path", ["/stop", "/stop-before-finish"], ids=["save-in-flight", "control-no-save"]
)
@pytest.mark.parametrize("kind", ["thread", "redis"])
def test_a_loop_closed_while_its_save_is_in_flight_does_not_lock_the_session_out(
    make_store: Callable[[str], Any], kind: str, path: str
) -> None:
    """A request's save is on its way (a worker thread, or sent over Redis's protocol with its reply
    unread) when its app stops and closes the loop. The same manager then serves on a new loop (its
    old HTTPServer object still referenced, as an app keeps it). Should (fix 5): the dead request's
    claim is finished once its loop is found closed, and the session's requests are served there (as
    they are in the control, where the loop stops before the request finishes, with no save in
    flight). Found: 503 (order_timeout) for ever, even after the write landed and gc ran: the claim
    has `writes == 1`, and both closed-loop paths (`finish_claims_of_closed_loops` from the next
    request's release, carry_out's CheckLease `Err(_) if is_closed`) call `Turns::finish`, which
    `while_writing` defers to an end_write that the coroutine parked on the closed loop never
    reaches. Suspect: crates/core/src/turns.rs finish()/while_writing (no way to finish a claim
    regardless of writes but `forget`), crates/py/src/turns.rs finish_claims_of_closed_loops and
    carry_out's closed-loop branch."""
    store = DictStore() if kind == "thread" else make_store("redis")
    app = make_app(
        [
            (r"/inc", Inc),
            (r"/stop", IncThenStopLoop),
            (r"/stop-before-finish", IncStopLoopThenFinish),
        ],
        store,
        order_timeout=1.0,
    )
    first = Server(app)
    with Browser(first.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)
        gc_was = gc.isenabled()
        gc.disable()
        try:
            import contextlib
            import socket

            sock = socket.create_connection(("127.0.0.1", first.port))
            with contextlib.closing(sock):
                head = "; ".join(f"{k}={v}" for k, v in cookies.items())
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {head}\r\n\r\n".encode())
                first.thread.join(10)
                assert not first.thread.is_alive()
                first.loop.close()
            gc.collect()
            second = Server(app)
            try:
                browser.port = second.port
                status, body = browser.get("/inc")
                assert status == 200, (status, body, _core._turns_in_table())
            finally:
                second.stop()
        finally:
            if gc_was:
                gc.enable()


# ---------------------------------------------------------------- 3. the prepare() wrapper


class PrepNoSuper(Mixin):
    def prepare(self) -> None:
        self.seen = self.session.get("n")

    async def get(self) -> None:
        await inc_awaiting(self)


class PrepSuperNotAwaited(Mixin):
    def prepare(self) -> None:
        super().prepare()
        self.seen = self.session.get("n")

    async def get(self) -> None:
        await inc_awaiting(self)


class PrepLambda(Mixin):
    prepare = lambda self: None  # noqa: E731

    async def get(self) -> None:
        await inc_awaiting(self)


class PrepSubSub(PrepAsyncNoSuper):
    async def prepare(self) -> None:
        await super().prepare()
        self.session.get("n")


class AppBase:
    """An app's own mixin with a prepare(), before SessionMixin in the bases."""

    def prepare(self) -> Any:
        self.seen = self.session.get("n")  # type: ignore[attr-defined]
        return super().prepare()  # type: ignore[misc]


class PrepAppMixinFirst(AppBase, Mixin):
    async def get(self) -> None:
        await inc_awaiting(self)


class PrepAuthenticated(Mixin):
    def get_current_user(self) -> Any:
        return self.session.get("n")

    @tornado.web.authenticated
    def prepare(self) -> None:
        pass

    async def get(self) -> None:
        await inc_awaiting(self)


class PrepStatic(Mixin):
    @staticmethod
    def prepare() -> None:
        pass

    async def get(self) -> None:
        await inc_awaiting(self)


class AbstractBase(Mixin, metaclass=abc.ABCMeta):
    @abc.abstractmethod
    def kind(self) -> str: ...

    async def prepare(self) -> None:
        self.seen = self.session.get("n")


class PrepConcreteOfAbstract(AbstractBase):
    def kind(self) -> str:
        return "concrete"

    async def get(self) -> None:
        await inc_awaiting(self)


PREPARES = {
    "abstract-base": PrepConcreteOfAbstract,
    "no-super": PrepNoSuper,
    "async-no-super": PrepAsyncNoSuper,
    "super-not-awaited": PrepSuperNotAwaited,
    "lambda": PrepLambda,
    "subclass-of-subclass": PrepSubSub,
    "app-mixin-first": PrepAppMixinFirst,
    "authenticated": PrepAuthenticated,
}


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("name", list(PREPARES))
def test_an_apps_own_prepare_of_any_shape_keeps_every_increment(
    servers: Any, make_store: Callable[[str], Any], kind: str, name: str
) -> None:
    """Eight concurrent requests of one visitor, each incrementing with an await between read
    and write, through handlers whose own prepare() is def or async def, calls super() or
    not, a lambda, in a subclass of a subclass, in an app mixin placed before SessionMixin,
    or decorated with @authenticated: every increment is kept (the session loaded, its turn
    taken, before the app's prepare runs)."""
    server = servers(
        [(r"/inc", Inc), (r"/peek", Peek), (r"/x", PREPARES[name])],
        make_store(kind),
        order_timeout=5,
    )
    with Browser(server.port) as browser:
        assert browser.get("/inc") == (200, "1")
        cookies = dict(browser.cookies)

    def visitor(_: int) -> None:
        with Browser(server.port) as b:
            b.cookies = dict(cookies)
            status, body = b.get("/x")
            assert status == 200, (status, body)

    run_concurrently(visitor, 8)
    assert peek(server.port, cookies)["n"] == 9


def test_a_staticmethod_prepare_still_runs(servers: Any) -> None:
    """`prepare` as a @staticmethod taking no argument (Tornado calls `self.prepare()`, which
    works on a plain RequestHandler). Found: 500, TypeError: prepare() takes 0 positional
    arguments but 1 was given: `cls.prepare` on the class is the bare function, so
    `inspect.isfunction` is true, and the wrapper replaces the staticmethod with a function
    that calls `prepare(handler)`.
    Suspect: python/tornsession/mixin.py SessionMixin.__init_subclass__ (looks the attribute
    up through the class, not `inspect.getattr_static`)."""
    server = servers([(r"/x", PrepStatic)])
    with Browser(server.port) as browser:
        assert browser.get("/x") == (200, "1")


class WrongOrder(tornado.web.RequestHandler, tornsession.SessionMixin):  # type: ignore[misc]
    """SessionMixin placed after RequestHandler (the docstring says before), with a prepare()
    of its own: RequestHandler.finish() shadows the mixin's."""

    def prepare(self) -> None:
        self.seen = True

    def get(self) -> None:
        KEPT.append(self)  # alive as long as a reference cycle would keep it
        self.session["n"] = self.session.get("n", 0) + 1  # type: ignore[attr-defined]
        self.write("ok")  # type: ignore[attr-defined]


def test_a_mixin_placed_after_request_handler_does_not_keep_its_turn(servers: Any) -> None:
    """Found: with the mixin after RequestHandler and an own prepare(), __init_subclass__
    still wraps prepare(), so the load takes the session's turn (hooked: released by
    SessionMixin.finish), but RequestHandler.finish() runs instead, and nothing releases it
    until the handler is collected: the visitor's next request 503s (order_timeout) while the
    handler lives. Before 9d8585c such a class took no turn (and saved nothing). Should: no
    turn taken unless the mixin's finish() will run (or the class refused: wrong order).
    Suspect: python/tornsession/mixin.py __init_subclass__ (no check that SessionMixin comes
    before RequestHandler in the MRO)."""
    server = servers([(r"/inc", Inc), (r"/wrong", WrongOrder)], order_timeout=1.0)
    KEPT.clear()
    try:
        with Browser(server.port) as browser:
            assert browser.get("/inc") == (200, "1")
            assert browser.get("/wrong")[0] == 200
            status, _ = browser.get("/inc")
            assert status == 200, _core._turns_in_table()
    finally:
        KEPT.clear()
