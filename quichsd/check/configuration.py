# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check`` on the configuration file: loads as the daemon loads it, and its warnings."""

from __future__ import annotations

from pathlib import Path

from quichsd.check.report import Check
from quichsd.daemon.config import ConfigError, DaemonConfig, load_config


def check_config(path: Path | None) -> tuple[list[Check], DaemonConfig | None]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [
            Check("configuration", "fail", str(exc), "fix the file (see quichsd.conf(5))")
        ], None
    where = str(config.path) if config.path else "defaults"
    out = [Check("configuration", "ok", f"{where} loads")]
    out += [
        Check("configuration", "warn", warning, "remove or correct the line")
        for warning in config.warnings
    ]
    return out, config
