"""Metrics (issue 22): a real Tornado app's ``/metrics``, scraped over HTTP and parsed with
prometheus_client's own parser, counts a scripted sequence of requests exactly; each counter of
``manager.metrics()`` moves for what it names and nothing else; ``metrics=False`` counts
nothing; the process's totals keep a dropped manager's counts."""

from __future__ import annotations

import gc
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import tornsession
import tornsession.metrics
from prometheus_client.parser import text_string_to_metric_families
from support.browser import Browser
from support.processes import AppProcess
from tornsession import _core

SECRET = "metrics-test-secret-of-32-bytes-or-more!"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the app's /metrics page, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_of_a_real_app_count_a_scripted_sequence_exactly(
    start_app_process: Callable[..., AppProcess],
) -> None:
    app = start_app_process("tests.apps.metrics_app", "--store", "memory")
    with Browser(app.port) as ann, Browser(app.port) as bob:
        assert ann.get_json("/count") == {"n": 1}  # fresh, written, cookies sent
        assert ann.get_json("/count") == {"n": 2}  # found, written
        assert ann.get_json("/peek") == {"n": 2}  # found, unchanged
        old_cookies = dict(ann.cookies)
        assert ann.request("POST", "/logout")[0] == 200  # found, deleted (then empty: no save)
        ann.cookies = old_cookies
        assert ann.get_json("/peek") == {"n": None}  # missing, fresh (empty: no save)
        # Bob's first request holds his session's turn with a change; his second waits past
        # the app's order_timeout (0.5 s) and is answered 503.
        assert bob.get_json("/count") == {"n": 1}  # fresh, written, cookies sent
        held: list[int] = []
        holder = Browser(app.port)
        holder.cookies = dict(bob.cookies)
        thread = threading.Thread(target=lambda: held.append(holder.status("/hold")))
        thread.start()
        try:
            # The hold request has its session (loaded, so counted) before Bob asks again.
            for _ in range(200):
                if value(scrape(app.port), "tornsession_loads_total", result="found") == 4:
                    break
                threading.Event().wait(0.01)
            assert bob.status("/peek") == 503  # busy
        finally:
            thread.join()
            holder.close()
        assert held == [200]  # found, written
    samples = scrape(app.port)
    assert value(samples, "tornsession_loads_total", result="found") == 4
    assert value(samples, "tornsession_loads_total", result="missing") == 1
    assert value(samples, "tornsession_loads_total", result="expired") == 0
    assert value(samples, "tornsession_loads_total", result="unreadable") == 0
    assert value(samples, "tornsession_fresh_sessions_total") == 3
    assert value(samples, "tornsession_saves_total", result="written") == 4
    assert value(samples, "tornsession_saves_total", result="unchanged") == 1
    assert value(samples, "tornsession_saves_total", result="dropped") == 0
    assert value(samples, "tornsession_busy_total") == 1
    assert value(samples, "tornsession_conflicts_total") == 0
    assert value(samples, "tornsession_cookies_sent_total") == 2
    assert value(samples, "tornsession_resyncs_total") == 0
    for kind in ("unavailable", "unreadable_record", "oversized_record", "unsupported", "crossed"):
        assert value(samples, "tornsession_store_errors_total", kind=kind) == 0
    assert value(samples, "tornsession_store_seconds_count", operation="load") == 5
    assert value(samples, "tornsession_store_seconds_count", operation="save") == 4
    assert value(samples, "tornsession_store_seconds_count", operation="delete") == 1
    assert value(samples, "tornsession_store_seconds_bucket", operation="load", le="+Inf") == 5
    assert value(samples, "tornsession_store_seconds_sum", operation="load") > 0


def metrics_of(manager: tornsession.SessionManager) -> dict[str, Any]:
    counts: dict[str, Any] = dict(manager.metrics())
    return counts


def saved(manager: tornsession.SessionManager, **items: Any) -> tornsession.Session:
    session = manager.get()
    session.update(items)
    manager.set(session)
    return session


def stored(store: Any, session: tornsession.Session) -> bytes | None:
    return _core._store_load(store, session.session_id, 1 << 20)


def test_each_load_is_counted_by_what_it_found() -> None:
    store = tornsession.MemoryStore()
    manager = tornsession.SessionManager(SECRET, store=store, lifetime=3600)
    kept = saved(manager, a=1)
    manager.get(kept.session_id, kept.hmac_digest)  # found
    never_saved = manager.get()
    manager.get(never_saved.session_id, never_saved.hmac_digest)  # missing
    old = saved(manager, b=1)
    record = b'{"v":1,"c":1000,"d":{"b":1}}'  # created in 1970: past its lifetime
    assert _core._store_copy_in(store, old.session_id, record, None, stored(store, old))
    manager.get(old.session_id, old.hmac_digest)  # expired
    bad = saved(manager, c=1)
    assert _core._store_copy_in(store, bad.session_id, b"not a record", None, stored(store, bad))
    manager.get(bad.session_id, bad.hmac_digest)  # unreadable
    counts = metrics_of(manager)
    assert counts["loads"] == {"found": 1, "missing": 1, "expired": 1, "unreadable": 1}
    # A session made without an id, and one for each load that found nothing usable.
    assert counts["fresh"] == 4 + 3
    assert counts["latency"]["load"]["count"] == 4


def test_saves_conflicts_and_dropped_writes_are_counted() -> None:
    manager = tornsession.SessionManager(SECRET, detect_conflicts=True)
    session = saved(manager, n=1)
    first = manager.get(session.session_id, session.hmac_digest)
    second = manager.get(session.session_id, session.hmac_digest)
    manager.set(first)  # unchanged
    first["n"] = 2
    manager.set(first)  # written
    second["n"] = 3
    with pytest.raises(tornsession.SessionConflict):
        manager.set(second)  # conflict
    counts = metrics_of(manager)
    assert counts["saves"] == {"written": 2, "unchanged": 1, "dropped": 0}
    assert counts["conflicts"] == 1
    assert counts["store_errors"]["unavailable"] == 0


def test_a_save_of_a_session_ended_meanwhile_is_counted_as_dropped() -> None:
    store = tornsession.MemoryStore()
    manager = tornsession.SessionManager(SECRET, store=store)
    session = saved(manager, n=1)
    loaded = manager.get(session.session_id, session.hmac_digest)
    assert _core._store_delete_listed(store, session.session_id)  # another request's logout
    loaded["n"] = 2
    manager.set(loaded)
    assert metrics_of(manager)["saves"] == {"written": 1, "unchanged": 0, "dropped": 1}


def test_store_errors_are_counted_by_kind_with_their_latency() -> None:
    unreachable = tornsession.RedisStore("redis://127.0.0.1:1/0", connect_timeout=0.2)
    manager = tornsession.SessionManager(SECRET, store=unreachable)
    with pytest.raises(tornsession.SessionStoreError):
        manager.set(saved_locally(manager))
    counts = metrics_of(manager)
    assert counts["store_errors"]["unavailable"] == 1
    assert counts["latency"]["save"]["count"] == 1
    assert counts["saves"]["written"] == 0


def saved_locally(manager: tornsession.SessionManager) -> tornsession.Session:
    session = manager.get()
    session["x"] = 1
    return session


def test_a_record_of_another_session_is_a_crossed_error_and_a_resync() -> None:
    from support.stores import DictStore

    store = DictStore()
    manager = tornsession.SessionManager(SECRET, store=store)
    ann, bob = saved(manager, who="ann"), saved(manager, who="bob")
    [ann_key] = [key for key in store.data if ann.session_id in key]
    [bob_key] = [key for key in store.data if bob.session_id in key]
    store.data[ann_key] = store.data[bob_key]  # a reply crossed on its way
    with pytest.raises(tornsession.SessionStoreError):
        manager.get(ann.session_id, ann.hmac_digest)
    counts = metrics_of(manager)
    assert counts["store_errors"]["crossed"] == 1
    assert counts["resyncs"] == 1
    assert counts["loads"] == {"found": 0, "missing": 0, "expired": 0, "unreadable": 0}


def test_metrics_false_counts_nothing() -> None:
    manager = tornsession.SessionManager(SECRET, metrics=False)
    session = saved(manager, a=1)
    manager.get(session.session_id, session.hmac_digest)
    counts = metrics_of(manager)
    assert counts["fresh"] == 0 and counts["saves"]["written"] == 0
    assert counts["latency"]["load"]["count"] == 0


def test_the_process_totals_keep_a_dropped_managers_counts() -> None:
    before = _core._process_metrics()["saves"]["written"]
    manager = tornsession.SessionManager(SECRET)
    for n in range(3):
        saved(manager, n=n)
    assert _core._process_metrics()["saves"]["written"] >= before + 3
    del manager
    gc.collect()
    # Other tests of this process only add: the three stay counted.
    assert _core._process_metrics()["saves"]["written"] >= before + 3


def test_register_needs_prometheus_client_and_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"tornsession\[prometheus\]"):
        tornsession.metrics.register()


def test_register_exposes_one_managers_metrics_in_a_registry() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    manager = tornsession.SessionManager(SECRET)
    collector = tornsession.metrics.register(registry, manager=manager)
    saved(manager, a=1)
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tornsession_saves_total", (("result", "written"),))] == 1
    assert samples[("tornsession_fresh_sessions_total", ())] == 1
    registry.unregister(collector)
    assert "tornsession" not in generate_latest(registry).decode()


def test_the_core_install_pulls_nothing_new_and_imports_no_prometheus_client() -> None:
    import importlib.metadata
    import subprocess
    import sys

    requires = importlib.metadata.requires("tornsession") or []
    core = [r for r in requires if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0].strip() for r in core] == ["tornado"], core
    optional = [r.replace('"', "'").replace("_", "-") for r in requires]
    assert any("prometheus-client" in r and "extra == 'prometheus'" in r for r in optional)
    probe = (
        "import sys, tornsession, tornsession.metrics; print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
