# SPDX-License-Identifier: GPL-2.0-only
"""Kernel numbering for QUIC encryption levels and payload ciphers.

The engine speaks the kernel's numbers at its boundary (GnuTLS numbers levels
differently); the translation happens once, in ``_glue.c``.
"""

from enum import IntEnum


class Level(IntEnum):
    """``enum quic_crypto_level`` from the QUIC module's uapi."""

    APP = 0
    INITIAL = 1
    HANDSHAKE = 2
    EARLY = 3


class Cipher(IntEnum):
    """Payload cipher type (``linux/tls.h`` numbers shared by QUIC and kTLS); 0 means any."""

    ANY = 0
    AES_128_GCM = 51
    AES_256_GCM = 52
    AES_128_CCM = 53
    CHACHA20_POLY1305 = 54


#: GnuTLS priority-string names per cipher; the order of ANY is our preference.
CIPHER_PRIORITY_NAMES: dict[int, tuple[str, ...]] = {
    Cipher.AES_128_GCM: ("AES-128-GCM",),
    Cipher.AES_256_GCM: ("AES-256-GCM",),
    Cipher.AES_128_CCM: ("AES-128-CCM",),
    Cipher.CHACHA20_POLY1305: ("CHACHA20-POLY1305",),
    Cipher.ANY: ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305", "AES-128-CCM"),
}

#: TLS 1.3 suite names, for people reading logs and CLI output.
CIPHER_SUITE_NAMES: dict[int, str] = {
    Cipher.AES_128_GCM: "TLS_AES_128_GCM_SHA256",
    Cipher.AES_256_GCM: "TLS_AES_256_GCM_SHA384",
    Cipher.AES_128_CCM: "TLS_AES_128_CCM_SHA256",
    Cipher.CHACHA20_POLY1305: "TLS_CHACHA20_POLY1305_SHA256",
}

#: Traffic-secret length the kernel accepts per cipher (the suite's hash size).
SECRET_LENGTH: dict[int, int] = {
    Cipher.AES_128_GCM: 32,
    Cipher.AES_256_GCM: 48,
    Cipher.AES_128_CCM: 32,
    Cipher.CHACHA20_POLY1305: 32,
}
