# SPDX-License-Identifier: GPL-2.0-only
"""pytest plugin for the sid-chroot floor (vm/chroot-test): the tests that import a test
dependency with no installable wheel for sid's Python are skipped, the reason naming it.

vm/sid-venv lists such requirements in ``<venv>/.missing``; importing one of them from a test
module (directly or through quichsd.userspace) raises pytest's module-level skip instead of an
ImportError, so only the modules that need it are skipped and the rest of the floor runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest


def import_name(requirement: str) -> str:
    """``prometheus-client>=0.20`` -> ``prometheus_client`` (the usual distribution mapping)."""
    name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("-", "_").replace(".", "_")


class MissingWheelFinder:
    """Finds the missing top-level modules by raising pytest's skip, naming the requirement."""

    def __init__(self, missing: dict[str, str], python: str) -> None:
        self.missing = missing
        self.python = python

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        requirement = self.missing.get(fullname.partition(".")[0])
        if requirement is None:
            return None
        raise pytest.skip.Exception(
            f"no installable wheel of {requirement} for {self.python} in the sid chroot "
            "(see vm/sid-venv)",
            allow_module_level=True,
        )


def read_missing(venv: Path) -> dict[str, str]:
    path = venv / ".missing"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {import_name(line): line.strip() for line in lines if line.strip()}


def pytest_configure(config: pytest.Config) -> None:
    missing = read_missing(Path(sys.prefix))
    if missing:
        python = f"CPython {sys.version_info[0]}.{sys.version_info[1]}"
        sys.meta_path.insert(0, MissingWheelFinder(missing, python))
