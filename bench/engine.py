# SPDX-License-Identifier: GPL-2.0-only
"""Handshake pairs per second: quichsd's engine against plain C GnuTLS and aioquic.

Three implementations run the same in-memory QUIC TLS 1.3 handshake (a client
and a server, bytes handed over per encryption level, X.509 server
authentication with the client verifying the chain and the name "localhost",
extension 0x39 carrying the same transport parameters):

* ``engine``  - quichsd.tls.engine.HandshakeEngine, driven by a lean loop;
* ``C``       - bench/engine_c.c, the same GnuTLS calls with no Python at all;
* ``aioquic`` - aioquic.tls.Context (pure Python TLS on ``cryptography``).

Certificates: a fresh CA and leaf of the same kind, ECDSA P-256 or RSA-2048.
The bench and the C program are pinned to one CPU, and every round runs about
``--seconds`` of each implementation cut into ``--slice`` slices in rotating
order, so that the machine's noise hits all of them alike; the table reports
medians over rounds.  The last line is ``engine/C ratio: X.XX (ecdsa), X.XX
(rsa)``: C pairs/s divided by engine pairs/s, i.e. how much more time a
handshake takes in the engine.  See bench/README.md.

    .venv/bin/python bench/engine.py [--seconds 1] [--rounds 5] [--tickets] [-v]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from quichsd.tls import (  # noqa: E402
    AuthMode,
    CertificateCredentials,
    EngineConfig,
    HandshakeEngine,
    Role,
    SendHandshake,
    State,
    gnutls_version,
    new_ticket_key,
)
from quichsd.tls.memory import run_pair  # noqa: E402
from quichsd.tls.selfsigned import Issued, issue, make_ca  # noqa: E402

C_SOURCE = Path(__file__).with_name("engine_c.c")
BUILD_DIR = Path(__file__).with_name("build")
C_BINARY = BUILD_DIR / "engine_c"
KINDS = ("ecdsa", "rsa")
SERVER_NAME = "localhost"
#: A plausible quic_transport_parameters body (varint id, length, value), 52 bytes.
TRANSPORT_PARAMETERS = bytes.fromhex(
    "0104800075300304800100000404810000000504800400000604800400000704800400000802406e"
    "09024064030245c00e0104"
)
WARMUP_PAIRS = 20

#: Runs pairs for about the given seconds; returns (pairs, seconds taken).
Measure = Callable[[float], tuple[int, float]]


# -- material -------------------------------------------------------------------


@dataclass
class Material:
    """One CA and leaf of a kind, as objects and as PEM files for the C program."""

    kind: str
    ca: Issued
    leaf: Issued
    ca_file: Path
    chain_file: Path
    key_file: Path


def make_material(kind: str, directory: Path) -> Material:
    ca = make_ca(f"bench {kind} CA", kind=kind)
    leaf = issue(ca, (SERVER_NAME,), kind=kind)
    files = {}
    for name, blob in (("ca", ca.cert_pem), ("chain", leaf.cert_pem), ("key", leaf.key_pem)):
        path = directory / f"{kind}-{name}.pem"
        path.write_bytes(blob)
        files[name] = path
    return Material(kind, ca, leaf, files["ca"], files["chain"], files["key"])


def build_c(cc: str) -> Path:
    """Compiles engine_c.c into bench/build/ unless the binary is newer than the source."""
    if C_BINARY.exists() and C_BINARY.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return C_BINARY
    BUILD_DIR.mkdir(exist_ok=True)
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(C_BINARY), str(C_SOURCE), "-lgnutls"]
    subprocess.run(cmd, check=True)
    return C_BINARY


# -- the three implementations ----------------------------------------------------


def _timed(
    pair: Callable[[], None], seconds: float, clock: Callable[[], float]
) -> tuple[int, float]:
    """Runs ``pair`` back to back until ``seconds`` have passed on ``clock``."""
    start = clock()
    deadline = start + seconds
    pairs = 0
    while True:
        pair()
        pairs += 1
        now = clock()
        if now >= deadline:
            return pairs, now - start


def _clock(cpu: bool) -> Callable[[], float]:
    # CPU time of this (single-threaded) process: what other processes take of
    # the CPU is not counted against us, as it is not in the C program's figure.
    return time.thread_time if cpu else time.perf_counter


def engine_measure(
    material: Material, tickets: bool, cpu_clock: bool, use_run_pair: bool = False
) -> Measure:
    server_config = EngineConfig(
        role=Role.SERVER,
        auth=AuthMode.X509,
        certificates=CertificateCredentials(
            chain=material.leaf.cert_pem, key=material.leaf.key_pem
        ),
        ticket_key=new_ticket_key() if tickets else None,
    )
    client_config = EngineConfig(
        role=Role.CLIENT,
        auth=AuthMode.X509,
        certificates=CertificateCredentials(trust=material.ca.cert_pem),
        peer_name=SERVER_NAME,
    )
    tp = TRANSPORT_PARAMETERS
    complete = State.COMPLETE

    def lean_pair() -> None:
        # What a daemon does with the events, minus the sockets: hand each run
        # of bytes to the peer; secrets and the rest are dropped.
        client = HandshakeEngine(client_config, tp)
        server = HandshakeEngine(server_config, tp)
        to_server = client.start()
        for _ in range(8):
            to_client = []
            for event in to_server:
                if type(event) is SendHandshake:
                    to_client += server.receive(event.level, event.data)
            to_server = []
            for event in to_client:
                if type(event) is SendHandshake:
                    to_server += client.receive(event.level, event.data)
            if not to_server:
                break
        if client.state is not complete or server.state is not complete:
            raise RuntimeError("engine handshake did not complete")
        client.close()

    def harness_pair() -> None:
        client = HandshakeEngine(client_config, tp)
        result = run_pair(client, HandshakeEngine(server_config, tp))
        if result.client.complete is None or result.server.complete is None:
            raise RuntimeError("engine handshake did not complete")
        client.close()

    # Check once, outside the clock, that the pair really agrees.
    result = run_pair(HandshakeEngine(client_config, tp), HandshakeEngine(server_config, tp))
    client_secrets, server_secrets = result.client.secrets, result.server.secrets
    if (
        result.client.complete is None
        or result.server.complete is None
        or len(client_secrets) != 4
        or any(
            client_secrets[(lvl, send)] != server_secrets[(lvl, not send)]
            for lvl, send in client_secrets
        )
        or result.client.peer_transport_parameters != tp
        or result.server.peer_transport_parameters != tp
        or (tickets and result.client.ticket is None)
    ):
        raise RuntimeError(f"engine self-check failed: {result}")

    pair = harness_pair if use_run_pair else lean_pair
    for _ in range(WARMUP_PAIRS):
        pair()
    clock = _clock(cpu_clock)
    return lambda seconds: _timed(pair, seconds, clock)


class CProgram:
    """bench/engine_c in --serve mode: one process per kind, one budget per request."""

    def __init__(self, material: Material, tickets: bool, binary: Path, cpu_clock: bool) -> None:
        cmd = [
            str(binary),
            "--chain", str(material.chain_file),
            "--key", str(material.key_file),
            "--ca", str(material.ca_file),
            "--tp", TRANSPORT_PARAMETERS.hex(),
            "--name", SERVER_NAME,
            "--warmup", str(WARMUP_PAIRS),
            "--serve",
        ]  # fmt: skip
        if tickets:
            cmd.append("--tickets")
        if cpu_clock:
            cmd.append("--cpu-clock")
        self._seconds_key = "cpu_seconds" if cpu_clock else "seconds"
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def measure(self, seconds: float) -> tuple[int, float]:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{seconds!r}\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"engine_c exited with status {self._proc.wait()}")
        answer = json.loads(line)
        return int(answer["pairs"]), float(answer[self._seconds_key])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def aioquic_measure(material: Material, tickets: bool, cpu_clock: bool) -> Measure:
    from aioquic._buffer import Buffer
    from aioquic.tls import Context, Epoch
    from aioquic.tls import State as TlsState

    epochs = (Epoch.INITIAL, Epoch.ZERO_RTT, Epoch.HANDSHAKE, Epoch.ONE_RTT)
    extensions = [(0x39, TRANSPORT_PARAMETERS)]
    ca_pem = material.ca.cert_pem
    cert, key = material.leaf.cert, material.leaf.key

    def discard(*_: Any) -> None:
        return None

    def deliver(out: dict[Epoch, Buffer], peer: Context, peer_out: dict[Epoch, Buffer]) -> bool:
        moved = False
        for epoch in epochs:
            buf = out[epoch]
            data = buf.data
            if data:
                buf.seek(0)
                peer.handle_message(data, peer_out)
                moved = True
        return moved

    def pair() -> tuple[Context, Context]:
        client = Context(is_client=True, cadata=ca_pem, server_name=SERVER_NAME)
        client.handshake_extensions = extensions
        server = Context(is_client=False)
        server.certificate = cert
        server.certificate_private_key = key
        server.handshake_extensions = extensions
        if tickets:
            client.new_session_ticket_cb = discard
            server.new_session_ticket_cb = discard
        client_out = {e: Buffer(capacity=8192) for e in epochs}
        server_out = {e: Buffer(capacity=8192) for e in epochs}
        client.handle_message(b"", client_out)
        for _ in range(8):
            moved = deliver(client_out, server, server_out)
            if not deliver(server_out, client, client_out) and not moved:
                break
        return client, server

    client, server = pair()
    if client.key_schedule is None or server.key_schedule is None:
        raise RuntimeError("aioquic handshake did not run")
    peer_tp = dict(client.received_extensions or []).get(0x39)
    if client.alpn_negotiated is not None or peer_tp != TRANSPORT_PARAMETERS:
        raise RuntimeError("aioquic self-check failed")
    if (client.state, server.state) != (
        TlsState.CLIENT_POST_HANDSHAKE,
        TlsState.SERVER_POST_HANDSHAKE,
    ):
        raise RuntimeError(f"aioquic ended in {client.state} / {server.state}")

    def run() -> None:
        pair()

    for _ in range(WARMUP_PAIRS):
        run()
    clock = _clock(cpu_clock)
    return lambda seconds: _timed(run, seconds, clock)


# -- driver -------------------------------------------------------------------------


def pin(cpu: int | None) -> int:
    """Pins this process, and so the C programs it starts, to one CPU.

    Virtual CPUs of a shared host change speed independently of each other;
    on one CPU the implementations compared in neighbouring slices see the
    same slowdowns (per-round ratios went from 0.9..1.25 to within 5%).
    """
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


@dataclass
class Series:
    """Pairs per second of one implementation and kind, one sample per round."""

    kind: str
    impl: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def slice_order(impls: list[str], cycle: int) -> list[str]:
    """The order of one cycle of slices: engine and C always neighbours, each
    first every other cycle, the others before or after them in turn."""
    pair = ["engine", "C"] if cycle % 2 == 0 else ["C", "engine"]
    rest = [i for i in impls if i not in pair]
    if (cycle // 2) % 2:
        rest.reverse()
        return rest + pair
    return pair + rest


def run_round(
    measures: dict[tuple[str, str], Measure],
    impls: list[str],
    kind: str,
    seconds: float,
    slice_seconds: float,
) -> dict[str, float]:
    """About ``seconds`` of each implementation, cut into interleaved slices.

    The noise on a shared machine moves within a fraction of a second; short
    slices in rotating order make every implementation sample the same noise.
    """
    pairs = dict.fromkeys(impls, 0)
    taken = dict.fromkeys(impls, 0.0)
    cycle = 0
    while min(taken.values()) < seconds:
        for impl in slice_order(impls, cycle):
            n, t = measures[kind, impl](slice_seconds)
            pairs[impl] += n
            taken[impl] += t
        cycle += 1
    return {impl: pairs[impl] / taken[impl] for impl in impls}


def run_rounds(
    measures: dict[tuple[str, str], Measure],
    impls: list[str],
    rounds: int,
    seconds: float,
    slice_seconds: float,
    verbose: bool,
) -> dict[tuple[str, str], Series]:
    series = {key: Series(*key) for key in measures}
    for r in range(rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            gc.collect()
            rates = run_round(measures, impls, kind, seconds, slice_seconds)
            for impl, rate in rates.items():
                series[kind, impl].samples.append(rate)
            if verbose:
                cells = "  ".join(f"{impl} {rate:7.1f}" for impl, rate in rates.items())
                print(f"  round {r + 1:2} {kind:5} pairs/s: {cells}", flush=True)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return series


def report(series: dict[tuple[str, str], Series], impls: list[str]) -> None:
    print()
    print(f"{'kind':6} {'impl':9} {'pairs/s':>9} {'min':>9} {'max':>9} {'µs/pair':>9}")
    for kind in KINDS:
        for impl in impls:
            s = series[kind, impl]
            print(
                f"{kind:6} {impl:9} {s.median:9.1f} {min(s.samples):9.1f} "
                f"{max(s.samples):9.1f} {1e6 / s.median:9.1f}"
            )
    print()
    ratios: dict[str, float] = {}
    for kind in KINDS:
        engine, c = series[kind, "engine"], series[kind, "C"]
        ratios[kind] = c.median / engine.median
        paired = sorted(cs / es for cs, es in zip(c.samples, engine.samples, strict=True))
        overhead = (1e6 / engine.median - 1e6 / c.median) / 2
        print(
            f"{kind}: C/engine {ratios[kind]:.3f} (ratio of medians); per-round pairs: "
            f"median {statistics.median(paired):.3f}, range {paired[0]:.3f}..{paired[-1]:.3f}"
        )
        print(f"{kind}: engine time over C: {overhead:+.1f} µs per endpoint per handshake")
        if "aioquic" in impls:
            aio = series[kind, "aioquic"].median
            print(f"{kind}: engine/aioquic speed {engine.median / aio:.2f}x")
        if "run_pair" in impls:
            harness = series[kind, "run_pair"].median
            print(f"{kind}: lean loop/run_pair speed {engine.median / harness:.3f}x")
    print(f"engine/C ratio: {ratios['ecdsa']:.2f} (ecdsa), {ratios['rsa']:.2f} (rsa)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Handshake pairs per second: quichsd's engine, plain C GnuTLS, aioquic."
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="time per implementation, kind and round (default 1.0)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--slice",
        type=float,
        default=0.02,
        help="length of one interleaved slice in seconds (default 0.02)",
    )
    parser.add_argument(
        "--tickets", action="store_true", help="server sends one session ticket (both sides)"
    )
    parser.add_argument(
        "--run-pair", action="store_true", help="also time quichsd.tls.memory.run_pair"
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="CPU to pin the bench and the C program to (default: the last allowed one)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin (noisier: vCPUs differ in speed)"
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="time with the wall clock instead of each process's CPU time",
    )
    parser.add_argument("--no-aioquic", action="store_true", help="skip aioquic")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (cc)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every slice")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or not 0 < args.slice <= args.seconds:
        parser.error("need --seconds > 0, --rounds >= 1 and 0 < --slice <= --seconds")
    if shutil.which(args.cc) is None:
        parser.error(f"C compiler {args.cc!r} not found")

    binary = build_c(args.cc)
    cpu = None if args.no_pin else pin(args.cpu)
    cpu_clock = not args.wall
    impls = ["engine", "C"] + ([] if args.no_aioquic else ["aioquic"])
    if args.run_pair:
        impls.append("run_pair")
    measures: dict[tuple[str, str], Measure] = {}
    programs: list[CProgram] = []
    try:
        with tempfile.TemporaryDirectory(prefix="quichsd-bench-") as tmp:
            for kind in KINDS:
                material = make_material(kind, Path(tmp))
                for impl in impls:
                    if impl == "engine":
                        measures[kind, impl] = engine_measure(material, args.tickets, cpu_clock)
                    elif impl == "run_pair":
                        measures[kind, impl] = engine_measure(
                            material, args.tickets, cpu_clock, use_run_pair=True
                        )
                    elif impl == "C":
                        programs.append(CProgram(material, args.tickets, binary, cpu_clock))
                        measures[kind, impl] = programs[-1].measure
                    else:
                        measures[kind, impl] = aioquic_measure(material, args.tickets, cpu_clock)
            print(
                f"GnuTLS {gnutls_version()}, Python {sys.version.split()[0]}, "
                f"{args.rounds} rounds x {args.seconds:g} s per implementation and kind "
                f"in {args.slice * 1000:g} ms slices, "
                f"tickets {'on' if args.tickets else 'off'}, "
                + (f"pinned to CPU {cpu}" if cpu is not None else "not pinned")
                + (", wall clock" if args.wall else ", CPU time"),
                flush=True,
            )
            series = run_rounds(
                measures, impls, args.rounds, args.seconds, args.slice, args.verbose
            )
    finally:
        for program in programs:
            program.close()
    report(series, impls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
