# SPDX-License-Identifier: GPL-2.0-only
"""Run ``quichsd`` under cProfile with one stats file per process: the parent and each worker.

Workers are forked and end with ``os._exit``, which a plain ``python -m cProfile`` never sees;
here the profile restarts empty in every forked child and is written as ``DIR/PID.prof`` when
the process ends either way. Imports happen before profiling starts. For bench/vm.py:

    bench/vm.py --quichsd "{repo}/.venv/bin/python {repo}/bench/profile_agent.py {work} \\
        serve -s -c CONFIG"

then ``python -m pstats DIR/PID.prof`` (or ``bench/profile_agent.py --report DIR``).
"""

from __future__ import annotations

import cProfile
import marshal
import os
import pstats
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def report(folder: Path, top: int = 25) -> None:
    """Print each process's hottest functions by own time, then cumulative."""
    for path in sorted(folder.glob("*.prof")):
        stats = pstats.Stats(str(path))
        print(f"==== {path.name}: {stats.total_tt:.2f} s profiled")  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


def _open_stats(folder: Path) -> int:
    """``folder/PID.prof`` for this process (pstats reads a marshalled stats dict)."""
    return os.open(folder / f"{os.getpid()}.prof", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def run(folder: Path, argv: list[str]) -> int:
    from quichsd.cli import main
    from quichsd.daemon import pool, service, worker  # noqa: F401  (imported before profiling)

    folder.mkdir(parents=True, exist_ok=True)
    profile = cProfile.Profile()
    real_exit = os._exit
    #: The stats file, opened when the process starts: a worker may not open files for
    #: writing once it has confined itself (daemon/privilege.py), but it may write to fds.
    out = [_open_stats(folder)]

    def dump() -> None:
        profile.disable()
        profile.create_stats()
        os.write(out[0], marshal.dumps(profile.stats))  # type: ignore[attr-defined]
        os.close(out[0])

    def exit_after_dump(code: int) -> None:
        dump()
        real_exit(code)

    def restart_in_child() -> None:
        profile.disable()
        profile.clear()
        os.close(out[0])
        out[0] = _open_stats(folder)
        profile.enable()

    os._exit = exit_after_dump  # type: ignore[assignment]
    os.register_at_fork(after_in_child=restart_in_child)
    profile.enable()
    try:
        return main(argv)
    finally:
        dump()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        report(Path(sys.argv[2]))
        sys.exit(0)
    sys.exit(run(Path(sys.argv[1]), sys.argv[2:]))
