# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd status`` for people: a snapshot as a few aligned tables."""

from __future__ import annotations

import math
from typing import Any

from quichsd.daemon.metrics import Snapshot


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
