"""Over real HTTP, on every store and both API styles: a record is only ever served for the id it
was saved under (a record copied under another visitor's key gives that visitor a 500, never the
other's data, and is not deleted); records of tornsession 0.1.0 still load and get the binding
at their next save; and what can be saved can be loaded (a session grown past the limit fails at
once, leaving the stored one as it was).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornsession
from support.browser import Browser
from support.engine_app import SESSION_SECRET, STORES, Server, every_store_and_style
from tornsession._core import _store_load, _store_save_if_exists
from tornsession.migrate import encode_record

READ_ALL = 1 << 22


def app_routes(base: type) -> list[tuple[str, type]]:
    class Set(base):  # type: ignore[misc]
        def get(self) -> None:
            self.session["owner"] = self.get_argument("owner")
            self.session["filler"] = "x" * int(self.get_argument("size", "10"))
            self.commit()
            self.write("saved")

    class Peek(base):  # type: ignore[misc]
        def get(self) -> None:
            self.write(json.dumps({"id": self.session.session_id, **dict(self.session)}))

    return [(r"/set", Set), (r"/peek", Peek)]


@pytest.fixture
def serve_records(serve: Callable[..., Server]) -> Callable[[str, str], tuple[Server, Any]]:
    """``serve_records(style, kind)``: the engine tests' server with these routes, and its store."""

    def start(style: str, kind: str) -> tuple[Server, Any]:
        server = serve(style, kind, app_routes=app_routes)
        return server, server.app.store  # type: ignore[attr-defined]

    return start


def visit(browser: Browser, owner: str, size: int = 10) -> str:
    """Saves a session owned by `owner`; returns its id."""
    assert browser.get(f"/set?owner={owner}&size={size}") == (200, "saved")
    status, body = browser.get("/peek")
    assert status == 200, body
    session_id: str = json.loads(body)["id"]
    return session_id


@every_store_and_style([*STORES, "python"])
def test_a_record_copied_under_another_visitors_key_is_never_served(
    serve_records: Callable[[str, str], tuple[Server, Any]], style: str, kind: str
) -> None:
    server, store = serve_records(style, kind)
    with Browser(server.port) as ann, Browser(server.port) as bob:
        ann_id = visit(ann, "ann")
        bob_id = visit(bob, "bob")
        bobs_record = _store_load(store, bob_id, READ_ALL)
        assert bobs_record is not None
        # The store answers ann's key with bob's record (as a desynchronised connection would).
        assert _store_save_if_exists(store, ann_id, bobs_record)
        for _ in range(2):
            status, body = ann.get("/peek")
            assert status == 500, body
            assert "bob" not in body
        # Nothing was served, and nothing deleted as unreadable; bob is untouched.
        assert _store_load(store, ann_id, READ_ALL) == bobs_record
        status, body = bob.get("/peek")
        assert (status, json.loads(body)["owner"]) == (200, "bob")


@every_store_and_style([*STORES, "python"])
def test_a_record_of_0_1_0_loads_and_is_bound_at_its_next_save(
    serve_records: Callable[[str, str], tuple[Server, Any]], style: str, kind: str
) -> None:
    server, store = serve_records(style, kind)
    with Browser(server.port) as ann:
        ann_id = visit(ann, "ann")
        unbound = encode_record(int(time.time()), {"owner": "ann before the upgrade"})
        assert unbound.startswith(b'{"v":1,')
        assert _store_save_if_exists(store, ann_id, unbound)
        status, body = ann.get("/peek")
        assert (status, json.loads(body)["owner"]) == (200, "ann before the upgrade")
        visit(ann, "ann-after")
        record = _store_load(store, ann_id, READ_ALL)
        assert record is not None
        assert record == encode_record(
            json.loads(record)["c"], {"owner": "ann-after", "filler": "x" * 10}, ann_id
        )


@every_store_and_style()
def test_a_session_grown_past_the_read_limit_fails_at_once_and_keeps_the_stored_one(
    serve_records: Callable[[str, str], tuple[Server, Any]], style: str, kind: str
) -> None:
    # The defaults: no max_size given; loads read up to 1 MiB.
    server, store = serve_records(style, kind)
    with Browser(server.port) as ann:
        ann_id = visit(ann, "ann", size=1000)
        before = _store_load(store, ann_id, READ_ALL)
        started = time.monotonic()
        status, _ = ann.get("/set?owner=grown&size=1100000")
        assert status == 500
        assert time.monotonic() - started < 1.0
        assert _store_load(store, ann_id, READ_ALL) == before
        status, body = ann.get("/peek")
        assert status == 200, body
        assert (json.loads(body)["id"], json.loads(body)["owner"]) == (ann_id, "ann")
        assert len(json.loads(body)["filler"]) == 1000


def test_save_names_max_size_when_the_session_is_over_it() -> None:
    manager = tornsession.SessionManager(SESSION_SECRET)
    session = manager.get()
    session["filler"] = "x" * (1 << 20)
    with pytest.raises(ValueError, match=r"over max_size=1048576; the stored session was not"):
        manager.set(session)


def test_a_read_limit_below_max_size_is_refused_and_memcached_caps_max_size() -> None:
    with pytest.raises(ValueError, match="max_read_size=1000 is below max_size=2000"):
        tornsession.SessionManager(SESSION_SECRET, max_size=2000, max_read_size=1000)
    # Equal is fine; a read limit alone sets max_size too.
    tornsession.SessionManager(SESSION_SECRET, max_size=2000, max_read_size=2000)
    store = tornsession.MemcachedStore(["127.0.0.1:1"])
    with pytest.raises(ValueError, match=r"max_size=1048576 is more than MemcachedStore"):
        tornsession.SessionManager(SESSION_SECRET, store=store, max_size=1 << 20)
    manager = tornsession.SessionManager(SESSION_SECRET, store=store)
    session = manager.get()
    session["filler"] = "x" * (1 << 20)
    with pytest.raises(ValueError, match=r"over max_size=1047552"):
        manager.set(session)
