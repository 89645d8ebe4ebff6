# SPDX-License-Identifier: GPL-2.0-only
"""What one handshake is asked to do: role, authentication, credentials, options."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from quichsd.tls.binding import (
    AntiReplay,
    CertificateCredentials,
    PskClientCredentials,
    PskLookup,
    TlsSetupError,
)
from quichsd.tls.levels import CIPHER_PRIORITY_NAMES

if TYPE_CHECKING:
    from quichsd.tls.session_setup import SessionPlan


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class AuthMode(IntEnum):
    """``enum handshake_auth`` numbers, as the kernel sends them in ACCEPT."""

    UNAUTH = 1
    PSK = 2
    X509 = 3


class CertificateRequest(IntEnum):
    """Server policy for client certificates (``quic_config.certificate_request``)."""

    IGNORE = 0
    REQUEST = 1
    REQUIRE = 2


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything a handshake needs except its bytes.

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
    #: What every session of this config needs, worked out once (session_setup.py).
    _plan: SessionPlan | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Not a cache beside the config: the plan lives and dies with it.  An
        # impossible config gets none and is refused when an engine is made.
        from quichsd.tls.session_setup import SessionPlan  # it reads configs

        try:
            self.validate()
            plan: SessionPlan | None = SessionPlan(self)
        except Exception:
            plan = None
        object.__setattr__(self, "_plan", plan)

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
