# SPDX-License-Identifier: GPL-2.0-only
"""Two engines wired to each other in memory: for the demo, tests and the benchmark.

Handshake bytes go straight from one engine's SendHandshake to the other's
receive(); nothing else is emulated (no packets, no loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quichsd.tls.engine import HandshakeEngine, State
from quichsd.tls.events import (
    AlpnNegotiated,
    Event,
    HandshakeComplete,
    HandshakeFailed,
    InstallSecret,
    PeerTransportParameters,
    SendHandshake,
    SessionTicket,
)


@dataclass
class Side:
    """What one endpoint's engine produced."""

    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def complete(self) -> HandshakeComplete | None:
        done = self.of(HandshakeComplete)
        return done[0] if done else None  # type: ignore[return-value]

    @property
    def failure(self) -> HandshakeFailed | None:
        failed = self.of(HandshakeFailed)
        return failed[0] if failed else None  # type: ignore[return-value]

    @property
    def secrets(self) -> dict[tuple[int, bool], bytes]:
        return {(e.level, e.send): e.secret for e in self.events if isinstance(e, InstallSecret)}

    @property
    def peer_transport_parameters(self) -> bytes | None:
        tps = self.of(PeerTransportParameters)
        return tps[0].data if tps else None  # type: ignore[union-attr]

    @property
    def alpn(self) -> bytes | None:
        chosen = self.of(AlpnNegotiated)
        return chosen[0].protocol if chosen else None  # type: ignore[union-attr]

    @property
    def ticket(self) -> bytes | None:
        tickets = self.of(SessionTicket)
        return tickets[-1].data if tickets else None  # type: ignore[union-attr]


@dataclass
class PairResult:
    client: Side
    server: Side


def run_pair(client: HandshakeEngine, server: HandshakeEngine, max_rounds: int = 16) -> PairResult:
    """Runs the handshake to its end; a failure on one side aborts the other with its alert."""
    result = PairResult(Side(), Side())
    to_server = client.start()
    result.client.events.extend(to_server)
    for _ in range(max_rounds):
        to_client = _deliver(to_server, server, result.server)
        to_server = _deliver(to_client, client, result.client)
        if not to_server and not any(isinstance(e, SendHandshake) for e in to_client):
            break
    _propagate_failure(client, server, result)
    return result


def _deliver(events: list[Event], engine: HandshakeEngine, log: Side) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, SendHandshake) and engine.state in (State.HANDSHAKING, State.COMPLETE):
            produced = engine.receive(event.level, event.data)
            log.events.extend(produced)
            out.extend(produced)
    return out


def _propagate_failure(
    client: HandshakeEngine, server: HandshakeEngine, result: PairResult
) -> None:
    # In QUIC a TLS failure closes the connection with CRYPTO_ERROR 0x100 + alert.
    for failed, other, other_log in (
        (result.client, server, result.server),
        (result.server, client, result.client),
    ):
        failure = failed.failure
        if failure is not None and other.state is State.HANDSHAKING and failure.alert is not None:
            other_log.events.extend(other.peer_alert(failure.alert))
