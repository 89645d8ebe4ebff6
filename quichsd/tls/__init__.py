# SPDX-License-Identifier: GPL-2.0-only
"""The TLS 1.3 handshake engine for QUIC on GnuTLS, and its binding.

The names below are imported on first use (as ``quichsd.userspace`` does), so that a
process importing one submodule -- the daemon's parent needs ``levels`` and the
GnuTLS library handle (``_gnutls``) but never the engine -- does not import the
engine with it (docs/ARCHITECTURE.md, "Process model": what the parent imports
before it joins the group delays every consumer at boot).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quichsd.tls.binding import (
        AntiReplay,
        CertificateCredentials,
        PskClientCredentials,
        TlsSetupError,
        gnutls_version,
        new_ticket_key,
    )
    from quichsd.tls.config import CertificateRequest, EngineConfig
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
    from quichsd.tls.modes import AuthMode, Role

_HOMES = {
    "quichsd.tls.binding": (
        "AntiReplay",
        "CertificateCredentials",
        "PskClientCredentials",
        "TlsSetupError",
        "gnutls_version",
        "new_ticket_key",
    ),
    "quichsd.tls.config": ("CertificateRequest", "EngineConfig"),
    "quichsd.tls.engine": ("EngineStateError", "HandshakeEngine", "State"),
    "quichsd.tls.events": (
        "AlpnNegotiated",
        "Event",
        "HandshakeComplete",
        "HandshakeFailed",
        "InstallSecret",
        "PeerTransportParameters",
        "SendHandshake",
        "SessionTicket",
    ),
    "quichsd.tls.levels": ("Cipher", "Level"),
    "quichsd.tls.modes": ("AuthMode", "Role"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> Any:
    """Imported on first use (see the module's docstring)."""
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
