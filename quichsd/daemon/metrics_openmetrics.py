# SPDX-License-Identifier: GPL-2.0-only
"""A snapshot as OpenMetrics 1.0 text, written by prometheus_client.

The daemon keeps its own counts (``Metrics``: one parent, no per-request
library objects, histograms created when a (transport, role) first ends), so
the exposition is a custom collector: ``SnapshotCollector.collect()`` turns a
snapshot into prometheus_client metric families, and the library writes the
text (metadata, ``_total``/``_created``, cumulative ``_bucket{le=...}``,
escaping, ``# EOF``).  The families and their meaning are those
``quichsd status --openmetrics`` has always shown (docs/man/quichsd.8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from quichsd.daemon.metrics import Snapshot

#: (family, help, snapshot section, field): the request and pool counters.
_COUNTERS = (
    ("quichsd_requests_accepted", "Handshake requests taken from the kernel with ACCEPT.",
     "requests", "accepted"),
    ("quichsd_dones", "DONE messages sent to the kernel (one per accepted request).",
     "requests", "done"),
    ("quichsd_done_errors", "DONE messages the kernel refused (the request ended anyway).",
     "requests", "done_failed"),
    ("quichsd_late_outcomes",
     "Worker outcomes for requests already answered (ignored: never a second DONE).",
     "requests", "late_outcomes"),
    ("quichsd_workers_spawned", "Workers forked.", "pool", "spawned"),
    ("quichsd_worker_deaths", "Workers that ended unexpectedly (crash, kill, deadline overrun).",
     "pool", "deaths"),
    ("quichsd_workers_recycled", "Workers retired after serving their share of requests.",
     "pool", "recycled"),
)  # fmt: skip
#: (family, help, snapshot section, field): the gauges.
_GAUGES = (
    ("quichsd_requests_in_flight", "Requests accepted and not yet answered with DONE.",
     "requests", "in_flight"),
    ("quichsd_workers", "Live worker processes.", "pool", "workers"),
    ("quichsd_worker_jobs_in_flight", "Handshakes the workers are running now.",
     "pool", "in_flight"),
    ("quichsd_pool_capacity",
     "Handshakes the pool can take now before the daemon stops accepting.",
     "pool", "capacity"),
)  # fmt: skip


class SnapshotCollector(Collector):
    """The daemon's own collector: metric families from ``snapshot()``, each time asked."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        started = float(snap["started"])
        versions = snap.get("versions") or {}
        yield InfoMetricFamily(
            "quichsd_build",
            "quichsd and the GnuTLS it runs on.",
            value={
                "version": str(versions.get("quichsd", "")),
                "gnutls": str(versions.get("gnutls", "")),
            },
        )
        yield GaugeMetricFamily(
            "quichsd_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch.",
            value=started,
            unit="seconds",
        )
        for name, help_text, section, key in _COUNTERS:
            yield CounterMetricFamily(
                name, help_text, value=int(snap[section][key]), created=started
            )
        yield CounterMetricFamily(
            "quichsd_config_reloads",
            "Configuration reloads (SIGHUP or SIGUSR1) that took effect.",
            value=int(snap.get("reloads", 0)),
            created=started,
        )
        for name, help_text, section, key in _GAUGES:
            yield GaugeMetricFamily(name, help_text, value=int(snap[section][key]))
        yield self._by_request(
            "quichsd_handshakes",
            "Handshakes by transport, role and outcome (the DONE status: 0 is success).",
            "outcome",
            snap["handshakes"],
        )
        yield self._by_request(
            "quichsd_handshake_failures",
            "Failed handshakes by transport, role and the errno reported in DONE.",
            "errno",
            snap["failures"],
        )
        yield self._latency(snap)

    @staticmethod
    def _by_request(name: str, help_text: str, label: str, rows: list[Any]) -> Metric:
        """A counter labelled transport, role and ``label``, a series per snapshot row."""
        family = CounterMetricFamily(name, help_text, labels=["transport", "role", label])
        for row in rows:
            family.add_metric(
                [row["transport"], row["role"], row[label]],
                int(row["count"]),
                created=float(row["created"]),
            )
        return family

    @staticmethod
    def _latency(snap: Snapshot) -> Metric:
        family = HistogramMetricFamily(
            "quichsd_handshake_duration_seconds",
            "Time from ACCEPT to DONE, by transport and role.",
            labels=["transport", "role"],
            unit="seconds",
        )
        for h in snap["latency"]:
            labels = [h["transport"], h["role"]]
            buckets = [(str(bound), int(count)) for bound, count in h["buckets"]]
            family.add_metric(labels, buckets, sum_value=float(h["sum"]))
            # HistogramMetricFamily has no ``created``; OpenMetrics has ``_created``.
            family.samples.append(
                Sample(
                    f"{family.name}_created",
                    {"transport": h["transport"], "role": h["role"]},
                    float(h["created"]),
                )
            )
        return family


def registry_for(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry holding only our collector (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def expose(registry: CollectorRegistry) -> str:
    """The registry as an OpenMetrics 1.0 text exposition (ends ``# EOF``)."""
    text: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]
    return text.decode()


def render_openmetrics(snap: Snapshot) -> str:
    """One snapshot as OpenMetrics text."""
    return expose(registry_for(lambda: snap))
