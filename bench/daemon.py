# SPDX-License-Identifier: GPL-2.0-only
"""Daemon throughput and READY→DONE latency: pre-forked pool vs fork per request.

Two copies of the real daemon (``serve()`` on the userspace models, through
``quichsd.userspace.rig`` and its launcher ``python -m quichsd.userspace.serve``) run
side by side: one with its pre-forked worker pool, one in tlshd's process model (a
fresh process per request, the launcher's ``--fork-per-request``).  Bursts of N QUIC
client requests (X.509, verified) against one aioquic server alternate between them,
so machine noise hits both alike.  Per mode: requests per second over the burst, and the p50/p99 of
READY→DONE as the family model timed them.  The last line is

    pool/fork-per-request time ratio: X.XX

(the pool's median burst time over fork-per-request's; below 1 the pool is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aioquic.asyncio import serve
from aioquic.quic.configuration import QuicConfiguration

from quichsd.tls.selfsigned import issue, make_ca
from quichsd.userspace.rig import DaemonRig, config_text

SERVER_NAME = "server.bench.test"
_T = TypeVar("_T")


class LoopThread:
    """An asyncio loop on a thread, for the aioquic server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def start_server(aio: LoopThread, cert: Path, key: Path) -> tuple[str, int]:
    config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    config.load_cert_chain(str(cert), str(key))

    async def start() -> Any:
        return await serve("127.0.0.1", 0, configuration=config)

    server = aio.submit(start()).result(10)
    host, port = server._transport.get_extra_info("sockname")[:2]
    return str(host), int(port)


def pki_and_server(prefix: str) -> tuple[Path, LoopThread, tuple[str, int]]:
    """A directory with ca.pem, cert.pem and key.pem for ``SERVER_NAME``, and an aioquic
    server presenting them on a loop thread: (directory, loop, address)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    ca = make_ca()
    leaf = issue(ca, (SERVER_NAME,))
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp / "key.pem").write_bytes(leaf.key_pem)
    aio = LoopThread()
    return tmp, aio, start_server(aio, tmp / "cert.pem", tmp / "key.pem")


def burst(rig: DaemonRig, address: tuple[str, int], count: int) -> tuple[float, list[float]]:
    """Seconds from the first submission to the last DONE, and each request's latency."""
    started = time.monotonic()
    requests = rig.client_requests(
        address, count, "x509", peername=SERVER_NAME, timeout_ms=30_000, retry_for=60.0
    )
    latencies = []
    for request in requests:
        completion = request.handle.wait(60)
        if completion.status != 0:
            raise RuntimeError(f"a request failed with status {completion.status}:\n{rig.log()}")
        finished = request.handle.finished_at
        assert finished is not None
        latencies.append(finished - request.handle.submitted_at)
    elapsed = max(r.handle.finished_at or 0.0 for r in requests) - started
    for request in requests:
        rig.finish(request)
    return elapsed, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=60, help="requests per burst")
    parser.add_argument("--rounds", type=int, default=4, help="bursts per mode")
    parser.add_argument("--workers", type=int, default=2, help="pool size")
    args = parser.parse_args(argv)

    tmp, aio, address = pki_and_server("quichsd-bench-")
    modes = {"pool": (), "fork-per-request": ("--fork-per-request",)}
    rigs: dict[str, DaemonRig] = {}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for mode, extra in modes.items():
            rig = DaemonRig(daemon_args=extra, pending_max=50)
            rig.write_config(
                config_text(
                    client={"x509.truststore": str(tmp / "ca.pem")},
                    workers=args.workers,
                    status_socket=rig.status_socket,
                )
            )
            rigs[mode] = rig.start()
            burst(rig, address, 5)  # warm-up: credentials cached, workers hot
        for round_number in range(args.rounds):
            order = list(modes) if round_number % 2 == 0 else list(reversed(modes))
            for mode in order:
                elapsed, lat = burst(rigs[mode], address, args.requests)
                times[mode].append(elapsed)
                latencies[mode].extend(lat)
                print(
                    f"round {round_number + 1} {mode:<17} {args.requests / elapsed:7.1f} req/s",
                    file=sys.stderr,
                )
        for rig in rigs.values():
            rig.check_invariants()
    finally:
        for rig in rigs.values():
            rig.close()
        aio.close()

    print(f"{'mode':<18}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for mode in modes:
        rate = args.requests / statistics.median(times[mode])
        p50 = percentile(latencies[mode], 0.50) * 1000
        p99 = percentile(latencies[mode], 0.99) * 1000
        print(f"{mode:<18}{rate:8.1f}{p50:9.1f}{p99:9.1f}")
    ratio = statistics.median(times["pool"]) / statistics.median(times["fork-per-request"])
    print(f"pool/fork-per-request time ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
