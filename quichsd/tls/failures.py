# SPDX-License-Identifier: GPL-2.0-only
"""How a failed handshake maps to the status DONE carries and the alert sent.

The kernel consumers read the status: NFS treats EACCES and ETIMEDOUT
specially, NVMe revokes a PSK on EKEYREJECTED.  The table follows tlshd where
tlshd is right (docs/kernel-abi.md §STATUS).
"""

from __future__ import annotations

import errno
from typing import Any

from quichsd.tls._gnutls import ffi, lib

ALERT_UNEXPECTED_MESSAGE = 10
ALERT_ACCESS_DENIED = 49
ALERT_DECODE_ERROR = 50
ALERT_INTERNAL_ERROR = 80
ALERT_MISSING_EXTENSION = 109
ALERT_CERTIFICATE_REQUIRED = 116
ALERT_UNKNOWN_PSK_IDENTITY = 115
ALERT_NO_APPLICATION_PROTOCOL = 120

#: TLS alert descriptions by number (RFC 8446 §6, RFC 7301, RFC 8449): the names
#: people look up, used for every alert quichsd reports, sent or received.
ALERT_NAMES: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}

#: TLS handshake message types a QUIC peer can send (RFC 8446 §4, RFC 8879).
MESSAGE_NAMES: dict[int, str] = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    5: "EndOfEarlyData",
    8: "EncryptedExtensions",
    11: "Certificate",
    13: "CertificateRequest",
    15: "CertificateVerify",
    20: "Finished",
    24: "KeyUpdate",
    25: "CompressedCertificate",
}

#: Kernel level numbers (levels.Level) as people read them.
_LEVEL_NAMES = {0: "APP (1-RTT)", 1: "INITIAL", 2: "HANDSHAKE", 3: "EARLY (0-RTT)"}


def alert_text(alert: int) -> str:
    """``no_application_protocol (120)``: an alert by name and number."""
    return f"{ALERT_NAMES.get(alert, 'alert')} ({alert})"


def unexpected_message_text(fields: Any) -> str:
    """Why bytes at a level were refused, from a journal's bad_level / bad_type."""
    level, kind = int(fields.bad_level), int(fields.bad_type)
    if level not in _LEVEL_NAMES:
        return f"the peer sent handshake data at level {level}, which does not exist"
    where = _LEVEL_NAMES[level]
    if level == 3:
        return f"the peer sent handshake data at the {where} level, which carries none"
    name = MESSAGE_NAMES.get(kind, f"handshake message type {kind}")
    return f"the peer sent {name} at the {where} level (RFC 9001 §4.1.4)"


_CERTIFICATE_FAILURES = frozenset(
    {
        lib.GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR,
        lib.GNUTLS_E_CERTIFICATE_ERROR,
        lib.GNUTLS_E_NO_CERTIFICATE_FOUND,
    }
)


_NOT_VERIFIED = 0xFFFFFFFF  # gnutls_session_get_verify_cert_status() when GnuTLS did not verify


def verify_status_text(session: object, status: int | None = None) -> str:
    """GnuTLS's words for why the peer's certificate was rejected.

    ``status`` is the verification status when our own callback found it
    (a server checking a client); otherwise GnuTLS's record of it is used.
    """
    if status is None:
        status = lib.gnutls_session_get_verify_cert_status(session)
    if not status:
        return "the peer presented no acceptable certificate"
    if status == _NOT_VERIFIED:
        return "the peer's certificate could not be checked"
    out = ffi.new("gnutls_datum_t *")
    if lib.gnutls_certificate_verification_status_print(status, 1, out, 0) < 0:
        return f"verification status 0x{status:x}"
    try:
        return bytes(ffi.buffer(out.data, out.size)).decode(errors="replace").rstrip("\0")
    finally:
        lib.qd_free(out.data)


def classify(
    rc: int,
    session: object,
    *,
    psk_unknown: bool,
    psk_error: bool = False,
    verify_status: int | None = None,
) -> tuple[int, str]:
    """(errno, reason) for a fatal GnuTLS return code."""
    text = ffi.string(lib.gnutls_strerror(rc)).decode()
    if psk_error:
        # Our key store failed, not the client: EKEYREJECTED would make NVMe revoke the key.
        return errno.EIO, "looking up the client's PSK identity failed"
    if psk_unknown:
        return errno.EKEYREJECTED, "the client's PSK identity is unknown here"
    if rc == lib.GNUTLS_E_CERTIFICATE_REQUIRED:
        return errno.EACCES, "the client sent no certificate and this server requires one"
    if rc in _CERTIFICATE_FAILURES:
        why = verify_status_text(session, verify_status)
        return errno.EACCES, f"peer certificate rejected: {why}"
    if rc == lib.GNUTLS_E_NO_APPLICATION_PROTOCOL:
        return errno.EACCES, "no application protocol (ALPN) in common"
    if rc == lib.GNUTLS_E_INSUFFICIENT_CREDENTIALS:
        return errno.EACCES, f"no usable credentials for this peer: {text}"
    return errno.EACCES, f"TLS failure: {text} ({rc})"


def errno_for_peer_alert(alert: int) -> int:
    """Status for a handshake the peer closed with a TLS alert (CRYPTO_ERROR)."""
    return errno.EKEYREJECTED if alert == ALERT_UNKNOWN_PSK_IDENTITY else errno.EACCES
