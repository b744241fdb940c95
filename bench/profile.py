"""Where tornsession's per-request time goes: cProfile of a MemoryStore app under wrk.

    python -m bench.profile --seconds 5 [--variant tornsession-memory] [--json]

Starts bench/app.py with ``--profile``, drives ``/write`` (then, in a second process,
``/read``) with wrk on one session cookie, stops it with SIGTERM (which dumps the stats) and
lists the functions with the largest own time (tottime) and cumulative time, as shares of the
profiled time. The Rust core's methods show up as ``{method ... of 'tornsession._core...'}``:
their own time is the Rust work, what they call back into Python (cookies) is listed apart.
cProfile adds a fixed cost per Python call, so pure-Python frames weigh a bit more than they
would unprofiled; the shares, not the absolute times, are the point.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, new_session_cookie, run_wrk
from bench.servers import free_port, wait_for_port


def label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "bench", "lib"):
        if anchor in parts:
            idx = len(parts) - 1 - parts[::-1].index(anchor)
            short = "/".join(parts[idx + 1 :] if anchor != "bench" else parts[idx:])
            return f"{short}:{line}({name})"
    return f"{path.name}:{line}({name})"


def profile_one(variant: str, path: str, seconds: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tornsession-profile-") as tmp:
        stats_file = f"{tmp}/stats.prof"
        argv = [sys.executable, "-m", "bench.app", "--variant", variant, "--port", str(port)]
        argv += ["--data-dir", tmp, "--profile", stats_file]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port, proc)
            cookie = new_session_cookie(port)
            wrk = run_wrk(port, path, cookie, seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not Path(stats_file).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = pstats.Stats(stats_file)
    requests = max(1, wrk["requests"])
    return {
        "requests": wrk["requests"],
        "rps_under_profiler": wrk["rps"],
        **summarize_stats(stats, requests),
    }


def summarize_stats(stats: pstats.Stats, cycles: int) -> dict[str, Any]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    rows = [
        {
            "function": label(func),
            "calls_per_request": nc / cycles,
            "own_share": tt / total,
            "cum_share": ct / total,
            "own_us_per_request": tt / cycles * 1e6,
            "cum_us_per_request": ct / cycles * 1e6,
        }
        for func, (_cc, nc, tt, ct, _callers) in raw.items()
    ]

    def cum_of(name: str) -> float:
        return float(
            sum(
                ct
                for (f, _l, n), (_cc, _nc, _tt, ct, _c) in raw.items()
                if n == name and "web.py" in f
            )
        )

    core = sum(tt for func, (_cc, _nc, tt, _ct, _c) in raw.items() if "tornsession" in str(func))
    groups = {
        "Tornado get_signed_cookie, cumulative": cum_of("get_signed_cookie") / total,
        "Tornado set_signed_cookie, cumulative": cum_of("set_signed_cookie") / total,
        "tornsession core (own time of its methods)": core / total,
    }
    return {
        "groups": groups,
        "tornsession_rows": sorted(
            (r for r in rows if "tornsession" in r["function"]),
            key=lambda r: r["own_share"],
            reverse=True,
        ),
        "profiled_us_per_request": total / cycles * 1e6,
        "by_own": sorted(rows, key=lambda r: r["own_share"], reverse=True)[:15],
        "by_cum": sorted(
            (r for r in rows if r["cum_share"] < 0.999), key=lambda r: r["cum_share"], reverse=True
        )[:25],
    }


def profile_cycles(impl: str, cycles: int) -> dict[str, Any]:
    """cProfile of the in-process cycles of bench/inprocess.py (no HTTP, no wrk)."""
    from bench.inprocess import cookie_header
    from bench.inprocess import cycles as make_cycles

    ns = argparse.Namespace(redis_port=6379, memcached_port=11211)
    bench, write, read = make_cycles(impl, ns)
    bench.cookies = cookie_header(write())
    out: dict[str, Any] = {}
    for kind, fn in (("write", write), ("read", read)):
        for _ in range(200):
            fn()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(cycles):
            fn()
        profiler.disable()
        out[kind] = summarize_stats(pstats.Stats(profiler), cycles)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="tornsession-memory")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {
        "variant": args.variant,
        "write": profile_one(args.variant, "/write", args.seconds),
        "read": profile_one(args.variant, "/read", args.seconds),
    }
    if args.variant == "tornsession-memory":
        results["in_process"] = profile_cycles("tornsession-memory", 20_000)
    if args.json:
        print(json.dumps(results))
        return
    for kind in ("write", "read"):
        r = results[kind]
        print(f"== {kind}: {r['profiled_us_per_request']:.0f} µs per request under cProfile")
        for row in r["by_own"]:
            print(f"{row['own_share']:6.1%} {row['own_us_per_request']:7.1f} µs  {row['function']}")


if __name__ == "__main__":
    main()
