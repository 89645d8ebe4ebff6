# SPDX-License-Identifier: GPL-2.0-only
"""The daemon's state as a plain JSON-able dict: what the status socket serves.

``snapshot()`` reads the service (requests, pool, configuration) and its
``Metrics``; ``metrics_openmetrics`` and ``metrics_table`` turn the dict into
text, so the ``quichsd status`` client needs nothing of the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from quichsd.daemon.metrics import Metrics, Snapshot


class ServiceView(Protocol):
    """What ``snapshot()`` reads of ``quichsd.daemon.service.HandshakeService``."""

    metrics: Metrics
    counters: Any
    pool: Any
    generation: int

    @property
    def inflight(self) -> Mapping[int, Any]: ...

    @property
    def config(self) -> Any: ...


def snapshot(service: ServiceView, *, versions: Mapping[str, str] | None = None) -> Snapshot:
    """The service's state as a JSON-able dict (``render_*`` take it)."""
    pool = service.pool
    counters = service.counters
    metrics = service.metrics
    workers = list(pool.workers)
    jobs = sum(len(worker.jobs) for worker in workers)
    spawned = int(pool.spawned)
    deaths = int(pool.deaths)
    recycled = getattr(pool, "recycled", None)
    if recycled is None:  # a pool without the counter: whoever left without dying retired
        recycled = max(0, spawned - deaths - len(workers))
    config_path = service.config.path
    return {
        "format": 1,
        "pid": os.getpid(),
        "versions": dict(versions or {}),
        "now": metrics.clock(),
        "config": {
            "path": str(config_path) if config_path is not None else None,
            "generation": service.generation,
        },
        "requests": {
            "accepted": int(counters.accepted),
            "done": int(counters.done),
            "done_failed": int(counters.done_failed),
            "late_outcomes": int(counters.late_outcomes),
            "in_flight": len(service.inflight),
        },
        "pool": {
            "mode": "fork-per-request" if pool.fork_per_request else "pre-forked",
            "size": int(pool.size),
            "workers": len(workers),
            "in_flight": jobs,
            "concurrency": int(pool.concurrency),
            "capacity": max(0, int(pool.capacity())),
            "spawned": spawned,
            "deaths": deaths,
            "recycled": int(recycled),
            "shrunk": int(getattr(pool, "shrunk", 0)),
        },
        **metrics.as_dict(),
    }
