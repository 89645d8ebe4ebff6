# SPDX-License-Identifier: GPL-2.0-only
"""The TLS 1.3 handshake engine for QUIC on GnuTLS, and its binding."""

from quichsd.tls.binding import (
    AntiReplay,
    CertificateCredentials,
    PskClientCredentials,
    TlsSetupError,
    gnutls_version,
    new_ticket_key,
)
from quichsd.tls.config import AuthMode, CertificateRequest, EngineConfig, Role
from quichsd.tls.engine import EngineStateError, HandshakeEngine, State
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
from quichsd.tls.levels import Cipher, Level

__all__ = [
    "AlpnNegotiated",
    "AntiReplay",
    "AuthMode",
    "CertificateCredentials",
    "CertificateRequest",
    "Cipher",
    "EngineConfig",
    "EngineStateError",
    "Event",
    "HandshakeComplete",
    "HandshakeEngine",
    "HandshakeFailed",
    "InstallSecret",
    "Level",
    "PeerTransportParameters",
    "PskClientCredentials",
    "Role",
    "SendHandshake",
    "SessionTicket",
    "State",
    "TlsSetupError",
    "gnutls_version",
    "new_ticket_key",
]
