"""Writes BENCHMARKS.md from bench/results/*.json (see bench/run.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.app import TORNSESSION_STORES
from bench.report_format import (
    LABELS,
    NO_COUNTER,
    label,
    pct,
    ratio_verdict,
    same_round,
    verdict,
)
from bench.report_issue20 import issue20_table

# "What we measured before starting" (the issue): share of the no-session app, wrk -c8, one run.
BEFORE = {
    "reference-file": (0.25, 0.61),
    "torndsession-memory": (0.77, 0.83),
    "torndsession-file": (0.33, 0.68),
    "torndsession-redis": (0.09, 0.10),
    "pycket-redis": (0.07, 0.10),
    "pycket-memcached": (0.22, 0.35),
}

# The previous BENCHMARKS.md (commit 972bd0f, 2026-11-25 18:48 UTC, before the session engine
# was rewritten): writing and reading shares of the no-session app, drop-in variants.
PREVIOUS = {
    "tornsession-memory": (0.82, 0.80),
    "tornsession-sqlite": (0.69, 0.79),
    "tornsession-file": (0.35, 0.80),
    "tornsession-redis": (0.38, 0.52),
    "tornsession-memcached": (0.26, 0.39),
}

# Everything after this line in BENCHMARKS.md is hand-written analysis, kept across re-runs.
NOTES_MARKER = "<!-- hand-written notes below: kept by bench/report.py -->"


def load(results: Path, part: str) -> dict[str, Any] | None:
    path = results / f"{part}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def targets(e2e: dict[str, Any] | None, scale: dict[str, Any] | None) -> list[str]:
    lines = ["| target | result |", "|---|---|"]
    s = e2e["data"]["summary"] if e2e else {}

    def ratio(v: str, kind: str) -> float | None:
        return s[v][kind]["ratio_median"] if v in s else None

    def rps(v: str, kind: str) -> float | None:
        return s[v][kind]["rps_median"] if v in s else None

    def row(name: str, text: str | None) -> None:
        lines.append(f"| {name} | {text if text is not None else 'not measured'} |")

    for variant, store, read_t, write_t in (
        ("tornsession-memory", "MemoryStore", 0.95, 0.95),
        ("tornsession-sqlite", "SqliteStore", 0.93, 0.85),
        ("tornsession-file", "FileStore", 0.93, None),
        ("tornsession-redis", "RedisStore", 0.70, 0.55),
        ("tornsession-memcached", "MemcachedStore", 0.70, 0.55),
    ):
        r = ratio(variant, "read")
        row(f"{store} reading ≥ {pct(read_t)}", None if r is None else ratio_verdict(r, read_t))
        if write_t is not None:
            w = ratio(variant, "write")
            row(
                f"{store} writing ≥ {pct(write_t)}",
                None if w is None else ratio_verdict(w, write_t),
            )
    fw, rw = rps("tornsession-file", "write"), rps("reference-file", "write")
    row(
        "FileStore writing ≥ 1.8x the original's requests/s",
        None if fw is None or rw is None else verdict(fw / rw, 1.8, unit="x"),
    )
    for ours, peer in (
        ("tornsession-redis", "pycket-redis"),
        ("tornsession-memcached", "pycket-memcached"),
    ):
        a, b = rps(ours, "write"), rps(peer, "write")
        row(
            f"{LABELS[ours].split()[-1]} writing ≥ 5x {LABELS[peer]}",
            None if a is None or b is None else verdict(a / b, 5.0, unit="x"),
        )
    lost = {v: s[v]["lost"] for v in s if "tornsession-" in v and v not in NO_COUNTER}
    if lost:
        bad = {v: n for v, n in lost.items() if n}
        row(
            "zero lost increments in every tornsession variant",
            "**met** (0 in every variant, every round)"
            if not bad
            else "**missed**: " + ", ".join(f"{v} lost {n}" for v, n in bad.items()),
        )
    else:
        row("zero lost increments in every tornsession variant", None)
    sd = scale["data"] if scale else {}
    for store, name in (("memory", "MemoryStore"), ("redis", "RedisStore"), ("file", "FileStore")):
        if store in sd:
            d = sd[store]
            row(
                f"{name}: load at {d['large']:,} sessions within 1.5x of {d['small']:,}",
                verdict(d["ratio"], 1.5, higher_is_better=False, unit="x")
                + f"; {d['small_load_us']:.1f} µs -> {d['large_load_us']:.1f} µs",
            )
        else:
            row(f"{name}: load at scale within 1.5x of 1,000", None)
    if "memory" in sd:
        row(
            "MemoryStore < 300 bytes per session beyond the payload",
            verdict(sd["memory"]["overhead_bytes"], 300, higher_is_better=False, unit=" B"),
        )
    else:
        row("MemoryStore < 300 bytes per session beyond the payload", None)
    return lines


STORE_LABELS = {
    "memory": "MemoryStore",
    "sqlite": "SqliteStore",
    "file": "FileStore",
    "redis": "RedisStore",
    "memcached": "MemcachedStore",
    "cookie": "CookieStore",
}


def tornsession_table(e2e: dict[str, Any]) -> list[str]:
    """Drop-in and mixin side by side, with the old release (same run) and the previous run."""
    s = e2e["data"]["summary"]
    old = e2e["meta"].get("old") or {}
    has_old = any(
        f"old-tornsession-{style}{store}" in s
        for store in TORNSESSION_STORES
        for style in ("", "mixin-")
    )
    old_name = f"old ({old['label']})" if old else "old"

    def share(variant: str, kind: str) -> str:
        if variant not in s:
            return "-"
        r = s[variant][kind]
        return f"{pct(r['ratio_median'])} ({pct(r['ratio_min'])}-{pct(r['ratio_max'])})"

    def times(a: str, b: str, kind: str) -> str:
        x = same_round(e2e, a, b, kind)
        return "-" if x is None else f"{x:.2f}x"

    lines = [
        "Shares of the no-session app's requests/s in the same round (median, min-max over "
        "rounds). *drop-in*: `TornadoSession(manager, self)` in `__init__` and an explicit "
        "`save()`, the original module's usage; *mixin*: `SessionMixin`, loaded in `prepare()`, "
        "saved in `finish()` when changed."
        + (
            f" *{old_name}*: the same handlers under tornsession {old.get('version')} "
            f"({old['label']}), another venv, in the same round robin; *new/old*: median over "
            "rounds of the new variant's requests/s over the old one's in the same round."
            if has_old
            else ""
        )
        + " *previous run*: the drop-in share in the previous BENCHMARKS.md (another run, "
        "another moment of the shared machine).",
        "",
    ]
    kinds = (("write", "writing"), ("read", "reading"))
    for kind, word in kinds:
        head = f"| store ({word}) | drop-in | mixin | mixin/drop-in |"
        rule = "|---|--:|--:|--:|"
        if has_old:
            head += f" {old_name} drop-in | new/old | {old_name} mixin | new/old mixin |"
            rule += "--:|--:|--:|--:|"
        head += " previous run |"
        rule += "--:|"
        lines += [head, rule]
        for store in (*TORNSESSION_STORES, "cookie"):
            drop_in, mixin, old_v, old_mixin = (
                f"tornsession-{store}",
                f"tornsession-mixin-{store}",
                f"old-tornsession-{store}",
                f"old-tornsession-mixin-{store}",
            )
            if drop_in not in s and mixin not in s:
                continue
            row = (
                f"| {STORE_LABELS[store]} | {share(drop_in, kind)} | {share(mixin, kind)} | "
                f"{times(mixin, drop_in, kind)} |"
            )
            if has_old:
                row += f" {share(old_v, kind)} | {times(drop_in, old_v, kind)} |"
                row += f" {share(old_mixin, kind)} | {times(mixin, old_mixin, kind)} |"
            previous = PREVIOUS.get(drop_in)
            row += f" {pct(previous[0 if kind == 'write' else 1]) if previous else '-'} |"
            lines.append(row)
        lines.append("")
    return lines[:-1]


def e2e_table(e2e: dict[str, Any]) -> list[str]:
    s = e2e["data"]["summary"]
    rounds = len(e2e["data"]["rounds"])
    lines = [
        f"Medians of {rounds} round-robin rounds of {e2e['data']['seconds']} s per measurement; "
        "ratio = requests/s over the no-session app's in the same round (median, with the "
        "min-max over rounds). *Before* is the issue's one-run figure. Lost = writing requests "
        "wrk completed minus the counter's growth, summed over rounds.",
        "",
        "| variant | writing req/s | writing ratio | before | reading req/s | reading ratio "
        "| before | lost / writes | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for variant, row in s.items():
        w, r = row["write"], row["read"]
        before = BEFORE.get(variant)
        lost = "n/a" if variant in NO_COUNTER else f"{row['lost']:,} / {row['writes']:,}"
        lines.append(
            f"| {label(variant, e2e['meta'])} | {w['rps_median']:,.0f} | "
            f"{pct(w['ratio_median'])} ({pct(w['ratio_min'])}-{pct(w['ratio_max'])}) | "
            f"{pct(before[0]) if before else ''} | {r['rps_median']:,.0f} | "
            f"{pct(r['ratio_median'])} ({pct(r['ratio_min'])}-{pct(r['ratio_max'])}) | "
            f"{pct(before[1]) if before else ''} | {lost} | {w['errors'] + r['errors']} |"
        )
    return lines


def workloads_table(e2e: dict[str, Any]) -> list[str]:
    """The one-session and the many-session workload side by side, writing then reading."""
    s = e2e["data"]["summary"]
    rounds = len(e2e["data"]["rounds"])
    sessions = e2e["data"].get("sessions", 0)
    if not sessions or not any("many_write" in row for row in s.values()):
        return ["not run (`--sessions 0`)"]
    lines = [
        f"*one session*: every request carries one session's cookies (the table above); *"
        f"{sessions:,} sessions*: {sessions:,} sessions made before the rounds (one `/write` "
        "each, their Set-Cookie kept), then wrk cycles through them, one request per session in "
        "turn (`bench/wrk_many.lua`; wrk's two threads start half the list apart). Medians of "
        f"{rounds} round-robin rounds of {e2e['data']['seconds']} s; share = requests/s over the "
        "no-session app's in the same round and workload (median, min-max over rounds); non-2xx "
        "= responses wrk counted as errors (status 400 and up; the app sends no 3xx), summed "
        "over rounds.",
    ]

    def cells(row: dict[str, Any], kind: str) -> str:
        if kind not in row:
            return "- | - | -"
        r = row[kind]
        return (
            f"{r['rps_median']:,.0f} | {pct(r['ratio_median'])} "
            f"({pct(r['ratio_min'])}-{pct(r['ratio_max'])}) | {r['non2xx']:,}"
        )

    for kind, word in (("write", "writing"), ("read", "reading")):
        lines += [
            "",
            f"| variant ({word}) | one session req/s | share | non-2xx | {sessions:,} sessions "
            "req/s | share | non-2xx |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for variant, row in s.items():
            lines.append(
                f"| {label(variant, e2e['meta'])} | {cells(row, kind)} | "
                f"{cells(row, 'many_' + kind)} |"
            )
    return lines


def inproc_table(ip: dict[str, Any]) -> list[str]:
    lines = [
        "µs per cycle, best of 5 timeit repeats. *write*: build a RequestHandler for a request "
        "with the session's cookies, load, read a key, write a key, save; *read*: build, load, "
        "read. *net* subtracts the bare handler build (Tornado's own cost, in the first column).",
        "",
        "SessionMixin is not timed in process (its load and save run in an async `prepare()` and "
        "in `finish()`, which need an event loop and a connection; see bench/inprocess.py), "
        "only end to end above.",
        "",
        "| implementation | handler build | write | write net | read | read net |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for impl, r in ip["data"].items():
        lines.append(
            f"| {LABELS.get(impl, impl)} | {r['handler_us']:.1f} | {r['write_us']:.1f} | "
            f"{r['write_net_us']:.1f} | {r['read_us']:.1f} | {r['read_net_us']:.1f} |"
        )
    return lines


def scale_section(sc: dict[str, Any]) -> list[str]:
    d = sc["data"]
    lines = [
        f"Measured {sc['meta']['date']} with `{sc['meta']['command']}`. Load = "
        "`SessionManager.get(id, digest)` of stored sessions in random order (10,000 samples "
        "spread over the large store, all of the 1,000-session one), small and large passes "
        "alternating, median of 7 each.",
        "",
        "| store | small | load µs | large | load µs | ratio | fill time |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for store in ("memory", "redis", "file"):
        if store in d:
            r = d[store]
            lines.append(
                f"| {store} | {r['small']:,} | {r['small_load_us']:.1f} | {r['large']:,} | "
                f"{r['large_load_us']:.1f} | {r['ratio']:.2f}x | {r['fill_s']:.0f} s |"
            )
    if "memory" in d:
        m = d["memory"]
        lines += [
            "",
            f"MemoryStore memory: RSS grew {m['rss_growth_mb']:.0f} MiB for {m['large']:,} "
            f"sessions = {m['bytes_per_session']:.0f} bytes per session; the payload "
            f'(`{{"user": "user-0000123", "n": 123}}` as compact JSON) is '
            f"{m['payload_bytes']:.0f} bytes, so **{m['overhead_bytes']:.0f} bytes per session "
            "beyond the payload** (id, digest, LRU and map bookkeeping, allocator slack; the "
            "10,000 kept samples add about 2 bytes per session at 1,000,000).",
        ]
    if "redis" in d:
        lines.append(
            f"Redis `used_memory` at {d['redis']['large']:,} keys: "
            f"{d['redis']['redis_used_memory_mb']:.0f} MiB."
        )
    return lines


def profile_section(pr: dict[str, Any]) -> list[str]:
    d = pr["data"]
    lines = [
        f"cProfile of the `{d['variant']}` app under wrk (`python -m bench.profile`), measured "
        f"{pr['meta']['date']}. Shares are of all profiled time in the server process (Tornado's "
        "HTTP handling included); cProfile inflates pure-Python call costs, so read the shares, "
        "not the µs. Methods of the Rust core appear as `<method ... of 'tornsession...'>`; "
        "their own time is the Rust work, the cookie calls they make back into Tornado are "
        "listed as Tornado functions.",
    ]
    keys = ("tornsession", "signed_cookie", "set_cookie", "bench/app.py", "_execute", "finish")
    for kind in ("write", "read"):
        r = d[kind]
        lines += [
            "",
            f"**{kind} handler** ({r['profiled_us_per_request']:.0f} µs per request under the "
            "profiler): cumulative shares along the session path",
            "",
            "| function | calls/request | cumulative share | own share |",
            "|---|--:|--:|--:|",
        ]
        for row in r["by_cum"]:
            if any(k in row["function"] for k in keys):
                lines.append(
                    f"| `{row['function']}` | {row['calls_per_request']:.1f} | "
                    f"{pct(row['cum_share'])} | {row['own_share']:.1%} |"
                )
        lines += ["", "Top own time:", "", "| function | own share |", "|---|--:|"]
        for row in r["by_own"][:10]:
            lines.append(f"| `{row['function']}` | {row['own_share']:.1%} |")
    if "in_process" in d:
        lines += [
            "",
            "**The session cycle alone** (cProfile of bench/inprocess.py's cycles: a "
            "RequestHandler on a fake request, TornadoSession, get, set, save; no HTTP). "
            "All functions by own time:",
        ]
        lines += ["", "| share of the cycle | write | read |", "|---|--:|--:|"]
        ipw, ipr = d["in_process"]["write"], d["in_process"]["read"]
        for group in ipw.get("groups", {}):
            lines.append(
                f"| {group} | {ipw['groups'][group]:.0%} | {ipr['groups'].get(group, 0):.0%} |"
            )
        for kind in ("write", "read"):
            r = d["in_process"][kind]
            lines += [
                "",
                f"*{kind} cycle* ({r['profiled_us_per_request']:.0f} µs per cycle under the "
                "profiler)",
                "",
                "| function | calls/cycle | own share | cumulative share |",
                "|---|--:|--:|--:|",
            ]
            for row in r["by_own"][:12]:
                lines.append(
                    f"| `{row['function']}` | {row['calls_per_request']:.1f} | "
                    f"{row['own_share']:.1%} | {pct(row['cum_share'])} |"
                )
    return lines


def write_report(out: Path, results: Path, elapsed_s: float | None = None) -> None:
    e2e, ip, sc, pr = (load(results, p) for p in ("end_to_end", "in_process", "scale", "profile"))
    meta = (e2e or ip or {}).get("meta", {})
    m = meta.get("machine", {})
    parts = [
        "# Benchmarks",
        "",
        "Side-by-side: tornsession on each store, used the original module's way (drop-in) and "
        "through `SessionMixin`, a Python 3 port of the original 2009 "
        "`session.py` (`bench/reference_session.py`), and the peers torndsession and pycket "
        "from PyPI, all behind one Tornado app (`bench/app.py`). Regenerate with "
        "`make bench` (= `bash bench/run.sh` = `python -m bench.run`; see `bench/README.md`).",
        "",
        "tornsession writes the store only when the session changed, sends cookies only when "
        "they are due (new, regenerated, re-signed or a day old) and reads Tornado's signed "
        "cookies in Rust; requests of one session take turns within a process "
        "(`order_requests=True`, the default); the benchmark app sets no idle_timeout.",
        "",
        "## Machine and run",
        "",
        f"- date: {meta.get('date', '?')}, commit `{meta.get('git', '?')}`",
        f"- command: `{meta.get('command', '?')}`"
        + (f" ({elapsed_s / 60:.1f} min)" if elapsed_s else ""),
        f"- nproc {m.get('nproc')}, CPU {m.get('cpu')}, memory {m.get('memory')}, "
        f"kernel {m.get('kernel')}",
        f"- Python {m.get('python')}, Tornado {m.get('tornado')}, {m.get('wrk')}, "
        f"{m.get('redis', '').split(' sha')[0]}, {m.get('memcached')}",
        f"- load average (1, 5, 15 min) at the start {meta.get('loadavg_start', '?')}, at "
        f"the end of the wrk part {meta.get('loadavg_end', '?')}: the machine is shared with "
        "other builds and test runs, which is most of the spread between rounds",
        "- wrk `-c8 -t2` (8 keep-alive connections) on 127.0.0.1, one session cookie per "
        "measurement, then (the many-session workload) many sessions in turn; wrk and the "
        "server on the same machine; the machine varies ~10% between runs, hence round robin "
        "and medians.",
        "",
        "## Targets",
        "",
        *targets(e2e, sc),
        "",
        "## Issue 20 targets (many sessions)",
        "",
        *(issue20_table(e2e) if e2e else ["not run"]),
        "",
        "## tornsession: drop-in and mixin, old and new",
        "",
        *(tornsession_table(e2e) if e2e else ["not run"]),
        "",
        "## End to end (wrk)",
        "",
        *(e2e_table(e2e) if e2e else ["not run"]),
        "",
        "## One session and many sessions (wrk)",
        "",
        *(workloads_table(e2e) if e2e else ["not run"]),
        "",
        "## In process (timeit)",
        "",
        *(inproc_table(ip) if ip else ["not run"]),
        "",
        "## Scale",
        "",
        *(scale_section(sc) if sc else ["not run (`--quick` and `--no-scale` skip it)"]),
        "",
        "## Profile: tornsession MemoryStore",
        "",
        *(profile_section(pr) if pr else ["not run (omit `--quick` / `--no-profile`)"]),
        "",
    ]
    notes = ""
    if out.exists() and NOTES_MARKER in out.read_text():
        notes = out.read_text().split(NOTES_MARKER, 1)[1]
    out.write_text("\n".join(parts) + "\n" + NOTES_MARKER + notes)
