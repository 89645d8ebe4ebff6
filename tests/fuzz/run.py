# SPDX-License-Identifier: GPL-2.0-only
"""Run fuzz targets under atheris (libFuzzer).

    python tests/fuzz/run.py TARGET [libFuzzer options...]     one target, this process
    python tests/fuzz/run.py --all [--runs N] [--time S] [--seed S] [TARGET...]
                                                                each in turn, a summary

``--all`` runs each target in its own process (libFuzzer exits when done), new
inputs going to ``--out`` (never into the repository's corpus), crashes to
``--out/artifacts``, and prints executions and executions per second per target.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # tests/: where ``fuzz`` and the test helpers live

#: Options every run gets: a per-input time limit (a hang is a finding) and a memory cap.
COMMON = ("-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1")
_STATS = re.compile(r"stat::(\w+):\s*(\d+)")


def fuzz_one(name: str, argv: list[str]) -> None:
    """Instrument quichsd, import the target, then hand control to libFuzzer (never returns)."""
    import atheris

    from fuzz.harness import target

    # Nothing of quichsd may be imported before this point, or it goes uninstrumented.
    with atheris.instrument_imports(include=["quichsd"]):
        chosen = target(name)
    # libFuzzer re-runs argv[0] through the shell for -merge=1 (and -fork): the interpreter
    # and this script, with the target's name.
    relaunch = f"{sys.executable} {Path(__file__).resolve()} {name}"
    args = [relaunch, f"-max_len={chosen.max_len}", *COMMON, *argv]
    atheris.Setup(args, chosen.one_input)
    atheris.Fuzz()


def run_all(names: list[str], runs: int, seconds: int, seed: int, out: Path) -> int:
    """Each target in a child process; prints one line per target and returns failures."""
    from fuzz.harness import targets

    known = targets()
    failures = 0
    print(f"{'target':<26} {'executions':>12} {'exec/s':>8} {'seconds':>8}  result", flush=True)
    for name in names or list(known):
        target = known[name]
        work = out / name
        work.mkdir(parents=True, exist_ok=True)
        (out / "artifacts").mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, str(Path(__file__).resolve()), name,
            f"-seed={seed}", f"-runs={runs}", f"-max_total_time={seconds}",
            f"-artifact_prefix={out / 'artifacts'}/{name}-",
            str(work), str(target.corpus),
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        stats = dict(_STATS.findall(proc.stderr))
        executed = int(stats.get("number_of_executed_units", 0))
        rate = int(stats.get("average_exec_per_sec", 0))
        ok = proc.returncode == 0
        failures += not ok
        verdict = "ok" if ok else f"FAILED (exit {proc.returncode}); log in {work}.log"
        (out / f"{name}.log").write_text(proc.stderr)
        print(f"{name:<26} {executed:>12,} {rate:>8,} {elapsed:>8.0f}  {verdict}", flush=True)
    return failures


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] != "--all":
        fuzz_one(sys.argv[1], sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions per target")
    parser.add_argument("--time", type=int, default=1800, help="at most this many s per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"))
    parser.add_argument("names", nargs="*")
    opts = parser.parse_args()
    return 1 if run_all(opts.names, opts.runs, opts.time, opts.seed, opts.out) else 0


if __name__ == "__main__":
    sys.exit(main())
