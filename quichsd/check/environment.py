# SPDX-License-Identifier: GPL-2.0-only
"""Where ``quichsd check`` looks: the kernel's files, the trust stores, the clock.

Tests point these elsewhere, so every check can be driven down its ✓ and ✗
paths on a machine that has neither the handshake family nor the QUIC module.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_TRUST = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/ca-bundle.pem"),  # openSUSE
)


@dataclass
class Environment:
    """Where the checks look; tests point these elsewhere."""

    open_family: Callable[[], Any] | None = None
    proc_status: Path = Path("/proc/self/status")
    proc_keys: Path = Path("/proc/keys")
    tls_stat: Path = Path("/proc/net/tls_stat")
    system_trust: Sequence[Path] = SYSTEM_TRUST
    now: Callable[[], datetime.datetime] = field(
        default=lambda: datetime.datetime.now(datetime.UTC)
    )
