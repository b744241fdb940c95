"""What the report's tables share: variant labels and how numbers are written."""

from __future__ import annotations

import statistics
from typing import Any

# Variants without a session counter (no lost-update check); on CookieStore the counter travels
# in the cookie, which wrk sends back unchanged, so there is no shared counter to check.
NO_COUNTER = (
    "none",
    "none-with-pair-cookies",
    "cookies-only",
    "tornsession-cookie",
    "tornsession-mixin-cookie",
)

LABELS = {
    "none": "no session",
    "none-with-pair-cookies": (
        "no session, receiving tornsession's two cookies (a 366-byte Cookie header)"
    ),
    "floor-dict-json": "floor: raw cookie, dict, JSON",
    "floor-asyncio-redis": "floor: one pipelined asyncio Redis connection",
    "tornsession-mixin-memory-compact": "tornsession SessionMixin, MemoryStore, compact cookie",
    "tornsession-mixin-memory-nometrics": "tornsession SessionMixin, MemoryStore, metrics=False",
    "old-tornsession-mixin-memory-compact": (
        "old tornsession SessionMixin, MemoryStore, compact cookie"
    ),
    "cookies-only": "two Tornado signed cookies, no store (ceiling)",
    "tornsession-memory": "tornsession MemoryStore",
    "tornsession-sqlite": "tornsession SqliteStore",
    "tornsession-file": "tornsession FileStore (session_dir)",
    "tornsession-redis": "tornsession RedisStore",
    "tornsession-memcached": "tornsession MemcachedStore",
    "tornsession-cookie": "tornsession CookieStore (sealed cookie)",
    "tornsession-mixin-memory": "tornsession SessionMixin, MemoryStore",
    "tornsession-mixin-sqlite": "tornsession SessionMixin, SqliteStore",
    "tornsession-mixin-file": "tornsession SessionMixin, FileStore (session_dir)",
    "tornsession-mixin-redis": "tornsession SessionMixin, RedisStore",
    "tornsession-mixin-memcached": "tornsession SessionMixin, MemcachedStore",
    "tornsession-mixin-cookie": "tornsession SessionMixin, CookieStore (sealed cookie)",
    "old-tornsession-memory": "old tornsession MemoryStore",
    "old-tornsession-sqlite": "old tornsession SqliteStore",
    "old-tornsession-file": "old tornsession FileStore (session_dir)",
    "old-tornsession-redis": "old tornsession RedisStore",
    "old-tornsession-memcached": "old tornsession MemcachedStore",
    "old-tornsession-mixin-memory": "old tornsession SessionMixin, MemoryStore",
    "old-tornsession-mixin-sqlite": "old tornsession SessionMixin, SqliteStore",
    "old-tornsession-mixin-file": "old tornsession SessionMixin, FileStore (session_dir)",
    "old-tornsession-mixin-redis": "old tornsession SessionMixin, RedisStore",
    "old-tornsession-mixin-memcached": "old tornsession SessionMixin, MemcachedStore",
    "floor-redis": "redis-py floor (blocking; plain cookie, GET/SET, JSON)",
    "reference-file": "Python 3 port of the original, file store",
    "torndsession-memory": "torndsession memory",
    "torndsession-file": "torndsession file",
    "torndsession-redis": "torndsession redis",
    "pycket-redis": "pycket redis",
    "pycket-memcached": "pycket memcached",
}


def pct(x: float) -> str:
    return f"{x:.0%}"


def verdict(value: float, target: float, higher_is_better: bool = True, unit: str = "") -> str:
    met = value >= target if higher_is_better else value <= target
    if met:
        return f"**met** ({value:.2f}{unit} vs {target:.2f}{unit})"
    gap = (target - value) if higher_is_better else (value - target)
    return f"**missed** by {gap:.2f}{unit} ({value:.2f}{unit} vs {target:.2f}{unit})"


def ratio_verdict(value: float, target: float) -> str:
    if value >= target:
        return f"**met** ({pct(value)} ≥ {pct(target)})"
    return f"**missed** by {(target - value) * 100:.0f} points ({pct(value)} vs ≥ {pct(target)})"


def label(variant: str, meta: dict[str, Any]) -> str:
    text = LABELS.get(variant, variant)
    old = meta.get("old") or {}
    if variant.startswith("old-") and old:
        text += f" ({old['label']}, {old['version']})"
    return text


def same_round(e2e: dict[str, Any], a: str, b: str, kind: str) -> float | None:
    """Median over rounds of a's requests/s over b's in the same round."""
    rounds = e2e["data"]["rounds"]
    if not rounds or a not in rounds[0] or b not in rounds[0]:
        return None
    ratios: list[float] = [r[a][kind]["rps"] / r[b][kind]["rps"] for r in rounds]
    return statistics.median(ratios)
