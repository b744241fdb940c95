"""tornsession's metrics for Prometheus: ``register(registry)`` and a standard ``/metrics``.

Counting costs nothing to set up: every manager counts from the start (``metrics=False`` turns it
off) and ``manager.metrics()`` returns the counts as a dict. This module exposes them to a
``prometheus_client`` registry, read at each scrape (nothing is copied in between)::

    pip install "tornsession[prometheus]"

    import prometheus_client, tornsession.metrics
    tornsession.metrics.register(prometheus_client.REGISTRY)
    # then serve prometheus_client.generate_latest(REGISTRY) at /metrics (see the README)

The series, all with the ``tornsession_`` prefix (``manager=`` a manager's own, else every
manager of the process added up, those dropped included, so no counter ever goes down):

==========================================  ======================================================
``loads_total{result}``                     found, missing, expired, unreadable
``fresh_sessions_total``                    new sessions started (no cookie, or none to load)
``saves_total{result}``                     written, unchanged (a stored session with nothing
                                            new), dropped (ended by another request meanwhile)
``conflicts_total``                         saves refused because another request saved first
``busy_total``                              requests answered 503: their turn never came
``store_errors_total{kind}``                unavailable, unreadable_record, oversized_record,
                                            unsupported, crossed
``resyncs_total``                           connections replaced to get back in step
``cookies_sent_total``                      responses that set the session's cookies
``store_seconds{operation}``                a histogram per load, save and delete
==========================================  ======================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tornsession._core import SessionManager, _process_metrics

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from tornsession._core import _Metrics

__all__ = ["TornsessionCollector", "register"]

_COUNTERS = (
    ("loads", "Session loads, by what they found", "result"),
    ("saves", "Session saves, by what they did", "result"),
    ("store_errors", "Store errors, by kind", "kind"),
)
_TOTALS = (
    ("fresh_sessions", "fresh", "New sessions started"),
    ("conflicts", "conflicts", "Saves refused because another request saved the session first"),
    ("busy", "busy", "Requests answered 503: an earlier request of the session held it too long"),
    ("resyncs", "resyncs", "Store connections replaced to get back in step"),
    ("cookies_sent", "cookies_sent", "Responses that set the session's cookies"),
)


class TornsessionCollector:
    """A ``prometheus_client`` collector reading one manager's metrics, or the process's."""

    def __init__(self, manager: SessionManager | None = None) -> None:
        """Reads ``manager``'s metrics, or (None) every manager's of the process."""
        self._manager = manager

    def read(self) -> _Metrics:
        """The counts now, as ``SessionManager.metrics()`` returns them."""
        return self._manager.metrics() if self._manager is not None else _process_metrics()

    def collect(self) -> Iterator[Any]:
        """The series, for a scrape (prometheus_client calls it)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        counts = self.read()
        for name, documentation, label in _COUNTERS:
            family = CounterMetricFamily(f"tornsession_{name}", documentation, labels=[label])
            by_label: dict[str, int] = counts[name]  # type: ignore[literal-required]
            for value, count in by_label.items():
                family.add_metric([value], count)
            yield family
        for name, key, documentation in _TOTALS:
            total: int = counts[key]  # type: ignore[literal-required]
            yield CounterMetricFamily(f"tornsession_{name}", documentation, value=total)
        latency = HistogramMetricFamily(
            "tornsession_store_seconds",
            "How long each store operation took, in seconds",
            labels=["operation"],
        )
        for operation, histogram in counts["latency"].items():
            buckets = [(_bound(le), count) for le, count in histogram["buckets"]]
            latency.add_metric([operation], buckets, sum_value=histogram["sum"])
        yield latency

    def describe(self) -> Iterator[Any]:
        """The series' names, for registering (prometheus_client calls it)."""
        # Registering reads the series' names from here, not from a collect() of live counts.
        return self.collect()


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


def register(
    registry: CollectorRegistry | None = None, *, manager: SessionManager | None = None
) -> TornsessionCollector:
    """Exposes tornsession's metrics in ``registry`` (``prometheus_client.REGISTRY`` when None):
    ``manager``'s, or every manager's of the process added up. Returns the collector, for
    ``registry.unregister()``. ImportError naming the extra when prometheus_client is missing."""
    try:
        import prometheus_client
    except ImportError as missing:
        raise ImportError(
            "tornsession.metrics.register needs prometheus_client: "
            'pip install "tornsession[prometheus]"'
        ) from missing
    collector = TornsessionCollector(manager)
    (registry if registry is not None else prometheus_client.REGISTRY).register(collector)
    return collector
