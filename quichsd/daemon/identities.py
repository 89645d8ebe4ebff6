# SPDX-License-Identifier: GPL-2.0-only
"""Who the peer was, as DONE reports it (docs/kernel-abi.md §REMOTE-AUTH) and logs name it.

Shared by the QUIC and the TCP paths: both reduce a finished handshake to its
peer certificate chain (DER) or PSK identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from quichsd.daemon import keyring
from quichsd.daemon.protocol import Job
from quichsd.netlink.constants import REMOTE_AUTH_MUTUAL
from quichsd.tls import AuthMode, Role
from quichsd.tls.binding import TlsSetupError, certificate_subject

#: REMOTE_AUTH marker for "the client authenticated with a certificate" (tlshd's -1).
MUTUAL_AUTH_MARKER: Final = REMOTE_AUTH_MUTUAL


def remote_auth(
    job: Job, peer_certificates: Sequence[bytes], used_psk: list[int]
) -> tuple[int, ...]:
    """PSK: the key's serial; server X.509: the marker per client certificate; client
    X.509: one ``asymmetric`` key per server certificate, 0 where the kernel refuses it."""
    if job.auth_mode is AuthMode.PSK:
        return tuple(used_psk)
    if job.role is Role.SERVER:
        return tuple(MUTUAL_AUTH_MARKER for _ in peer_certificates)
    if job.auth_mode is not AuthMode.X509:
        return ()
    serials = []
    for der in peer_certificates:
        try:
            serials.append(
                keyring.add_key(
                    "asymmetric",
                    f"TLS x509 {job.peername or ''}",
                    der,
                    keyring.KEY_SPEC_USER_KEYRING,
                )
            )
        except keyring.KeyringError:
            serials.append(0)  # as tlshd: the kernel could not hold the key
    return tuple(serials)


def peer_subject(peer_certificates: Sequence[bytes], psk_identity: bytes | None) -> str | None:
    """The peer for a log line: its PSK identity or its leaf certificate's subject."""
    if psk_identity is not None:
        return "psk:" + psk_identity.decode(errors="replace")
    if not peer_certificates:
        return None
    try:
        return certificate_subject(peer_certificates[0])
    except TlsSetupError:
        return "<unparsable certificate>"
