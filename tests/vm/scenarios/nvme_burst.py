#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""NVMe/TCP connect/disconnect bursts straight through /dev/nvme-fabrics (guest helper).

nvme-cli 2.16 crashed when several ``nvme connect`` ran at once; the kernel's fabrics
device takes one connect string per open file and answers ``instance=N,cntlid=M``, so a
few threads can connect in parallel (``duplicate_connect`` lets one host NQN hold several
controllers of one subsystem).  Each connect with ``nr_io_queues=Q`` opens Q+1 TCP
connections, each one a client and a server handshake when ``tls`` is in the options.

    nvme_burst.py --options "transport=tcp,traddr=...,tls" --threads 4 --count 10
                  [--stop-file PATH] [--json PATH] [--keep]

Prints one JSON object (also written to --json): attempts, ok, errors by errno name,
seconds (the burst's wall time), per-connect latencies.  Standard library only: it runs
under the host's Python inside the guest, where every import costs TCG time.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

FABRICS = "/dev/nvme-fabrics"


def connect(options: str) -> str:
    """One controller; returns its name (nvmeN)."""
    fd = os.open(FABRICS, os.O_RDWR)
    try:
        os.write(fd, options.encode())
        answer = os.read(fd, 4096).decode()
    finally:
        os.close(fd)
    fields = dict(part.split("=", 1) for part in answer.strip().split(",") if "=" in part)
    return f"nvme{fields['instance']}"


def disconnect(name: str) -> None:
    Path(f"/sys/class/nvme/{name}/delete_controller").write_text("1")


class Burst:
    def __init__(self, options: str, count: int, stop_file: str | None, keep: bool) -> None:
        self.options = options
        self.count = count
        self.stop_file = Path(stop_file) if stop_file else None
        self.keep = keep
        self.lock = threading.Lock()
        self.taken = 0
        self.errors: Counter[str] = Counter()
        self.ok = 0
        self.latencies: list[float] = []
        self.kept: list[str] = []

    def next_ticket(self) -> bool:
        with self.lock:
            if self.taken >= self.count:
                return False
            if self.stop_file is not None and self.stop_file.exists():
                return False
            self.taken += 1
            return True

    def worker(self) -> None:
        while self.next_ticket():
            start = time.monotonic()
            try:
                name = connect(self.options)
            except OSError as exc:
                with self.lock:
                    self.errors[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1
                continue
            elapsed = time.monotonic() - start
            with self.lock:
                self.ok += 1
                self.latencies.append(elapsed)
            if self.keep:
                with self.lock:
                    self.kept.append(name)
                continue
            try:
                disconnect(name)
            except OSError as exc:
                with self.lock:
                    self.errors[f"disconnect {errno.errorcode.get(exc.errno or 0, '?')}"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", required=True, help="the fabrics connect string")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--count", type=int, default=1, help="connects in all (not per thread)")
    parser.add_argument("--stop-file", help="take no new connect once this file exists")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="leave the controllers connected")
    args = parser.parse_args()
    burst = Burst(args.options, args.count, args.stop_file, args.keep)
    threads = [threading.Thread(target=burst.worker) for _ in range(args.threads)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - start
    lat = sorted(burst.latencies)
    result = {
        "threads": args.threads,
        "attempts": burst.taken,
        "ok": burst.ok,
        "failed": sum(v for k, v in burst.errors.items() if not k.startswith("disconnect")),
        "errors": dict(burst.errors),
        "seconds": round(seconds, 3),
        "connect_median_s": round(lat[len(lat) // 2], 3) if lat else None,
        "connect_max_s": round(lat[-1], 3) if lat else None,
        "kept": burst.kept,
    }
    text = json.dumps(result, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
