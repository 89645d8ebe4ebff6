# SPDX-License-Identifier: GPL-2.0-only
"""aioquic's TLS 1.3 stack (``aioquic.tls.Context``) as an in-memory peer of our engine.

aioquic's TLS code was written independently of GnuTLS, so a handshake that
completes against it (with equal secrets on both sides) checks our engine
against the RFCs rather than against itself.

Only handshake bytes move between the two: no QUIC packets, no loss.  aioquic
numbers its encryption levels as ``Epoch`` (INITIAL 0, ZERO_RTT 1, HANDSHAKE 2,
ONE_RTT 3); our engine speaks the Linux kernel's numbers (APP 0, INITIAL 1,
HANDSHAKE 2, EARLY 3), so everything crossing the boundary is translated here.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.tls import (
    Alert,
    CipherSuite,
    Context,
    Direction,
    Epoch,
    ExtensionType,
)

from quichsd.tls.config import Role
from quichsd.tls.engine import HandshakeEngine, State
from quichsd.tls.events import Event, SendHandshake
from quichsd.tls.levels import Cipher, Level
from quichsd.tls.memory import Side

#: aioquic epoch -> kernel level.
EPOCH_TO_LEVEL: dict[Epoch, int] = {
    Epoch.INITIAL: Level.INITIAL,
    Epoch.ZERO_RTT: Level.EARLY,
    Epoch.HANDSHAKE: Level.HANDSHAKE,
    Epoch.ONE_RTT: Level.APP,
}

#: aioquic cipher suite -> kernel cipher number.  aioquic has no AES-128-CCM.
SUITE_TO_CIPHER: dict[CipherSuite, int] = {
    CipherSuite.AES_128_GCM_SHA256: Cipher.AES_128_GCM,
    CipherSuite.AES_256_GCM_SHA384: Cipher.AES_256_GCM,
    CipherSuite.CHACHA20_POLY1305_SHA256: Cipher.CHACHA20_POLY1305,
}
CIPHER_TO_SUITE: dict[int, CipherSuite] = {v: k for k, v in SUITE_TO_CIPHER.items()}

# Output is read back in this order: a ServerHello (INITIAL) must reach the
# engine before the HANDSHAKE flight it keys.
_EPOCHS = (Epoch.INITIAL, Epoch.ZERO_RTT, Epoch.HANDSHAKE, Epoch.ONE_RTT)
_BUFFER_SIZE = 16384  # aioquic's own CRYPTO_BUFFER_SIZE


def set_transport_parameters(context: Context, data: bytes) -> None:
    """Makes ``context`` send ``data`` as its quic_transport_parameters body."""
    context.handshake_extensions = [(ExtensionType.QUIC_TRANSPORT_PARAMETERS, data)]


class AioquicPeer:
    """One aioquic ``Context`` seen through kernel levels.

    ``secrets`` and ``ciphers`` are keyed like our ``Side.secrets``:
    (kernel level, True for the transmit direction).  ``alert`` is the aioquic
    Alert exception that ended the handshake on this side, if any;
    ``received_alert`` the alert number our engine closed with.  ``sent`` and
    ``received`` log the handshake bytes by kernel level.
    """

    def __init__(self, context: Context) -> None:
        self.context = context
        self.secrets: dict[tuple[int, bool], bytes] = {}
        self.ciphers: dict[tuple[int, bool], int] = {}
        self.alert: Alert | None = None
        self.received_alert: int | None = None
        self.sent: list[tuple[int, bytes]] = []
        self.received: list[tuple[int, bytes]] = []
        context.update_traffic_key_cb = self._on_secret

    @property
    def is_client(self) -> bool:
        return bool(self.context._is_client)

    def _on_secret(
        self, direction: Direction, epoch: Epoch, suite: CipherSuite, secret: bytes
    ) -> None:
        key = (EPOCH_TO_LEVEL[epoch], direction is Direction.ENCRYPT)
        self.secrets[key] = secret
        self.ciphers[key] = SUITE_TO_CIPHER[suite]

    def start(self) -> list[tuple[int, bytes]]:
        """Client: the ClientHello (and the 0-RTT secret when resuming with early data)."""
        assert self.is_client, "only an aioquic client starts"
        return self._run(b"")

    def receive(self, level: int, data: bytes) -> list[tuple[int, bytes]]:
        """Feeds bytes our engine sent at kernel ``level``; returns (level, bytes) to send.

        aioquic's Context does not track which level bytes arrive at (the QUIC
        layer does), so the level only documents the flow here.  An aioquic
        Alert is caught and kept in ``alert``; the handshake is then over.
        """
        self.received.append((level, data))
        return self._run(data)

    def _run(self, data: bytes) -> list[tuple[int, bytes]]:
        out = {epoch: Buffer(capacity=_BUFFER_SIZE) for epoch in _EPOCHS}
        try:
            self.context.handle_message(data, out)
        except Alert as exc:
            self.alert = exc
            return []
        flights = [(EPOCH_TO_LEVEL[e], out[e].data) for e in _EPOCHS if out[e].data]
        self.sent.extend(flights)
        return flights

    @property
    def peer_transport_parameters(self) -> bytes | None:
        for ext_type, value in self.context.received_extensions or ():
            if ext_type == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                return bytes(value)
        return None


@dataclass
class Exchange:
    """What a handshake between our engine and an aioquic peer produced."""

    ours: Side
    peer: AioquicPeer
    rounds: int = 0


def _sends(events: list[Event]) -> list[SendHandshake]:
    return [e for e in events if isinstance(e, SendHandshake)]


def run_exchange(
    engine: HandshakeEngine,
    peer: AioquicPeer,
    *,
    client_hello: list[tuple[int, bytes]] | None = None,
    max_rounds: int = 16,
) -> Exchange:
    """Runs one handshake between ``engine`` and ``peer`` (opposite roles) to its end.

    ``client_hello``: when the peer is the client and has already been
    started, the flight its ``start()`` returned (for replaying it elsewhere).
    A failure on one side is propagated the way QUIC would (CONNECTION_CLOSE
    with CRYPTO_ERROR 0x100 + alert): an aioquic Alert reaches our engine via
    ``peer_alert``; our engine's alert is recorded in ``peer.received_alert``.
    """
    ours = Side()
    result = Exchange(ours, peer)
    our_client = engine.config.role is Role.CLIENT
    if our_client == peer.is_client:
        raise ValueError("the engine and the aioquic peer must have opposite roles")

    to_peer: list[SendHandshake] = []
    to_engine: list[tuple[int, bytes]] = []
    if our_client:
        started = engine.start()
        ours.events.extend(started)
        to_peer = _sends(started)
    else:
        to_engine = list(client_hello) if client_hello is not None else peer.start()

    for rounds in range(1, max_rounds + 1):
        if not to_peer and not to_engine:
            break
        result.rounds = rounds
        for send in to_peer:
            to_engine.extend(peer.receive(send.level, send.data))
            if peer.alert is not None:
                break
        to_peer = []
        if peer.alert is not None:
            if engine.state is State.HANDSHAKING:
                ours.events.extend(engine.peer_alert(int(peer.alert.description)))
            break
        for level, data in to_engine:
            if engine.state not in (State.HANDSHAKING, State.COMPLETE):
                break
            produced = engine.receive(level, data)
            ours.events.extend(produced)
            to_peer.extend(_sends(produced))
        to_engine = []
        failure = ours.failure
        if failure is not None:
            peer.received_alert = failure.alert
            break
    return result
