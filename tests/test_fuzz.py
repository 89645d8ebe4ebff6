# SPDX-License-Identifier: GPL-2.0-only
"""A short, seeded fuzz run of every target, and each target over its whole corpus.

The seeded run is libFuzzer's: a fixed ``-seed``, a bounded number of executions,
new inputs written to a temporary directory (never into the repository's corpus).
Long campaigns are ``make fuzz`` (tests/fuzz/run.py).  Replaying the corpus needs no
atheris and runs everywhere.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.harness import targets

RUNNER = Path(__file__).resolve().parent / "fuzz" / "run.py"
TARGETS = targets()
#: Executions per target in the suite: the cheap parsers get more, an engine
#: execution runs a real handshake up to the fuzzed flight (~1-3 ms under atheris).
SHORT_RUNS = {"config": 3000, "netlink_accept": 3000, "channel": 3000, "quic_params": 1500}
ENGINE_RUNS = 400

needs_atheris = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (no wheel for this Python or machine): "
    "the seeded fuzz runs did not run; the corpus replay below still does",
)


@needs_atheris
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeded_fuzz_run(name: str, tmp_path: Path) -> None:
    runs = SHORT_RUNS.get(name, ENGINE_RUNS)
    proc = subprocess.run(
        [
            sys.executable, str(RUNNER), name, "-seed=1", f"-runs={runs}",
            "-max_total_time=30", f"-artifact_prefix={tmp_path}/",
            str(tmp_path), str(TARGETS[name].corpus),
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, proc.stderr[-3000:]
    executed = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
    assert executed and int(executed.group(1)) >= runs, proc.stderr[-1000:]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_replays_cleanly(name: str) -> None:
    target = TARGETS[name]
    inputs = sorted(target.corpus.iterdir())
    assert inputs, f"no corpus for {name}"
    for path in inputs:
        target.one_input(path.read_bytes())


def test_corpora_stay_small() -> None:
    total = sum(p.stat().st_size for t in TARGETS.values() for p in t.corpus.iterdir())
    assert total < 2 * 1024 * 1024, f"{total} bytes of corpus"
