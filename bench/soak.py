# SPDX-License-Identifier: GPL-2.0-only
"""Soak: many handshakes through the daemon, watching every process for growth.

The real daemon (``quichsd serve`` on the userspace models, through
``quichsd.userspace.rig``) serves ``--count`` QUIC client requests (X.509,
verified) against one aioquic server, in bursts of ``--batch``.  Every
``--sample`` handshakes it reads, for the parent and for each worker, the
proportional set size (``Pss`` in /proc/PID/smaps_rollup), private memory and
the number of open fds.  After ``--warmup`` handshakes it fits a line through
each process's samples (Theil-Sen) and prints the growth per 10,000
handshakes.  Workers are not recycled during the run (``--recycle``), since a
recycled worker would hide its own growth.  ``--reload-every N`` sends SIGHUP
every N handshakes, so that what a reload leaves behind shows as growth too.
The last line is

    soak: PASS|FAIL, worst PSS growth X KiB / 10k handshakes (PROCESS), worst fd growth Y

The target: no fd growth and under 256 KiB PSS growth per 10,000 handshakes
for every process.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon import SERVER_NAME, pki_and_server  # bench/daemon.py

from quichsd.daemon import keyring
from quichsd.userspace.rig import DaemonRig, config_text

#: What a process may grow per 10,000 handshakes (KiB of PSS).
PSS_TARGET_KIB = 256.0
PER = 10_000
#: Pause before a sample, so that fds of requests just answered are closed.
SETTLE = 0.2


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(Pss, Private_Clean + Private_Dirty) of /proc/PID/smaps_rollup in KiB, or None.

    PSS shares each page among the processes that map it, so a worker's writes to
    pages it shares with the parent move both figures; private memory (USS) does not,
    which makes it the steadier sign of a leak.  Both are reported.
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Private_Clean", "Private_Dirty"):
            fields[name] = int(rest.split()[0])
    if len(fields) < 3:
        return None
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Series:
    """One process's samples: (handshakes done, PSS KiB, private KiB, open fds)."""

    name: str
    points: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add(self, done: int, pid: int) -> None:
        memory, fds = memory_kib(pid), fd_count(pid)
        if memory is not None and fds is not None:
            self.points.append((done, *memory, fds))

    def after(self, warmup: int) -> list[tuple[int, int, int, int]]:
        return [p for p in self.points if p[0] >= warmup]


def slope(xs: list[float], ys: list[float]) -> float:
    """Growth of ``ys`` per unit of ``xs``: the median of the slopes between every two
    samples (Theil-Sen), so that a few samples taken while the kernel reclaimed or
    shared pages differently do not tilt the line as they would a least-squares fit."""
    slopes = sorted(
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    )
    return statistics.median(slopes) if slopes else 0.0


def run_batch(rig: DaemonRig, address: tuple[str, int], count: int, seen: set[int]) -> None:
    requests = rig.client_requests(
        address, count, "x509", peername=SERVER_NAME, timeout_ms=30_000, retry_for=60.0
    )
    try:
        for request in requests:
            completion = request.handle.wait(60)
            if completion.status != 0:
                raise RuntimeError(f"a request failed: status {completion.status}\n{rig.log()}")
            seen.update(s for s in completion.remote_auth if s)
    finally:
        for request in requests:
            rig.release(request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50_000, help="handshakes in all")
    parser.add_argument("--warmup", type=int, default=5_000, help="handshakes before the fit")
    parser.add_argument("--sample", type=int, default=1_000, help="handshakes between samples")
    parser.add_argument("--batch", type=int, default=100, help="requests per burst")
    parser.add_argument("--workers", type=int, default=2, help="pool size")
    parser.add_argument("--recycle", type=int, default=10_000_000, help="worker_recycle")
    parser.add_argument(
        "--reload-every", type=int, default=0, help="SIGHUP every N handshakes (0: never)"
    )
    args = parser.parse_args(argv)
    if args.count <= args.warmup + 2 * args.sample:
        parser.error("--count must leave at least two samples after --warmup")

    tmp, aio, address = pki_and_server("quichsd-soak-")
    rig = DaemonRig(pending_max=args.batch)
    rig.write_config(
        config_text(
            client={"x509.truststore": str(tmp / "ca.pem")},
            workers=args.workers,
            worker_recycle=args.recycle,
            status_socket=rig.status_socket,
        )
    )
    series: dict[int, Series] = {}
    peer_keys: set[int] = set()
    done = 0
    started = time.monotonic()
    try:
        rig.start()
        workers = {pid: f"worker {i + 1}" for i, pid in enumerate(sorted(rig.worker_pids()))}
        names = {rig.pid: "parent", **workers}
        next_sample = 0
        while done < args.count:
            if done >= next_sample:
                time.sleep(SETTLE)  # a worker closes its fd just after its outcome
                trace = []
                for pid in [rig.pid, *rig.worker_pids()]:
                    name = names.setdefault(pid, f"worker {len(names)} (replacement)")
                    samples = series.setdefault(pid, Series(name))
                    samples.add(done, pid)
                    if samples.points and samples.points[-1][0] == done:
                        _, pss, private, fds = samples.points[-1]
                        trace.append(f"{name} {pss}/{private} KiB {fds} fds")
                rate = done / max(1e-9, time.monotonic() - started)
                print(
                    f"{done:>7} handshakes, {rate:5.1f}/s; PSS/private: " + ", ".join(trace),
                    file=sys.stderr,
                    flush=True,
                )
                next_sample += args.sample
            batch = min(args.batch, args.count - done)
            run_batch(rig, address, batch, peer_keys)
            done += batch
            if args.reload_every and done % args.reload_every < batch:
                rig.reload()
        time.sleep(SETTLE)
        for pid in [rig.pid, *rig.worker_pids()]:
            series.setdefault(pid, Series(names.get(pid, f"pid {pid}"))).add(done, pid)
        rig.check_invariants()
    finally:
        rig.close()
        aio.close()
        for serial in peer_keys:
            with contextlib.suppress(keyring.KeyringError):
                keyring.unlink_key(serial, keyring.KEY_SPEC_USER_KEYRING)
    elapsed = time.monotonic() - started

    print(
        f"{done} handshakes in {elapsed:.0f} s ({done / elapsed:.1f}/s); "
        f"growth after {args.warmup} handshakes of warm-up, per {PER:,} handshakes"
    )
    print(
        f"{'process':<22}{'PSS KiB':>14}{'KiB/10k':>9}{'private KiB':>14}{'KiB/10k':>9}{'fds':>8}"
    )
    worst_pss, worst_name, worst_fd = float("-inf"), "-", 0
    for s in series.values():
        points = s.after(args.warmup)
        if len(points) < 2:
            continue
        xs = [float(p[0]) for p in points]
        pss_growth = slope(xs, [float(p[1]) for p in points]) * PER
        private_growth = slope(xs, [float(p[2]) for p in points]) * PER
        first, last = points[0], points[-1]
        print(
            f"{s.name:<22}{f'{first[1]}→{last[1]}':>14}{pss_growth:9.1f}"
            f"{f'{first[2]}→{last[2]}':>14}{private_growth:9.1f}{f'{first[3]}→{last[3]}':>8}"
        )
        if pss_growth > worst_pss:
            worst_pss, worst_name = pss_growth, s.name
        worst_fd = max(worst_fd, max(p[3] for p in points) - first[3])
    ok = worst_pss < PSS_TARGET_KIB and worst_fd <= 0
    print(
        f"soak: {'PASS' if ok else 'FAIL'}, worst PSS growth {worst_pss:.1f} KiB / 10k "
        f"handshakes ({worst_name}), worst fd growth {worst_fd:+.0f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
