# SPDX-License-Identifier: GPL-2.0-only
"""Start-up on the host: exec of ``quichsd serve`` to READY=1, on the family model.

The real daemon (through ``quichsd.userspace.rig``) is started ``--rounds`` times with
NOTIFY_SOCKET pointing at a datagram socket of ours, whose datagrams the kernel
stamps on arrival; a thread polls the family model's group every millisecond.  Per
round: exec (just before the rig's ``Popen``) to the join (from then on the kernel
queues requests for the daemon instead of failing them, docs/startup.md) and to
READY=1.  A bare interpreter's start (``python -c pass``) is measured beside them.
The last two lines are

    exec to joining the group ms: X
    exec to READY=1 ms: X (median of N; bare Python Y ms)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from quichsd.userspace.rig import DaemonRig, config_text

#: <asm-generic/socket.h> (Python's socket module does not name it); the cmsg type too.
SO_TIMESTAMPNS = 35


class NotifySink:
    """A NOTIFY_SOCKET whose datagrams the kernel stamps on arrival (SO_TIMESTAMPNS,
    CLOCK_REALTIME), so they can be read after the daemon has started."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(30.0)

    def ready_at(self) -> float:
        """The arrival (time.time()) of the next datagram carrying READY=1."""
        while True:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, 64)
            if b"READY=1" in data.split(b"\n"):
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanoseconds = struct.unpack("qq", payload[:16])
                        return seconds + nanoseconds / 1e9
                raise RuntimeError("a datagram without its arrival stamp")

    def close(self) -> None:
        self.sock.close()


def watch_join(rig: DaemonRig, joined: list[float], timeout: float = 30.0) -> None:
    """Appends the moment the daemon's socket joined the family model's group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.family.listeners():
            joined.append(time.time())
            return
        time.sleep(0.001)


def bare_python_ms() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.monotonic() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="quichsd-startup-"))
    sink = NotifySink(work / "notify.sock")
    os.environ["NOTIFY_SOCKET"] = str(work / "notify.sock")
    spans: list[float] = []
    joins: list[float] = []
    bare: list[float] = []
    try:
        for _ in range(args.rounds):
            bare.append(bare_python_ms())
            rig = DaemonRig()
            rig.write_config(config_text(status_socket=rig.status_socket))
            try:
                rig.family.start()
                rig._family_started = True  # rig.start(), split to time the exec alone
                joined: list[float] = []
                watcher = threading.Thread(target=watch_join, args=(rig, joined), daemon=True)
                started = time.time()
                watcher.start()
                rig.start_daemon()
                spans.append((sink.ready_at() - started) * 1000)
                watcher.join(5)
                joins.append((joined[0] - started) * 1000)
            finally:
                rig.close()
            print(f"join {joins[-1]:.0f} ms, READY=1 {spans[-1]:.0f} ms", file=sys.stderr)
    finally:
        sink.close()
    print(f"exec to joining the group ms: {statistics.median(joins):.0f}")
    print(
        f"exec to READY=1 ms: {statistics.median(spans):.0f} (median of {len(spans)}; "
        f"bare Python {statistics.median(bare):.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
