# SPDX-License-Identifier: GPL-2.0-only
"""Footprint: PSS of all the daemon's processes at idle and per handshake in flight.

The real daemon (``quichsd serve`` on the userspace models, through
``quichsd.userspace.rig``) runs twice.  First with the default configuration (no
``[quichsd] workers``): after a few handshakes against an aioquic server it is
left alone for ``--settle`` seconds, then the PSS (``Pss`` of
/proc/PID/smaps_rollup, which divides each shared page among the processes
mapping it, so the sum over processes counts every page once) of the parent,
the fork server and every worker is summed.  Then with enough workers for
``--inflight`` handshakes (``workers`` = in flight / ``handshakes_per_worker``,
rounded up): that many client handshakes to a UDP port that never answers, so
each stays in flight with its ClientHello sent; once every one is held by a
worker, the sum again, less that daemon's sum before the burst, per handshake.
It prints

    idle PSS MiB: X.X (workers N)
    in-flight PSS KiB per handshake: X.X

Targets (issue 12): idle <= 40 MiB, <= 1024 KiB per handshake at 200 in flight.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import time
from pathlib import Path

from daemon import SERVER_NAME, pki_and_server  # bench/daemon.py

from quichsd.daemon.config import HANDSHAKES_PER_WORKER
from quichsd.userspace.rig import DaemonRig, config_text


def pss_kib(pid: int) -> int:
    """``Pss`` of /proc/PID/smaps_rollup in KiB (0 for a process that has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the fork server, the workers)."""
    found = [pid]
    for member in found:
        try:
            text = Path(f"/proc/{member}/task/{member}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def total_pss_kib(rig: DaemonRig) -> tuple[int, int]:
    """(summed PSS in KiB of the daemon's processes, live workers)."""
    return sum(pss_kib(pid) for pid in tree(rig.pid)), len(rig.worker_pids())


def make_rig(tmp: Path, extra: str = "", **settings: int | None) -> DaemonRig:
    rig = DaemonRig(pending_max=1000)
    rig.write_config(
        config_text(
            client={"x509.truststore": str(tmp / "ca.pem")},
            status_socket=rig.status_socket,
            handshake_timeout=None,
            shutdown_grace=1.0,
            extra=extra,
            **settings,  # type: ignore[arg-type]
        )
    )
    return rig  # started by ``with``


def warm(rig: DaemonRig, address: tuple[str, int], count: int) -> None:
    """A few verified handshakes, one after another (credentials loaded, code paths hot)."""
    for _ in range(count):
        request = rig.client_request(address, "x509", peername=SERVER_NAME, timeout_ms=30_000)
        completion = request.handle.wait(60)
        if completion.status != 0:
            raise RuntimeError(f"a warm-up handshake failed ({completion.status}):\n{rig.log()}")
        rig.release(request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--inflight", type=int, default=200, help="handshakes held at once")
    parser.add_argument("--warmup", type=int, default=5, help="handshakes before measuring")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before a sample")
    args = parser.parse_args(argv)

    tmp, aio, address = pki_and_server("quichsd-footprint-")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with make_rig(tmp, workers=None) as rig:
            warm(rig, address, args.warmup)
            time.sleep(args.settle)
            idle, workers = total_pss_kib(rig)
            rig.check_invariants()
        print(f"idle PSS MiB: {idle / 1024:.1f} (workers {workers})")

        needed = math.ceil(args.inflight / HANDSHAKES_PER_WORKER)
        with make_rig(tmp, workers=needed) as rig:
            warm(rig, address, args.warmup)
            time.sleep(args.settle)
            before, idle_workers = total_pss_kib(rig)
            requests = rig.client_requests(
                silent.getsockname(),
                args.inflight,
                "x509",
                peername=SERVER_NAME,
                timeout_ms=120_000,
            )
            deadline = time.monotonic() + 60
            while rig.family.stats.accepts < args.warmup + args.inflight:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{rig.family.stats.accepts} ACCEPTs:\n{rig.log()}")
                time.sleep(0.05)
            time.sleep(args.settle)  # every worker has started its handshakes
            loaded, busy_workers = total_pss_kib(rig)
            for request in requests:
                rig.finish(request)
        print(
            f"workers: {idle_workers} idle, {busy_workers} with {args.inflight} in flight; "
            f"PSS {before / 1024:.1f} -> {loaded / 1024:.1f} MiB",
            file=sys.stderr,
        )
        print(f"in-flight PSS KiB per handshake: {(loaded - before) / args.inflight:.1f}")
    finally:
        silent.close()
        aio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
