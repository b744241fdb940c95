"""Load time with many sessions stored, and MemoryStore's memory per session.

    python -m bench.scale --redis-port 6379 [--json] [--memory-n 1000000] [--file-n 100000]

For each store: one store of 1,000 sessions and one of the large size, side by side; loads of
sampled sessions through ``SessionManager.get(id, digest)`` (all 1,000 of the small one, 10,000
spread over the large one), alternating small and large passes (the machine is shared), median
of 7 passes each. MemoryStore's memory is the process's RSS growth while filling, per session,
minus the payload (the session's items as JSON). Redis is filled past the samples with a
redis-py pipeline (same key prefix, same value) rather than a million round trips.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Any

import tornsession

from bench.app import SECRET

SAMPLES = 10_000
PASSES = 7


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def payload(i: int) -> dict[str, Any]:
    return {"user": f"user-{i:07d}", "n": i % 1000}


def payload_bytes() -> float:
    """Mean length of the payload as compact JSON, what any store has to keep."""
    return sum(len(json.dumps(payload(i), separators=(",", ":"))) for i in range(1000)) / 1000


def new_session(manager: tornsession.SessionManager, i: int) -> tuple[Any, Any]:
    session = manager.get()
    session.update(payload(i))
    manager.set(session)
    return session.session_id, session.hmac_digest


def load_us(manager: tornsession.SessionManager, samples: list[tuple[Any, Any]]) -> float:
    """µs per load of a stored session, one pass over the samples in random order."""
    order = samples[:]
    random.shuffle(order)
    start = time.perf_counter()
    for session_id, digest in order:
        manager.get(session_id, digest)
    return (time.perf_counter() - start) / len(order) * 1e6


def fill(
    manager: tornsession.SessionManager, start: int, stop: int, samples: list[tuple[Any, Any]]
) -> float:
    """Adds sessions start..stop-1, keeping every ``stop // SAMPLES``-th as a sample; seconds."""
    every = max(1, stop // SAMPLES)
    t = time.perf_counter()
    for i in range(start, stop):
        pair = new_session(manager, i)
        if i % every == 0:
            samples.append(pair)
    return time.perf_counter() - t


def compare(
    small: tuple[tornsession.SessionManager, list[tuple[Any, Any]]],
    large: tuple[tornsession.SessionManager, list[tuple[Any, Any]]],
    passes: int = PASSES,
) -> dict[str, float]:
    """Loads from the small and the large store alternately (the machine is shared and noisy);
    medians over the passes, after one warm-up pass each."""
    load_us(*small)
    load_us(*large)
    small_us, large_us = [], []
    for _ in range(passes):
        small_us.append(load_us(*small))
        large_us.append(load_us(*large))
    s, g = statistics.median(small_us), statistics.median(large_us)
    return {"small_load_us": s, "large_load_us": g, "ratio": g / s}


def memory_store(n: int) -> dict[str, Any]:
    small_manager = tornsession.SessionManager(SECRET, store=tornsession.MemoryStore())
    small_samples: list[tuple[Any, Any]] = []
    fill(small_manager, 0, 1000, small_samples)
    store = tornsession.MemoryStore(max_sessions=2_000_000)
    manager = tornsession.SessionManager(SECRET, store=store)
    samples: list[tuple[Any, Any]] = []
    gc.collect()
    rss_before = rss_bytes()
    fill_s = fill(manager, 0, n, samples)
    gc.collect()
    rss_after = rss_bytes()
    assert len(store) == n, (len(store), n)
    per_session = (rss_after - rss_before) / n
    return {
        "small": 1000,
        "large": n,
        **compare((small_manager, small_samples), (manager, samples)),
        "fill_s": fill_s,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
        "bytes_per_session": per_session,
        "payload_bytes": payload_bytes(),
        "overhead_bytes": per_session - payload_bytes(),
    }


def redis_store(port: int, n: int) -> dict[str, Any]:
    """1,000 sessions in db 1, ``n`` in db 2 (made by tornsession for the samples, the rest by a
    redis-py pipeline with the same key prefix and value)."""
    import redis

    url = f"redis://127.0.0.1:{port}"
    small_client = redis.Redis(host="127.0.0.1", port=port, db=1)
    client = redis.Redis(host="127.0.0.1", port=port, db=2)
    small_client.flushdb()
    client.flushdb()
    small_manager = tornsession.SessionManager(SECRET, store=tornsession.RedisStore(f"{url}/1"))
    small_samples: list[tuple[Any, Any]] = []
    fill(small_manager, 0, 1000, small_samples)
    manager = tornsession.SessionManager(SECRET, store=tornsession.RedisStore(f"{url}/2"))
    samples: list[tuple[Any, Any]] = []
    fill(manager, 0, SAMPLES, samples)
    value = client.get(f"tornsession:{samples[-1][0]}")
    assert value is not None, "RedisStore keys are not 'tornsession:' + id"
    t = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(n - SAMPLES):
        pipe.set(f"tornsession:{os.urandom(16).hex()}", value)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    fill_s = time.perf_counter() - t
    size = client.dbsize()
    used_mb = client.info("memory")["used_memory"] / 2**20
    result = {
        "small": small_client.dbsize(),
        "large": size,
        **compare((small_manager, small_samples), (manager, samples)),
        "fill_s": fill_s,
        "redis_used_memory_mb": used_mb,
    }
    small_client.flushdb()
    client.flushdb()
    return result


def file_store(n: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="tornsession-scale-")
    try:
        small_manager = tornsession.SessionManager(SECRET, os.path.join(folder, "small"))
        small_samples: list[tuple[Any, Any]] = []
        fill(small_manager, 0, 1000, small_samples)
        manager = tornsession.SessionManager(SECRET, os.path.join(folder, "large"))
        samples: list[tuple[Any, Any]] = []
        fill_s = fill(manager, 0, n, samples)
        return {
            "small": 1000,
            "large": n,
            **compare((small_manager, small_samples), (manager, samples)),
            "fill_s": fill_s,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-port", type=int, help="a Redis server to fill (flushed!)")
    parser.add_argument("--memory-n", type=int, default=1_000_000)
    parser.add_argument("--redis-n", type=int, default=1_000_000)
    parser.add_argument("--file-n", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"memory": memory_store(args.memory_n)}
    if args.redis_port:
        results["redis"] = redis_store(args.redis_port, args.redis_n)
    results["file"] = file_store(args.file_n)
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
