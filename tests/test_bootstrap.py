# SPDX-License-Identifier: GPL-2.0-only
"""scripts/bootstrap on a checkout whose .venv an earlier run left half-made (a python
without pip, as when python3-venv was missing): it says so and builds the venv again,
instead of failing with "No module named pip" on every later run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_half_made_venv_is_rebuilt(tmp_path: Path) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian machine: bootstrap's apt step cannot run")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "bootstrap", tmp_path / "scripts" / "bootstrap")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")],
                   check=True, timeout=120)
    broken = subprocess.run([tmp_path / ".venv/bin/python", "-m", "pip", "--version"],
                            capture_output=True, timeout=60)
    assert broken.returncode != 0  # the state the issue describes
    # No project here: bootstrap gets as far as installing quichsd, which then fails.
    run = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "bootstrap")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert ".venv is incomplete (its python has no pip): removing it and creating it again" in (
        run.stderr
    ), run.stderr
    assert "bootstrap: pip: upgrading pip, setuptools and wheel" in run.stderr
    fixed = subprocess.run([tmp_path / ".venv/bin/python", "-m", "pip", "--version"],
                           capture_output=True, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
