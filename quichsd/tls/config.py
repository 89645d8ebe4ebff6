# SPDX-License-Identifier: GPL-2.0-only
"""What one handshake is asked to do: role, authentication, credentials, options."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import IntEnum

from quichsd.tls.binding import (
    AntiReplay,
    CertificateCredentials,
    PskClientCredentials,
    PskLookup,
    TlsSetupError,
)
from quichsd.tls.levels import CIPHER_PRIORITY_NAMES
from quichsd.tls.modes import AuthMode as AuthMode
from quichsd.tls.modes import Role as Role


class CertificateRequest(IntEnum):
    """Server policy for client certificates (``quic_config.certificate_request``)."""

    IGNORE = 0
    REQUEST = 1
    REQUIRE = 2


@dataclass(frozen=True, slots=True, weakref_slot=True)
class EngineConfig:
    """Everything a handshake needs except its bytes: a plain value, nothing is
    built when it is made.  The C state its sessions share is planned by the
    engine, once per config (``session_setup.plan_for``).

    Credentials objects are meant to be shared between many configs.
    ``verify_peer`` only matters for an UNAUTH client: unlike tlshd's QUIC
    anonymous client, ours still checks the server against the trust store
    unless told not to.  X.509 clients always verify.
    """

    role: Role
    auth: AuthMode
    certificates: CertificateCredentials | None = None
    psk: PskClientCredentials | None = None
    psk_lookup: PskLookup | None = None
    peer_name: str | None = None
    verify_peer: bool = True
    alpn: tuple[bytes, ...] = ()
    cipher: int = 0
    certificate_request: CertificateRequest = CertificateRequest.IGNORE
    ticket_key: bytes | None = field(default=None, repr=False)  # a secret: kept out of logs
    early_data: bool = False
    anti_replay: AntiReplay | None = None
    #: Key-exchange groups (GnuTLS names) in preference order; () keeps GnuTLS's.
    groups: tuple[str, ...] = ()
    #: Signature schemes (GnuTLS names) in preference order; () keeps GnuTLS's.
    signatures: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raises TlsSetupError (with the errno DONE should carry) for impossible asks."""
        if self.cipher not in CIPHER_PRIORITY_NAMES:
            raise TlsSetupError(
                f"payload cipher {self.cipher} is not 0 or 51..54", code=errno.EINVAL
            )
        for proto in self.alpn:
            if not 0 < len(proto) < 256:
                raise TlsSetupError(f"ALPN entry {proto!r} must be 1..255 bytes", code=errno.EINVAL)
        server = self.role is Role.SERVER
        if self.auth is AuthMode.UNSPEC:
            raise TlsSetupError("no authentication mode", code=errno.EINVAL)
        if self.auth is AuthMode.PSK:
            if server and self.psk_lookup is None:
                raise TlsSetupError("PSK server without a key lookup", code=errno.ENOKEY)
            if not server and self.psk is None:
                raise TlsSetupError("PSK client without a key", code=errno.ENOKEY)
            return
        if server and self.auth is AuthMode.UNAUTH:
            raise TlsSetupError("an unauthenticated server handshake is not supported")
        creds = self.certificates
        if creds is None:
            raise TlsSetupError(
                f"{self.auth.name} {self.role.value} without certificate credentials"
            )
        if server and not creds.has_key:
            raise TlsSetupError("server without a certificate and private key", code=errno.ENOKEY)
        if self.ticket_key is not None and len(self.ticket_key) != 64:
            raise TlsSetupError("a session-ticket key is 64 bytes", code=errno.EINVAL)
