# SPDX-License-Identifier: GPL-2.0-only
"""The README's two commands on pristine Debian 12 and 13 (scripts/pristine-check):
debootstrap minbase chroots with only git, make, ca-certificates and python3 added, a clone
of HEAD, then `make run` and `make test-fast` in each. About 4 minutes a release once the
debootstrap tarballs are cached (the first run adds about a minute a release).

Needs root (debootstrap, chroot) and the Debian mirror of this host's apt sources. Skips
otherwise, except under CI (``CI`` set) or ``QUICHSD_PRISTINE=require``: a failure there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RELEASES = ("bookworm", "trixie")


def _must_run() -> bool:
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get("QUICHSD_PRISTINE") == "require"


@pytest.mark.slow
@pytest.mark.pristine
@pytest.mark.timeout(3600)
def test_readme_commands_on_pristine_debian_12_and_13() -> None:
    if os.geteuid() != 0:
        if _must_run():
            pytest.fail("scripts/pristine-check needs root (debootstrap, chroot)")
        pytest.skip("scripts/pristine-check needs root (debootstrap, chroot)")
    run = subprocess.run(
        [str(REPO / "scripts" / "pristine-check"), *RELEASES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    summary = [line for line in run.stdout.splitlines() if line.startswith("pristine ")]
    print("\n".join(summary), file=sys.stderr)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for release in RELEASES:
        (line,) = [s for s in summary if s.startswith(f"pristine {release}: ")][-1:]
        assert line.startswith(f"pristine {release}: PASS, make run "), line
        assert " passed" in line and " failed" not in line, line
