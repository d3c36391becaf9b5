"""Prometheus metrics of the operator, in its own registry.

Per-primitive gauges are not stored: a collector computes them at scrape time from the
watch caches with each kind's ``KindRules.gauges``, so a deleted object's series vanishes
with it and nothing has to be cleaned up. Counters and histograms are ordinary
prometheus-client metrics.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final, final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from konductor_sdk._kernel.objects import KObject
from konductor_sdk._machines.rules import KindRules

log = logging.getLogger("konductor_operator.metrics")

PREFIX: Final = "konductor"
ObjectSource = Callable[[], Iterable[tuple[KindRules, KObject]]]

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_LAG_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


def gauge_name(metric: str) -> str:
    """``in_use`` → ``konductor_in_use`` (anything outside ``[a-zA-Z0-9_]`` becomes ``_``)."""
    return f"{PREFIX}_{re.sub(r'[^a-zA-Z0-9_]', '_', metric)}"


@final
class _PrimitiveCollector(Collector):
    def __init__(self) -> None:
        self.sources: list[ObjectSource] = []

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in list(self.sources):
            for rules, obj in source():
                if rules.gauges is None:
                    continue
                try:
                    values = rules.gauges(obj)
                except Exception:  # one malformed object must not break the scrape
                    log.exception(
                        "gauges failed for %s %s/%s", rules.kind.kind, obj.namespace, obj.name
                    )
                    continue
                for metric, value in values.items():
                    name = gauge_name(metric)
                    family = families.get(name)
                    if family is None:
                        family = families[name] = GaugeMetricFamily(
                            name,
                            f"Konductor primitive gauge {metric!r} (from the object's status)",
                            labels=("kind", "namespace", "name"),
                        )
                    family.add_metric((rules.kind.kind, obj.namespace, obj.name), float(value))
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic families: registered without a fixed description


@final
class Metrics:
    """The operator's metrics (one :class:`CollectorRegistry`, never the global one).

    Attributes:
        registry: what ``/metrics`` exposes.
        reaped: ``konductor_operator_reaped_total{kind, reason}``.
        sessions_ended: ``konductor_operator_sessions_ended_total{reason}``: sessions the
            operator deleted, by why (``Expired``, or the pod's end: ``PodDeleted``...).
        reap_lag: ``konductor_operator_reap_lag_seconds{kind}``: from the TTL running out
            on the operator's clock to the removal being written.
        reconcile_seconds: ``konductor_operator_reconcile_seconds{kind}``.
        writes: ``konductor_operator_status_writes_total{kind, why}``.
        timeouts: ``konductor_operator_timeouts_total{kind}``.
        leader: ``konductor_operator_leader`` (1 on the active replica).
        controller_restarts: ``konductor_operator_controller_restarts_total{controller}``.
        events: ``konductor_operator_events_total{result}``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.reaped = Counter(
            "konductor_operator_reaped",
            "Entries removed by the operator",
            ("kind", "reason"),
            registry=r,
        )
        self.sessions_ended = Counter(
            "konductor_operator_sessions_ended",
            "Sessions the operator deleted, by why they ended",
            ("reason",),
            registry=r,
        )
        self.reap_lag = Histogram(
            "konductor_operator_reap_lag_seconds",
            "Seconds from an entry's TTL running out (operator clock) to its removal",
            ("kind",),
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "konductor_operator_reconcile_seconds",
            "Duration of one reconcile pass over one object",
            ("kind",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.writes = Counter(
            "konductor_operator_status_writes",
            "Status writes (CAS) by the operator, by what triggered them",
            ("kind", "why"),
            registry=r,
        )
        self.timeouts = Counter(
            "konductor_operator_timeouts",
            "Timeouts fired (e.g. Barrier Failed)",
            ("kind",),
            registry=r,
        )
        self.leader = Gauge(
            "konductor_operator_leader", "1 while this replica is the active one", registry=r
        )
        self.controller_restarts = Counter(
            "konductor_operator_controller_restarts",
            "Controllers restarted after an error",
            ("controller",),
            registry=r,
        )
        self.events = Counter(
            "konductor_operator_events", "Kubernetes Events by outcome", ("result",), registry=r
        )
        self.tracked_objects = Gauge(
            "konductor_operator_tracked_objects", "Objects the reaper tracks", registry=r
        )
        self._primitives = _PrimitiveCollector()
        r.register(self._primitives)

    def __repr__(self) -> str:
        return f"<Metrics sources={len(self._primitives.sources)}>"

    def add_object_source(self, source: ObjectSource) -> Callable[[], None]:
        """Export ``KindRules.gauges`` of the objects ``source()`` yields; returns the remover."""
        self._primitives.sources.append(source)
        return lambda: self._primitives.sources.remove(source)

    def render(self) -> bytes:
        """The text exposition format of everything in :attr:`registry`."""
        return bytes(generate_latest(self.registry))
