"""BENCHMARKS.md's "Issue 20 targets" table, from the end-to-end results."""

from __future__ import annotations

import statistics
from typing import Any

from bench.report_format import LABELS, NO_COUNTER, pct, same_round

# Issue 20's "Targets" table, many-session workload: (row, variants, writing and reading share
# of the no-session app, whether the pipelined asyncio Redis floor of the same run is a target).
ISSUE20_TARGETS: tuple[tuple[str, tuple[str, ...], float, float, bool], ...] = (
    (
        "mixin, MemoryStore, compact cookie",
        ("tornsession-mixin-memory-compact",),
        0.84,
        0.87,
        False,
    ),
    (
        "mixin and drop-in, MemoryStore, two cookies",
        ("tornsession-mixin-memory", "tornsession-memory"),
        0.82,
        0.85,
        False,
    ),
    ("mixin, SqliteStore", ("tornsession-mixin-sqlite",), 0.72, 0.80, False),
    (
        "mixin, RedisStore and MemcachedStore",
        ("tornsession-mixin-redis", "tornsession-mixin-memcached"),
        0.71,
        0.79,
        True,
    ),
)
# Rows of the issue's table with no share target of their own: the frame the targets sit in,
# and the tornsession variants held to "not slower than the old release" only.
ISSUE20_CONTEXT = (
    "none-with-pair-cookies",
    "floor-dict-json",
    "floor-asyncio-redis",
    "floor-redis",
    "pycket-redis",  # shown when measured (`make bench`; not in --issue20)
)
ISSUE20_OTHERS = ("tornsession-sqlite", "tornsession-redis", "tornsession-memcached")
# Points the Redis and Memcached variants may be below the pipelined asyncio Redis floor.
FLOOR_POINTS = 2.0
# The old release had no compact cookie: its mixin on two cookies is what an app had then.
OLD_FALLBACK = {"tornsession-mixin-memory-compact": "old-tornsession-mixin-memory"}


def points_below(e2e: dict[str, Any], floor: str, variant: str, kind: str) -> float | None:
    """Median over rounds of the floor's share minus the variant's (same round), in points."""
    rounds = e2e["data"]["rounds"]
    if not rounds or floor not in rounds[0] or variant not in rounds[0]:
        return None
    diffs = [
        (r[floor][kind]["rps"] - r[variant][kind]["rps"]) / r["none"][kind]["rps"] for r in rounds
    ]
    return float(statistics.median(diffs)) * 100


def issue20_table(e2e: dict[str, Any]) -> list[str]:
    """Issue 20's targets on the many-session workload, computed from the run's JSON."""
    data = e2e["data"]
    s, rounds = data["summary"], data["rounds"]
    missing: dict[str, str] = data.get("not_available", {})
    old = e2e["meta"].get("old") or {}
    old_label = old.get("label", "old")
    if not data.get("sessions") or not any("many_write" in row for row in s.values()):
        return ["not run (needs the many-session workload: `--sessions N`, N > 0)"]
    kinds = ("many_write", "many_read")

    def share(variant: str, kind: str) -> str:
        r = s[variant][kind]
        return f"{pct(r['ratio_median'])} ({pct(r['ratio_min'])}-{pct(r['ratio_max'])})"

    def against(variant: str, target: float, kind: str) -> str:
        # decided on the rounded figure shown, so the cell never reads "missed by 0.0"
        gap = round((s[variant][kind]["ratio_median"] - target) * 100, 1)
        return f"met (+{gap:.1f})" if gap >= 0 else f"**missed by {-gap:.1f}**"

    def vs_old(variant: str) -> str:
        twin = f"old-{variant}"
        mark = ""
        if twin not in s and variant in OLD_FALLBACK and OLD_FALLBACK[variant] in s:
            twin, mark = OLD_FALLBACK[variant], "†"
        if twin not in s:
            return "-"
        cells = [same_round(e2e, variant, twin, kind) for kind in kinds]
        return " / ".join("-" if x is None else f"{x:.2f}x" for x in cells) + mark

    def errors(variant: str) -> str:
        row = s[variant]
        non2xx = sum(row[k]["non2xx"] for k in ("write", "read", *kinds) if k in row)
        if variant in NO_COUNTER:
            return f"{non2xx} | n/a"
        return f"{non2xx} | {row['lost']} / {row.get('many_lost', '-')}"

    def floor_cell(variant: str, wanted: bool) -> str:
        if not wanted:
            return ""
        below = [points_below(e2e, "floor-asyncio-redis", variant, kind) for kind in kinds]
        if None in below:
            return "floor not measured"
        shown = [round(b, 1) for b in below if b is not None]  # decided on what is shown
        text = " / ".join(f"{b:.1f}" for b in shown)
        met = all(b <= FLOOR_POINTS for b in shown)
        return f"{text}: " + ("met" if met else f"**missed** (> {FLOOR_POINTS:.0f})")

    lines = [
        f"Many-session workload ({data['sessions']:,} sessions, {len(rounds)} round(s) of "
        f"{data['seconds']} s). Share = requests/s over the no-session app's (no Cookie header) "
        "in the same round, median (min-max over rounds), writing / reading; *vs target* in "
        "points of that share; *below floor*: median over rounds of the pipelined asyncio Redis "
        f"floor's share minus the variant's, in points (target: within {FLOOR_POINTS:.0f}; "
        "negative: above the floor); "
        f"*vs {old_label}*: median over rounds of the variant's requests/s over its "
        f"{old_label} twin's in the same round (target ≥ 1.00x), writing / reading; non-2xx: "
        "both workloads, all rounds; lost: one-session / many-session workload, writing "
        "requests wrk completed minus the counters' growth, all rounds.",
        "",
        f"| variant | target | writing | reading | vs target (w / r) | below floor (w / r) "
        f"| vs {old_label} | non-2xx | lost |",
        "|---|---|--:|--:|---|---|--:|--:|--:|",
    ]
    slower: list[str] = []
    unmeasured: list[str] = []

    def row(variant: str, target: str, verdict: str, floor: str) -> None:
        name = LABELS.get(variant, variant)
        if variant in missing:
            lines.append(f"| {name} | {target} | not available: {missing[variant]} |||||||")
            unmeasured.append(variant)
            return
        if variant not in s:
            lines.append(f"| {name} | {target} | not measured |||||||")
            unmeasured.append(variant)
            return
        cells = vs_old(variant)
        if any(c.startswith("0.") for c in cells.split(" / ")):
            slower.append(f"{variant} {cells}")
        lines.append(
            f"| {name} | {target} | {share(variant, kinds[0])} | {share(variant, kinds[1])} "
            f"| {verdict} | {floor} | {cells} | {errors(variant)} |"
        )

    for variant in ISSUE20_CONTEXT:
        if variant in s or variant in missing:
            row(variant, "-", "", "")
    for _row_name, variants, write_t, read_t, floor in ISSUE20_TARGETS:
        target = f"≥ {pct(write_t)} / {pct(read_t)}" + (
            f", ≤ {FLOOR_POINTS:.0f} below floor" if floor else ""
        )
        for variant in variants:
            if variant in s:
                verdict = (
                    f"{against(variant, write_t, kinds[0])} / {against(variant, read_t, kinds[1])}"
                )
            else:
                verdict = ""
            row(
                variant,
                target,
                verdict,
                floor_cell(variant, floor) if variant in s else "",
            )
    for variant in ISSUE20_OTHERS:
        if variant in s:
            row(variant, f"≥ 1.00x {old_label}", "", "")
    tornsession = [v for v in s if v.startswith("tornsession-")]
    non2xx = sum(s[v][k]["non2xx"] for v in s for k in ("write", "read", *kinds) if k in s[v])
    # tornsession's own: the floors take no turns, so the asyncio one loses concurrent
    # increments of one session by design (one-session workload)
    lost = sum(s[v]["lost"] + s[v].get("many_lost", 0) for v in tornsession)
    has_old = any(f"old-{v}" in s for v in tornsession)
    lines += [
        "",
        "Every variant: "
        + (
            (
                f"not slower than {old_label}: "
                + ("**missed**: " + "; ".join(slower) if slower else "met")
            )
            if has_old
            else f"not slower than {old_label}: not measured (run with `--old-python`)"
        )
        + f"; non-2xx: {'met (0)' if non2xx == 0 else f'**missed** ({non2xx})'}"
        + "; lost updates (tornsession, both workloads): "
        + ("met (0)" if lost == 0 else f"**missed** ({lost})")
        + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else "")
        + ".",
    ]
    if any(v in OLD_FALLBACK and f"old-{v}" not in s for v in s):
        lines.append(f"† against {old_label}'s mixin on two cookies (it has no compact cookie).")
    return lines
