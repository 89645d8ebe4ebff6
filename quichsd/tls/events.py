# SPDX-License-Identifier: GPL-2.0-only
"""What the handshake engine asks its caller to do, as small dataclasses.

Levels and ciphers are kernel numbers (see ``levels``).  Events are returned in
the order they must be acted on: a transmit secret precedes the first bytes
sent at its level.
"""

from dataclasses import dataclass, field


@dataclass(slots=True)
class SendHandshake:
    """Handshake bytes to send in CRYPTO frames at ``level``."""

    level: int
    data: bytes


@dataclass(slots=True)
class InstallSecret:
    """A traffic secret to install; ``send`` selects the transmit direction."""

    level: int
    send: bool
    cipher: int
    secret: bytes = field(repr=False)


@dataclass(slots=True)
class PeerTransportParameters:
    """The body of the peer's quic_transport_parameters extension (0x39)."""

    data: bytes


@dataclass(slots=True)
class AlpnNegotiated:
    """The application protocol both sides agreed on."""

    protocol: bytes


@dataclass(slots=True)
class HandshakeComplete:
    """The handshake finished; what was negotiated and who the peer is."""

    cipher: int
    alpn: bytes | None
    peer_certificates: tuple[bytes, ...] = field(repr=False)
    psk_identity: bytes | None = None
    resumed: bool = False
    early_data_accepted: bool = False


@dataclass(slots=True)
class SessionTicket:
    """Client: session data for a later resumption, made from a NewSessionTicket."""

    data: bytes = field(repr=False)


@dataclass(slots=True)
class HandshakeFailed:
    """The handshake is over and failed.

    ``alert`` is the TLS alert to close the connection with (QUIC CRYPTO_ERROR
    0x100 + alert), ``errno`` the positive status DONE carries.
    """

    errno: int
    alert: int | None
    reason: str


Event = (
    SendHandshake
    | InstallSecret
    | PeerTransportParameters
    | AlpnNegotiated
    | HandshakeComplete
    | SessionTicket
    | HandshakeFailed
)
