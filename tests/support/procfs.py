# SPDX-License-Identifier: GPL-2.0-only
"""What the tests read of a process in /proc."""

from __future__ import annotations

from pathlib import Path


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a mapping (``CapEff``, ``NoNewPrivs``, ``Seccomp``...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields
