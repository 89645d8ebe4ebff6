"""What the daemon counts, and the two ways ``quichsd status`` shows it.

The parent owns one ``Metrics``: ``HandshakeService._complete()`` (where every
request ends) calls ``observe()`` once per request.  ``snapshot()`` turns the
service's state into a plain JSON-able dict, which the status socket sends
(``quichsd.daemon.status``); ``render_table()`` and ``render_openmetrics()``
turn such a dict into text, so the client needs nothing of the daemon.

OpenMetrics text follows the OpenMetrics 1.0 exposition format: ``# TYPE``
before ``# UNIT`` before ``# HELP``, counters as ``_total`` (with
``_created``), histograms as cumulative ``_bucket{le=...}`` ending at
``le="+Inf"`` then ``_count``, ``_sum`` and ``_created``, ``le`` values in
the canonical number form, integers without a decimal point, label values
escaped, and ``# EOF`` last.
"""

from __future__ import annotations

import bisect
import errno
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

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
                    "buckets": [[_bound_text(b), n] for b, n in h.cumulative()],
                    "count": h.total,
                    "sum": h.sum,
                    "created": h.created,
                }
                for (t, r), h in sorted(self.latency.items())
            ],
        }


# -- the snapshot the status socket serves ----------------------------------------------------


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
        },
        **metrics.as_dict(),
    }


# -- numbers -------------------------------------------------------------------------------


def _bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else canonical_number(bound)


def canonical_number(value: float) -> str:
    """OpenMetrics' canonical form for ``le``: Go's ``%g`` (shortest), ``.0`` if bare.

    1e-05, 0.0001, 0.001, 0.1, 1.0, 2.5, 10.0, 100000.0, 1e+06, +Inf.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0.0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    decimal_exp = len(digits) - 1 + exponent  # the exponent in d.ddd × 10^e
    prefix = "-" if sign else ""
    if decimal_exp < -4 or decimal_exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if decimal_exp < 0 else '+'}{abs(decimal_exp):02d}"
    if decimal_exp < 0:
        return f"{prefix}0.{'0' * (-decimal_exp - 1)}{text}"
    whole, frac = text[: decimal_exp + 1], text[decimal_exp + 1 :]
    whole = whole.ljust(decimal_exp + 1, "0")
    return f"{prefix}{whole}.{frac or '0'}"


def _float_text(value: float) -> str:
    """A sample value that is a float: always with a point or an exponent."""
    if math.isinf(value) or math.isnan(value):
        return canonical_number(value)
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


# -- OpenMetrics ------------------------------------------------------------------------------


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, unit: str = "") -> None:
        self.lines.append(f"# TYPE {name} {kind}")
        if unit:
            self.lines.append(f"# UNIT {name} {unit}")
        self.lines.append(f"# HELP {name} {_escape(help_text)}")

    def sample(self, name: str, labels: Iterable[tuple[str, str]], value: str) -> None:
        self.lines.append(f"{name}{_labels(labels)} {value}")

    def counter(
        self,
        name: str,
        help_text: str,
        series: Iterable[tuple[list[tuple[str, str]], int, float]],
    ) -> None:
        self.family(name, "counter", help_text)
        for labels, count, created in series:
            self.sample(f"{name}_total", labels, str(int(count)))
            self.sample(f"{name}_created", labels, _float_text(created))

    def gauge(self, name: str, help_text: str, value: int | float, unit: str = "") -> None:
        self.family(name, "gauge", help_text, unit)
        self.sample(name, [], str(value) if isinstance(value, int) else _float_text(value))

    def text(self) -> str:
        return "\n".join([*self.lines, "# EOF"]) + "\n"


def render_openmetrics(snap: Snapshot) -> str:
    """The snapshot as an OpenMetrics 1.0 text exposition."""
    out = _Exposition()
    started = float(snap["started"])
    versions = snap.get("versions") or {}
    out.family("quichsd_build", "info", "quichsd and the GnuTLS it runs on.")
    out.sample(
        "quichsd_build_info",
        [
            ("version", str(versions.get("quichsd", ""))),
            ("gnutls", str(versions.get("gnutls", ""))),
        ],
        "1",
    )
    out.gauge(
        "quichsd_start_time_seconds",
        "When the daemon started, in seconds since the Unix epoch.",
        started,
        unit="seconds",
    )
    requests = snap["requests"]
    pool = snap["pool"]
    out.counter(
        "quichsd_requests_accepted",
        "Handshake requests taken from the kernel with ACCEPT.",
        [([], requests["accepted"], started)],
    )
    out.counter(
        "quichsd_dones",
        "DONE messages sent to the kernel (one per accepted request).",
        [([], requests["done"], started)],
    )
    out.counter(
        "quichsd_done_errors",
        "DONE messages the kernel refused (the request ended anyway).",
        [([], requests["done_failed"], started)],
    )
    out.counter(
        "quichsd_late_outcomes",
        "Worker outcomes for requests already answered (ignored: never a second DONE).",
        [([], requests["late_outcomes"], started)],
    )
    out.counter(
        "quichsd_config_reloads",
        "Configuration reloads (SIGHUP or SIGUSR1) that took effect.",
        [([], snap.get("reloads", 0), started)],
    )
    out.gauge(
        "quichsd_requests_in_flight",
        "Requests accepted and not yet answered with DONE.",
        int(requests["in_flight"]),
    )
    out.counter(
        "quichsd_handshakes",
        "Handshakes by transport, role and outcome (the DONE status: 0 is success).",
        [
            (
                [("transport", h["transport"]), ("role", h["role"]), ("outcome", h["outcome"])],
                h["count"],
                h["created"],
            )
            for h in snap["handshakes"]
        ],
    )
    out.counter(
        "quichsd_handshake_failures",
        "Failed handshakes by transport, role and the errno reported in DONE.",
        [
            (
                [("transport", f["transport"]), ("role", f["role"]), ("errno", f["errno"])],
                f["count"],
                f["created"],
            )
            for f in snap["failures"]
        ],
    )
    name = "quichsd_handshake_duration_seconds"
    out.family(
        name,
        "histogram",
        "Time from ACCEPT to DONE, by transport and role.",
        unit="seconds",
    )
    for h in snap["latency"]:
        labels = [("transport", h["transport"]), ("role", h["role"])]
        for bound, count in h["buckets"]:
            out.sample(f"{name}_bucket", [*labels, ("le", str(bound))], str(int(count)))
        out.sample(f"{name}_count", labels, str(int(h["count"])))
        out.sample(f"{name}_sum", labels, _float_text(float(h["sum"])))
        out.sample(f"{name}_created", labels, _float_text(float(h["created"])))
    out.gauge("quichsd_workers", "Live worker processes.", int(pool["workers"]))
    out.gauge(
        "quichsd_worker_jobs_in_flight",
        "Handshakes the workers are running now.",
        int(pool["in_flight"]),
    )
    out.gauge(
        "quichsd_pool_capacity",
        "Handshakes the pool can take now before the daemon stops accepting.",
        int(pool["capacity"]),
    )
    out.counter("quichsd_workers_spawned", "Workers forked.", [([], pool["spawned"], started)])
    out.counter(
        "quichsd_worker_deaths",
        "Workers that ended unexpectedly (crash, kill, deadline overrun).",
        [([], pool["deaths"], started)],
    )
    out.counter(
        "quichsd_workers_recycled",
        "Workers retired after serving their share of requests.",
        [([], pool["recycled"], started)],
    )
    return out.text()


# -- the human table ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _ms(seconds: float) -> str:
    if math.isinf(seconds):
        return "> max"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.0f} s"


def quantile(buckets: list[list[Any]], q: float) -> float:
    """Upper bound of the bucket holding the ``q`` quantile (cumulative buckets)."""
    total = int(buckets[-1][1]) if buckets else 0
    if total == 0:
        return math.nan
    rank = q * total
    for bound, count in buckets:
        if int(count) >= rank:
            return math.inf if bound == "+Inf" else float(bound)
    return math.inf


def _table(rows: list[list[str]], text_columns: int = 0, indent: str = "  ") -> list[str]:
    """Aligned columns: the first ``text_columns`` to the left, the numbers to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i < text_columns else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def render_table(snap: Snapshot) -> str:
    """The snapshot for people: a few aligned tables."""
    versions = snap.get("versions") or {}
    requests = snap["requests"]
    pool = snap["pool"]
    config = snap["config"]
    uptime = float(snap["now"]) - float(snap["started"])
    lines = [
        f"quichsd {versions.get('quichsd', '?')} (GnuTLS {versions.get('gnutls', '?')}), "
        f"pid {snap['pid']}, up {_duration(uptime)}",
        f"configuration {config['path'] or '(defaults)'}, generation {config['generation']}, "
        f"{snap.get('reloads', 0)} reloads",
        "",
        "Requests",
        *_table(
            [
                ["accepted", "done", "in flight", "DONE refused", "late outcomes"],
                [
                    str(requests["accepted"]),
                    str(requests["done"]),
                    str(requests["in_flight"]),
                    str(requests["done_failed"]),
                    str(requests["late_outcomes"]),
                ],
            ]
        ),
        "",
        f"Worker pool ({pool['mode']})",
        *_table(
            [
                ["workers", "running", "capacity", "spawned", "deaths", "recycled"],
                [
                    f"{pool['workers']}/{pool['size']}",
                    str(pool["in_flight"]),
                    str(pool["capacity"]),
                    str(pool["spawned"]),
                    str(pool["deaths"]),
                    str(pool["recycled"]),
                ],
            ]
        ),
        "",
        "Handshakes",
    ]
    outcomes: dict[tuple[str, str], dict[str, int]] = {}
    for h in snap["handshakes"]:
        outcomes.setdefault((h["transport"], h["role"]), {})[h["outcome"]] = int(h["count"])
    latency = {(h["transport"], h["role"]): h for h in snap["latency"]}
    if not outcomes:
        lines.append("  none yet")
    else:
        rows = [["transport", "role", "succeeded", "failed", "mean", "p50 ≤", "p99 ≤"]]
        for key in sorted(outcomes):
            hist = latency.get(key)
            count = int(hist["count"]) if hist else 0
            mean = float(hist["sum"]) / count if hist and count else math.nan
            buckets = hist["buckets"] if hist else []
            rows.append(
                [
                    key[0],
                    key[1],
                    str(outcomes[key].get("success", 0)),
                    str(outcomes[key].get("failure", 0)),
                    _ms(mean) if count else "-",
                    _ms(quantile(buckets, 0.5)) if count else "-",
                    _ms(quantile(buckets, 0.99)) if count else "-",
                ]
            )
        lines += _table(rows, text_columns=2)
    if snap["failures"]:
        lines += ["", "Failures"]
        rows = [["transport", "role", "errno", "count"]]
        rows += [[f["transport"], f["role"], f["errno"], str(f["count"])] for f in snap["failures"]]
        lines += _table(rows, text_columns=3)
    return "\n".join(lines) + "\n"
