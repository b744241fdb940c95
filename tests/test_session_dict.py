"""The session is a real dict that loads lazily and stores only what JSON holds."""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import weakref
from typing import Any

import pytest
import tornsession as session


class CountingStore:
    """A Python store that counts calls, to see when the store is touched."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0
        self.sets = 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        self.sets += 1
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeHandler:
    """Just the cookie methods of a RequestHandler, with a cookie jar; 'started' like a handler
    whose get() is running."""

    def __init__(self, cookies: dict[str, bytes] | None = None) -> None:
        self.cookies: dict[str, bytes] = dict(cookies or {})
        self.path_args: list[str] | None = []

    def get_secure_cookie(self, name: str) -> bytes | None:
        return self.cookies.get(name)

    def set_secure_cookie(self, name: str, value: str, **kwargs: Any) -> None:
        self.cookies[name] = value.encode()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def manager(store: CountingStore) -> session.TornadoSessionManager:
    return session.TornadoSessionManager("secret", store=store)


def saved_session(manager: session.TornadoSessionManager, **items: Any) -> FakeHandler:
    """Saves a session holding `items`; returns a handler carrying its cookies."""
    handler = FakeHandler()
    s = session.TornadoSession(manager, handler)
    s.update(items)
    s.save()
    return FakeHandler(handler.cookies)


def test_session_is_a_real_dict(manager: session.TornadoSessionManager) -> None:
    s = session.TornadoSession(manager, saved_session(manager, a=1, b=[1, 2]))
    assert isinstance(s, dict)
    assert isinstance(s, session.Session)
    assert json.dumps(s, sort_keys=True) == '{"a": 1, "b": [1, 2]}'
    assert dict(s) == {"a": 1, "b": [1, 2]}
    assert {**s} == {"a": 1, "b": [1, 2]}
    assert s == {"a": 1, "b": [1, 2]}
    assert s != {"a": 1}
    assert sorted(s) == ["a", "b"]
    assert len(s) == 2 and bool(s)
    assert "a" in s and "z" not in s
    assert s.get("z") is None and s.get("z", 5) == 5
    assert list(s.items()) == [("a", 1), ("b", [1, 2])]
    assert list(s.values()) == [1, [1, 2]]
    assert repr(s) == "{'a': 1, 'b': [1, 2]}"
    assert s.copy() == {"a": 1, "b": [1, 2]} and type(s.copy()) is dict
    assert copy.deepcopy(s) == {"a": 1, "b": [1, 2]}
    assert s | {"c": 3} == {"a": 1, "b": [1, 2], "c": 3}


def test_json_dumps_of_an_unused_session_shows_its_data_once_the_handler_started(
    manager: session.TornadoSessionManager,
) -> None:
    handler = saved_session(manager, a=1)
    handler.path_args = None  # built but not yet run, as in a handler's __init__

    prepared: list[bool] = []

    def prepare() -> None:
        prepared.append(True)

    handler.prepare = prepare  # type: ignore[attr-defined]
    s = session.TornadoSession(manager, handler)
    assert json.dumps(s) == "{}", "not loaded yet: the C encoder reads the empty storage"
    handler.prepare()  # type: ignore[attr-defined]  # Tornado calls this when the handler starts
    assert json.dumps(s) == '{"a": 1}'
    assert prepared == [True], "the handler's own prepare still runs"
    assert handler.prepare is prepare  # type: ignore[attr-defined]


def test_mutations_and_their_persistence(manager: session.TornadoSessionManager) -> None:
    handler = saved_session(manager, cart=[], n=1, gone=True, popped="x")
    s = session.TornadoSession(manager, handler)
    s["cart"].append({"sku": "a1"})
    s["nested"] = {"deep": {"list": [1, 2]}}
    s["nested"]["deep"]["list"].append(3)
    del s["gone"]
    assert s.pop("popped") == "x"
    assert s.pop("missing", "default") == "default"
    assert s.setdefault("n", 99) == 1
    assert s.setdefault("new", 7) == 7
    s.update({"u": 1}, v=2)
    s |= {"w": 3}
    s.save()
    again = session.TornadoSession(manager, FakeHandler(handler.cookies))
    assert dict(again) == {
        "cart": [{"sku": "a1"}],
        "n": 1,
        "nested": {"deep": {"list": [1, 2, 3]}},
        "new": 7,
        "u": 1,
        "v": 2,
        "w": 3,
    }
    with pytest.raises(KeyError):
        del again["missing"]
    with pytest.raises(KeyError) as caught:
        again["missing"]
    assert caught.value.args == ("missing",)
    again.clear()
    assert again == {}
    assert again.popitem() if again else True


def test_tuples_come_back_as_lists(manager: session.TornadoSessionManager) -> None:
    handler = saved_session(manager, point=(1, 2), nested=[(3, (4,))])
    assert dict(session.TornadoSession(manager, handler)) == {"point": [1, 2], "nested": [[3, [4]]]}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (b"bytes", "bytes"),
        ({"inner": [1, {2, 3}]}, "set"),
        (__import__("datetime").datetime(2020, 1, 1), "datetime"),
    ],
)
def test_unstorable_value_raises_typeerror_naming_key_and_type_and_keeps_the_stored_session(
    manager: session.TornadoSessionManager, store: CountingStore, value: Any, type_name: str
) -> None:
    handler = saved_session(manager, kept=1)
    before = dict(store.data)
    s = session.TornadoSession(manager, handler)
    s["kept"] = 2
    s["bad"] = value
    with pytest.raises(TypeError) as caught:
        s.save()
    message = str(caught.value)
    assert "'bad'" in message or '"bad"' in message
    assert type_name in message
    assert store.data == before


def test_non_str_keys_nan_and_huge_ints_are_refused_clearly(
    manager: session.TornadoSessionManager,
) -> None:
    cases: list[tuple[dict[Any, Any], type[Exception]]] = [
        ({1: "int key"}, TypeError),
        ({"k": {2: "nested int key"}}, TypeError),
        ({"k": float("nan")}, ValueError),
        ({"k": 2**70}, TypeError),
    ]
    for bad, error in cases:
        handler = FakeHandler()  # alive while the session is used, as a request keeps it
        s = session.TornadoSession(manager, handler)
        s.update(bad)
        with pytest.raises(error):
            s.save()


def test_deep_nesting_is_a_clear_error_not_a_crash(manager: session.TornadoSessionManager) -> None:
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    handler = FakeHandler()  # alive while the session is used, as a request keeps it
    s = session.TornadoSession(manager, handler)
    s["deep"] = deep
    with pytest.raises(ValueError, match="nested deeper"):
        s.save()


def test_constructing_a_session_does_not_read_the_store(
    manager: session.TornadoSessionManager, store: CountingStore
) -> None:
    handler = saved_session(manager, a=1)
    handler.path_args = None  # built but not yet run, as in a handler's __init__
    store.gets = 0
    s = session.TornadoSession(manager, handler)
    assert store.gets == 0
    assert s["a"] == 1
    assert store.gets == 1
    assert s.get("a") == 1 and len(s) == 1
    assert store.gets == 1, "loads once"


def test_a_new_session_is_written_only_when_saved(
    manager: session.TornadoSessionManager, store: CountingStore
) -> None:
    handler = FakeHandler()
    s = session.TornadoSession(manager, handler)
    s["a"] = 1
    assert store.sets == 0 and handler.cookies == {}
    s.save()
    assert store.sets == 1 and set(handler.cookies) == {"session_id", "hmac_digest"}


def test_subclass_with_its_own_init(manager: session.TornadoSessionManager) -> None:
    class MySession(session.TornadoSession):
        def __init__(self, m: Any, h: Any, user: str) -> None:
            super().__init__(m, h)
            self.user = user

    s = MySession(manager, saved_session(manager, a=1), "ann")
    assert s.user == "ann" and s["a"] == 1 and isinstance(s, session.TornadoSession)


def test_subclass_that_forgets_super_init_gets_a_clear_error(
    manager: session.TornadoSessionManager,
) -> None:
    class Broken(session.TornadoSession):
        def __init__(self, m: Any, h: Any) -> None:
            pass

    with pytest.raises(RuntimeError, match="super"):
        Broken(manager, FakeHandler())["a"]


def test_handler_and_session_cycle_is_collected(manager: session.TornadoSessionManager) -> None:
    class Handler(FakeHandler):
        def prepare(self) -> None:
            pass

    handler = Handler()
    handler.path_args = None  # not started: the session installs its prepare hook
    handler.session = session.TornadoSession(manager, handler)  # type: ignore[attr-defined]
    assert type(handler.__dict__["prepare"]).__name__ == "LoadBeforePrepare"
    ref = weakref.ref(handler)
    del handler
    gc.collect()
    assert ref() is None


def test_session_base_class_keeps_attributes() -> None:
    s = session.Session("id", "digest")
    assert (s.session_id, s.hmac_digest, dict(s)) == ("id", "digest", {})
    s.session_id = "other"
    assert s.session_id == "other"


def test_a_handler_and_its_session_are_freed_without_the_cycle_collector(
    manager: session.TornadoSessionManager,
) -> None:
    # The session holds its handler weakly, so a request's objects go when the request does,
    # not at the next garbage collection.
    import gc

    handler = FakeHandler()
    handler.session = session.TornadoSession(manager, handler)  # type: ignore[attr-defined]
    handler.session["a"] = 1  # type: ignore[attr-defined]
    handler_ref, session_ref = weakref.ref(handler), weakref.ref(handler.session)  # type: ignore[attr-defined]
    gc.disable()
    try:
        del handler
        assert handler_ref() is None and session_ref() is None
    finally:
        gc.enable()


def test_a_session_whose_handler_is_gone_says_so(manager: session.TornadoSessionManager) -> None:
    s = session.TornadoSession(manager, FakeHandler())  # the handler dies right away
    s["a"] = 1
    with pytest.raises(RuntimeError, match="handler no longer exists"):
        s.save()


_DEL_READS_THE_SESSION = """
import tornsession

seen = []

class Reader:
    def __init__(self, session):
        self.session = session

    def __del__(self):
        seen.append((self.session.session_id, self.session.hmac_digest))

s = tornsession.Session()
s.session_id = Reader(s)
s.session_id = "id-set"
s.hmac_digest = Reader(s)
s.hmac_digest = "digest-set"
s.__init__(Reader(s), Reader(s))
s.__init__("id-init", "digest-init")
print(seen)
"""


def test_an_attribute_whose_del_reads_the_session_is_replaced_without_a_deadlock() -> None:
    # Run apart: on a deadlock the interpreter hangs with its GIL held.
    done = subprocess.run(
        [sys.executable, "-c", _DEL_READS_THE_SESSION],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == str(
        [
            ("id-set", None),
            ("id-set", "digest-set"),
            ("id-init", "digest-init"),
            ("id-init", "digest-init"),
        ]
    )
