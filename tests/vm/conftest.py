# SPDX-License-Identifier: GPL-2.0-only
"""Fixtures of the real-kernel floor: one VM boot per pytest session runs every scenario the
collected tests ask for (``@pytest.mark.vm_scenario("name", ...)``).

Skips only when the rig cannot be built on this machine (``RigUnavailable``); under CI (``CI``
set to anything but ``false``/``0``) or with ``QUICHSD_VM=require`` that is a failure instead,
and ``vm/fetch`` downloads whatever the cache lacks.
"""

from __future__ import annotations

import os
import sys

import pytest

from .floor import ALL_SCENARIOS
from .rig import Boot, Rig, RigError, RigUnavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vm_scenario(*names): scenarios of tests/vm/floor.py that the test reads"
    )


def _must_run() -> bool:
    ci = os.environ.get("CI", "").strip().lower()
    return (ci not in ("", "0", "false", "no")) or os.environ.get("QUICHSD_VM") == "require"


@pytest.fixture(scope="session")
def vm_rig() -> Rig:
    rig = Rig()
    try:
        log = rig.prepare()
    except RigUnavailable as exc:
        if _must_run():
            pytest.fail(f"real-kernel rig unavailable under CI/QUICHSD_VM=require: {exc}")
        pytest.skip(f"real-kernel rig cannot be built here: {exc}")
    except RigError as exc:
        pytest.fail(str(exc))
    for line in log.splitlines():
        if line.startswith("vm/fetch:"):
            print(line, file=sys.stderr)
    return rig


def _boot(rig: Rig, request: pytest.FixtureRequest, *, systemd: bool) -> Boot:
    """One boot running the scenarios of one kind (systemd as PID 1 or not) that the
    session's collected tests are marked with (all of that kind when none is marked)."""
    wanted: list[str] = []
    for item in request.session.items:
        for marker in item.iter_markers("vm_scenario"):
            wanted += [n for n in marker.args if n not in wanted]
    unknown = [n for n in wanted if n not in ALL_SCENARIOS]
    if unknown:
        pytest.fail(f"unknown vm scenarios {unknown}; known: {sorted(ALL_SCENARIOS)}")
    of_kind = [s for s in ALL_SCENARIOS.values() if s.systemd == systemd]
    scenarios = [s for s in of_kind if s.name in wanted] or of_kind
    try:
        boot = rig.run_scenarios(scenarios)
    except RigError as exc:
        pytest.fail(str(exc))
    run = boot.run
    boot_s = f"{run.boot_seconds:.1f}" if run.boot_seconds is not None else "?"
    cmd_s = f"{run.command_seconds:.1f}" if run.command_seconds is not None else "?"
    print(
        f"vm boot{' (systemd)' if systemd else ''}: exit {run.rc}, wall "
        f"{run.wall_seconds:.1f} s, boot to command {boot_s} s, scenarios {cmd_s} s; "
        f"work folder {run.work}",
        file=sys.stderr,
    )
    for name, result in boot.scenarios.items():
        print(f"  {name}: exit {result.rc} in {result.seconds} s", file=sys.stderr)
    return boot


@pytest.fixture(scope="session")
def vm_boot(vm_rig: Rig, request: pytest.FixtureRequest) -> Boot:
    """The boot with vm/guest/init as PID 1: every plain scenario the session reads."""
    return _boot(vm_rig, request, systemd=False)


@pytest.fixture(scope="session")
def vm_systemd_boot(vm_rig: Rig, request: pytest.FixtureRequest) -> Boot:
    """The boot with the host's systemd as PID 1 (only systemd scenarios)."""
    return _boot(vm_rig, request, systemd=True)
