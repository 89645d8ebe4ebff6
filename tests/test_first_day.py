# SPDX-License-Identifier: GPL-2.0-only
"""A new user's first `make run`: the example configuration where /etc has none, and what
the daemon demo prints (explained, no reload lines, resumed spelled yes/no)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from quichsd.install import example_config_for_run

REPO = Path(__file__).resolve().parents[1]


def test_example_configuration_when_etc_has_none(tmp_path: Path) -> None:
    etc, scratch = tmp_path / "etc", tmp_path / "venv" / "tlshd-config"
    etc.mkdir()
    assert example_config_for_run(scratch, etc) == scratch
    assert scratch.read_bytes() == (REPO / "etc" / "tlshd-config.example").read_bytes()
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o600
    for existing in ("tlshd.conf", "tlshd/config"):
        scratch.unlink(missing_ok=True)
        found = etc / existing
        found.parent.mkdir(parents=True, exist_ok=True)
        found.write_text("[debug]\nloglevel=0\n")
        assert example_config_for_run(scratch, etc) is None, existing
        assert not scratch.exists()
        found.unlink()


def test_scripts_run_names_the_example_and_how_to_install_the_real_one() -> None:
    text = (REPO / "scripts" / "run").read_text()
    assert "python -m quichsd.install example-config" in text
    assert "make install-service" in text


def test_daemon_demo_output_is_explained() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "quichsd.cli", "demo", "--daemon"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "DONE is\nthe daemon's answer" in out
    assert "X.509 client, server name matches: DONE status 0 (ok)" in out
    assert "X.509 client, wrong server name: DONE status 13 (EACCES)" in out
    assert "The daemon's own log" in out
    assert "reload" not in out, out
    assert "resumed no," in out and "resumed False" not in out
    assert "info: request 1: quic client handshake with server.demo.test succeeded" in out
    assert "warning: request 2: quic client handshake with impostor.demo.test failed" in out
