# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd demo``: one in-memory QUIC handshake, client and server both ours.

It is the quickest proof that GnuTLS, the binding and the engine work on a
machine, without a kernel module or a network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from quichsd.tls import (
    AntiReplay,
    AuthMode,
    CertificateCredentials,
    EngineConfig,
    HandshakeEngine,
    Role,
    gnutls_version,
    new_ticket_key,
)
from quichsd.tls.levels import CIPHER_SUITE_NAMES
from quichsd.tls.memory import PairResult, run_pair
from quichsd.tls.selfsigned import issue, make_ca


@dataclass
class DemoOutcome:
    full: PairResult
    resumed: PairResult
    full_ms: float
    resumed_ms: float


def run_demo(cipher: int = 0, kind: str = "ecdsa", alpn: bytes = b"demo/1") -> DemoOutcome:
    ca = make_ca(kind=kind)
    leaf = issue(ca, ("server.quichsd.test",), kind=kind)
    client_creds = CertificateCredentials(trust=ca.cert_pem)
    server_creds = CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem)
    client = EngineConfig(
        Role.CLIENT,
        AuthMode.X509,
        certificates=client_creds,
        peer_name="server.quichsd.test",
        alpn=(alpn,),
        cipher=cipher,
        early_data=True,
    )
    server = EngineConfig(
        Role.SERVER,
        AuthMode.X509,
        certificates=server_creds,
        alpn=(alpn,),
        cipher=cipher,
        ticket_key=new_ticket_key(),
        early_data=True,
        anti_replay=AntiReplay(),
    )
    started = time.perf_counter()
    full = run_pair(
        HandshakeEngine(client, b"\x01\x04\x80\x00\x75\x30"),
        HandshakeEngine(server, b"\x01\x04\x80\x00\x75\x30"),
    )
    full_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    resumed = run_pair(
        HandshakeEngine(client, b"\x01\x04\x80\x00\x75\x30", session_data=full.client.ticket),
        HandshakeEngine(server, b"\x01\x04\x80\x00\x75\x30"),
    )
    resumed_ms = (time.perf_counter() - started) * 1000
    return DemoOutcome(full, resumed, full_ms, resumed_ms)


def describe(outcome: DemoOutcome) -> list[str]:
    lines = [f"GnuTLS {gnutls_version()}"]
    for label, pair, ms in (
        ("full handshake", outcome.full, outcome.full_ms),
        ("resumed + 0-RTT", outcome.resumed, outcome.resumed_ms),
    ):
        done = pair.client.complete
        if done is None or pair.server.complete is None:
            failure = pair.client.failure or pair.server.failure
            lines.append(f"{label}: FAILED: {failure.reason if failure else 'no progress'}")
            continue
        lines.append(
            f"{label}: TLS 1.3 {CIPHER_SUITE_NAMES.get(done.cipher, done.cipher)}, "
            f"ALPN {done.alpn.decode() if done.alpn else '-'}, "
            f"peer certificates {len(done.peer_certificates)}, "
            f"resumed {'yes' if done.resumed else 'no'}, "
            f"0-RTT {'accepted' if done.early_data_accepted else 'no'}, "
            f"secrets {len(pair.client.secrets)}, {ms:.2f} ms"
        )
    return lines
