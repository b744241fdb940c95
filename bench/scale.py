"""Load time with many sessions stored, and MemoryStore's memory per session.

    python -m bench.scale --redis-port 6379 [--json] [--memory-n 1000000] [--file-n 100000]

For each store: fill it to a small size (1,000) and time loading sampled sessions through
``SessionManager.get(id, digest)``; fill on to the large size and time loading samples spread
over all of them. MemoryStore's memory is the process's RSS growth while filling, per session,
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
import tempfile
import time
from typing import Any

import tornsession

SECRET = "bench-secret-0123456789abcdef"
SAMPLES = 10_000


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
    """µs per load of a stored session, median of 3 passes over the samples in random order."""
    order = samples[:]
    times = []
    for _ in range(3):
        random.shuffle(order)
        start = time.perf_counter()
        for session_id, digest in order:
            manager.get(session_id, digest)
        times.append((time.perf_counter() - start) / len(order) * 1e6)
    times.sort()
    return times[1]


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


def grow(manager: tornsession.SessionManager, small: int, large: int) -> dict[str, Any]:
    samples_small: list[tuple[Any, Any]] = []
    fill(manager, 0, small, samples_small)
    small_us = load_us(manager, samples_small)
    samples: list[tuple[Any, Any]] = [p for j, p in enumerate(samples_small) if j % 10 == 0]
    fill_s = fill(manager, small, large, samples)
    large_us = load_us(manager, samples[:SAMPLES])
    return {
        "small": small,
        "large": large,
        "small_load_us": small_us,
        "large_load_us": large_us,
        "ratio": large_us / small_us,
        "fill_s": fill_s,
    }


def memory_store(n: int) -> dict[str, Any]:
    store = tornsession.MemoryStore(max_sessions=2_000_000)
    manager = tornsession.SessionManager(SECRET, store=store)
    gc.collect()
    rss_before = rss_bytes()
    result = grow(manager, 1000, n)
    gc.collect()
    rss_after = rss_bytes()
    assert len(store) == n, (len(store), n)
    per_session = (rss_after - rss_before) / n
    result.update(
        rss_growth_mb=(rss_after - rss_before) / 2**20,
        bytes_per_session=per_session,
        payload_bytes=payload_bytes(),
        overhead_bytes=per_session - payload_bytes(),
    )
    return result


def redis_store(port: int, n: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    client.flushdb()
    manager = tornsession.SessionManager(
        SECRET, store=tornsession.RedisStore(f"redis://127.0.0.1:{port}/0")
    )
    samples_small: list[tuple[Any, Any]] = []
    fill(manager, 0, 1000, samples_small)
    small_us = load_us(manager, samples_small)
    # the rest: SAMPLES real sessions made by tornsession, the others written by a pipeline
    samples = samples_small[:1000:10]
    fill(manager, 1000, 1000 + SAMPLES, samples)
    value = client.get(f"tornsession:{samples[-1][0]}")
    assert value is not None, "RedisStore keys are not 'tornsession:' + id"
    t = time.perf_counter()
    rest = n - client.dbsize()
    pipe = client.pipeline(transaction=False)
    for i in range(rest):
        pipe.set(f"tornsession:{os.urandom(16).hex()}", value)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    fill_s = time.perf_counter() - t
    size = client.dbsize()
    large_us = load_us(manager, samples)
    used_mb = client.info("memory")["used_memory"] / 2**20
    client.flushdb()
    return {
        "small": 1000,
        "large": size,
        "small_load_us": small_us,
        "large_load_us": large_us,
        "ratio": large_us / small_us,
        "fill_s": fill_s,
        "redis_used_memory_mb": used_mb,
    }


def file_store(n: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="tornsession-scale-")
    try:
        manager = tornsession.SessionManager(SECRET, os.path.join(folder, "sessions"))
        return grow(manager, 1000, n)
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
