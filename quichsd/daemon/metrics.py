# SPDX-License-Identifier: GPL-2.0-only
"""What the daemon counts: handshakes by outcome and errno, latency histograms, reloads.

The parent owns one ``Metrics``: ``HandshakeService._complete()`` (where every
request ends) calls ``observe()`` once per request.  The rest of ``quichsd
status`` lives beside it, one concern a file: ``metrics_snapshot`` (the
service's state as a JSON-able dict, what the status socket sends),
``metrics_openmetrics`` (that dict as OpenMetrics text, through
prometheus_client) and ``metrics_table`` (that dict for people).
"""

from __future__ import annotations

import bisect
import errno
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Handshake latency buckets (seconds): a loopback handshake takes milliseconds, a
#: handshake over a slow path or with an OCSP-less long chain some hundreds, a stuck
#: one runs into the timeout (30 s by default).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

Snapshot = dict[str, Any]


def status_name(status: int) -> str:
    """``ETIMEDOUT`` for 110; ``ok`` for 0; ``E<n>`` for a number without a name."""
    if status == 0:
        return "ok"
    return errno.errorcode.get(status, f"E{status}")


def _le(bound: float) -> str:
    """A bucket bound as OpenMetrics writes ``le`` (prometheus_client's Go-style %g).

    Imported here, on the first status query, not before the daemon joins the group."""
    from prometheus_client.utils import floatToGoString

    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _label(value: str) -> str:
    """A metric label value for a request field the service may not know yet ("?")."""
    return value if value and value != "?" else "unknown"


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), their sum, when created."""

    bounds: tuple[float, ...]
    created: float
    counts: list[int] = field(default_factory=list)
    total: int = 0
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        # The first bucket whose bound is >= value; past the last bound, +Inf's.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it), ending with (inf, total)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class Counted:
    count: int
    created: float


class Metrics:
    """Per-request outcomes and latencies, kept by the daemon parent."""

    def __init__(
        self,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be distinct and increasing")
        self.buckets = buckets
        self.clock = clock
        self.started = clock()
        self.reloads = 0
        #: (transport, role, "success" | "failure") → count
        self.handshakes: dict[tuple[str, str, str], Counted] = {}
        #: (transport, role, errno name) → count, failures only
        self.failures: dict[tuple[str, str, str], Counted] = {}
        #: (transport, role) → latency histogram
        self.latency: dict[tuple[str, str], Histogram] = {}

    def observe(self, transport: str, role: str, status: int, seconds: float) -> None:
        """One request ended with DONE ``status`` after ``seconds``."""
        transport, role = _label(transport), _label(role)
        now = self.clock()
        outcome = "success" if status == 0 else "failure"
        self._count(self.handshakes, (transport, role, outcome), now)
        if status != 0:
            self._count(self.failures, (transport, role, status_name(status)), now)
        histogram = self.latency.get((transport, role))
        if histogram is None:
            histogram = self.latency[(transport, role)] = Histogram(self.buckets, now)
        histogram.observe(seconds)

    def reloaded(self) -> None:
        self.reloads += 1

    @staticmethod
    def _count(
        table: dict[tuple[str, str, str], Counted], key: tuple[str, str, str], now: float
    ) -> None:
        entry = table.get(key)
        if entry is None:
            table[key] = Counted(1, now)
        else:
            entry.count += 1

    def as_dict(self) -> Snapshot:
        return {
            "started": self.started,
            "reloads": self.reloads,
            "handshakes": [
                {"transport": t, "role": r, "outcome": o, "count": c.count, "created": c.created}
                for (t, r, o), c in sorted(self.handshakes.items())
            ],
            "failures": [
                {"transport": t, "role": r, "errno": e, "count": c.count, "created": c.created}
                for (t, r, e), c in sorted(self.failures.items())
            ],
            "latency": [
                {
                    "transport": t,
                    "role": r,
                    "buckets": [[_le(b), n] for b, n in h.cumulative()],
                    "count": h.total,
                    "sum": h.sum,
                    "created": h.created,
                }
                for (t, r), h in sorted(self.latency.items())
            ],
        }
