# SPDX-License-Identifier: GPL-2.0-only
"""The kernel TLS (kTLS) socket ABI: constants and ``tls12_crypto_info_*`` packing.

Everything here follows docs/kernel-abi.md §KTLS-CONSTANTS, §KTLS-STRUCTS and §KTLS-KEYS: the option
numbers of ``linux/tls.h``, the per-cipher struct layouts (byte strings, no
padding; the two 16-bit header fields in host order), and how GnuTLS's record
state (static IV, key, sequence number) maps onto those fields for TLS 1.3
and TLS 1.2.  Pure data: no sockets, no GnuTLS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

SOL_TCP = 6
TCP_NODELAY = 1
TCP_ULP = 31
#: The ULP name; tlshd passes "tls\0" (4 bytes), the kernel reads up to the NUL.
TCP_ULP_TLS = b"tls\0"

SOL_TLS = 282
TLS_TX = 1
TLS_RX = 2
TLS_TX_ZEROCOPY_RO = 3
TLS_RX_EXPECT_NO_PAD = 4
TLS_TX_MAX_PAYLOAD_LEN = 5

#: cmsg types at level SOL_TLS (used by the consumer after DONE, not by the agent).
TLS_SET_RECORD_TYPE = 1
TLS_GET_RECORD_TYPE = 2

TLS_1_2_VERSION = 0x0303
TLS_1_3_VERSION = 0x0304

#: Largest plaintext in one record (RFC 8446 §5.1); the kernel's default TX limit.
MAX_PLAINTEXT = 16384
#: Range the kernel accepts for TLS_TX_MAX_PAYLOAD_LEN (net-next version of the patch).
MIN_PAYLOAD_LEN = 64


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class KtlsCipher(IntEnum):
    """``TLS_CIPHER_*`` numbers of ``linux/tls.h``."""

    AES_GCM_128 = 51
    AES_GCM_256 = 52
    AES_CCM_128 = 53
    CHACHA20_POLY1305 = 54
    SM4_GCM = 55
    SM4_CCM = 56
    ARIA_GCM_128 = 57
    ARIA_GCM_256 = 58


@dataclass(frozen=True)
class CipherLayout:
    """Field sizes of one cipher's crypto_info struct (docs/kernel-abi.md §KTLS-CONSTANTS)."""

    iv: int
    key: int
    salt: int
    tag: int
    rec_seq: int

    @property
    def size(self) -> int:
        return _HEADER.size + self.iv + self.key + self.salt + self.rec_seq


_HEADER = struct.Struct("=HH")  # info.version, info.cipher_type: host order, no padding

LAYOUTS: dict[int, CipherLayout] = {
    KtlsCipher.AES_GCM_128: CipherLayout(iv=8, key=16, salt=4, tag=16, rec_seq=8),
    KtlsCipher.AES_GCM_256: CipherLayout(iv=8, key=32, salt=4, tag=16, rec_seq=8),
    KtlsCipher.AES_CCM_128: CipherLayout(iv=8, key=16, salt=4, tag=16, rec_seq=8),
    KtlsCipher.CHACHA20_POLY1305: CipherLayout(iv=12, key=32, salt=0, tag=16, rec_seq=8),
    KtlsCipher.SM4_GCM: CipherLayout(iv=8, key=16, salt=4, tag=16, rec_seq=8),
    KtlsCipher.SM4_CCM: CipherLayout(iv=8, key=16, salt=4, tag=16, rec_seq=8),
    KtlsCipher.ARIA_GCM_128: CipherLayout(iv=8, key=16, salt=4, tag=16, rec_seq=8),
    KtlsCipher.ARIA_GCM_256: CipherLayout(iv=8, key=32, salt=4, tag=16, rec_seq=8),
}

#: The ciphers tlshd (and quichsd) install: the intersection of GnuTLS and kTLS.
INSTALLABLE = frozenset(
    {
        KtlsCipher.AES_GCM_128,
        KtlsCipher.AES_GCM_256,
        KtlsCipher.AES_CCM_128,
        KtlsCipher.CHACHA20_POLY1305,
    }
)

#: ``gnutls_cipher_algorithm_t`` → kTLS cipher (docs/kernel-abi.md §KTLS-KEYS).
GNUTLS_TO_KTLS: dict[int, KtlsCipher] = {
    10: KtlsCipher.AES_GCM_128,  # GNUTLS_CIPHER_AES_128_GCM
    11: KtlsCipher.AES_GCM_256,  # GNUTLS_CIPHER_AES_256_GCM
    19: KtlsCipher.AES_CCM_128,  # GNUTLS_CIPHER_AES_128_CCM
    23: KtlsCipher.CHACHA20_POLY1305,  # GNUTLS_CIPHER_CHACHA20_POLY1305
}

#: GnuTLS priority-string keyword per installable cipher.
PRIORITY_NAMES: dict[int, str] = {
    KtlsCipher.AES_GCM_128: "AES-128-GCM",
    KtlsCipher.AES_GCM_256: "AES-256-GCM",
    KtlsCipher.AES_CCM_128: "AES-128-CCM",
    KtlsCipher.CHACHA20_POLY1305: "CHACHA20-POLY1305",
}


class CryptoInfoError(ValueError):
    """Key material that does not fit the cipher's layout."""


@dataclass(frozen=True)
class CryptoInfo:
    """One direction's ``struct tls12_crypto_info_*``, fields as the kernel takes them."""

    version: int
    cipher: int
    iv: bytes = field(repr=False)
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    rec_seq: bytes

    def __post_init__(self) -> None:
        layout = LAYOUTS.get(self.cipher)
        if layout is None:
            raise CryptoInfoError(f"unknown kTLS cipher {self.cipher}")
        for name, want in (
            ("iv", layout.iv),
            ("key", layout.key),
            ("salt", layout.salt),
            ("rec_seq", layout.rec_seq),
        ):
            got = len(getattr(self, name))
            if got != want:
                raise CryptoInfoError(
                    f"cipher {self.cipher}: {name} must be {want} bytes, not {got}"
                )

    @property
    def layout(self) -> CipherLayout:
        return LAYOUTS[self.cipher]

    def pack(self) -> bytes:
        """The bytes handed to ``setsockopt(SOL_TLS, TLS_TX|TLS_RX)``; length = the struct's."""
        return (
            _HEADER.pack(self.version, self.cipher) + self.iv + self.key + self.salt + self.rec_seq
        )

    @classmethod
    def unpack(cls, blob: bytes) -> CryptoInfo:
        if len(blob) < _HEADER.size:
            raise CryptoInfoError(f"{len(blob)} bytes is shorter than tls_crypto_info")
        version, cipher = _HEADER.unpack_from(blob)
        layout = LAYOUTS.get(cipher)
        if layout is None:
            raise CryptoInfoError(f"unknown kTLS cipher {cipher}")
        if len(blob) != layout.size:
            raise CryptoInfoError(f"cipher {cipher} takes {layout.size} bytes, not {len(blob)}")
        offset = _HEADER.size
        parts = []
        for size in (layout.iv, layout.key, layout.salt, layout.rec_seq):
            parts.append(blob[offset : offset + size])
            offset += size
        return cls(version, cipher, parts[0], parts[1], parts[2], parts[3])

    def nonce_base(self) -> bytes:
        """TLS 1.3: the 12-byte static IV the record nonces are derived from."""
        if self.cipher == KtlsCipher.CHACHA20_POLY1305:
            return self.iv
        return self.salt + self.iv


def crypto_info_from_state(
    version: int, cipher: int, iv: bytes, key: bytes, seq: bytes
) -> CryptoInfo:
    """kTLS crypto_info from GnuTLS's ``gnutls_record_get_state()`` output
    (docs/kernel-abi.md §KTLS-KEYS table).

    TLS 1.3: ``iv`` is the 12-byte static IV; AES ciphers split it into salt
    (bytes 0..3) and iv (4..11), ChaCha20 takes all 12.  TLS 1.2: AES-GCM/CCM
    take the 4-byte implicit IV as salt and the sequence number as the explicit
    nonce; ChaCha20 takes the 12-byte IV.  ``seq`` is copied verbatim.
    """
    if cipher not in INSTALLABLE:
        raise CryptoInfoError(f"cipher {cipher} cannot be installed in kTLS")
    if len(seq) != 8:
        raise CryptoInfoError(f"record sequence number must be 8 bytes, not {len(seq)}")
    chacha = cipher == KtlsCipher.CHACHA20_POLY1305
    if version == TLS_1_3_VERSION:
        if len(iv) != 12:
            raise CryptoInfoError(f"TLS 1.3 static IV must be 12 bytes, not {len(iv)}")
        if chacha:
            return CryptoInfo(version, cipher, iv, key, b"", seq)
        return CryptoInfo(version, cipher, iv[4:12], key, iv[0:4], seq)
    if version == TLS_1_2_VERSION:
        if chacha:
            return CryptoInfo(version, cipher, iv, key, b"", seq)
        if len(iv) < 4:
            raise CryptoInfoError(f"TLS 1.2 implicit IV must be 4 bytes, not {len(iv)}")
        return CryptoInfo(version, cipher, seq, key, iv[0:4], seq)
    raise CryptoInfoError(f"protocol version {version:#06x} has no kTLS layout")


def payload_limit(version: int, peer_record_limit: int | None) -> int:
    """TLS_TX_MAX_PAYLOAD_LEN for a peer's RFC 8449 record_size_limit (None: not sent).

    The extension counts TLS 1.3's inner content-type byte, the kernel's
    option does not: one less under TLS 1.3 (docs/kernel-abi.md §KTLS-RECORD-SIZE).
    """
    if not peer_record_limit:
        return MAX_PLAINTEXT
    limit = peer_record_limit - 1 if version == TLS_1_3_VERSION else peer_record_limit
    return min(limit, MAX_PLAINTEXT)


def pack_payload_len(limit: int) -> bytes:
    """The u16 (host order, optlen 2) TLS_TX_MAX_PAYLOAD_LEN takes."""
    return struct.pack("=H", limit)


__all__ = [
    "GNUTLS_TO_KTLS",
    "INSTALLABLE",
    "LAYOUTS",
    "MAX_PLAINTEXT",
    "MIN_PAYLOAD_LEN",
    "PRIORITY_NAMES",
    "SOL_TCP",
    "SOL_TLS",
    "TCP_NODELAY",
    "TCP_ULP",
    "TCP_ULP_TLS",
    "TLS_1_2_VERSION",
    "TLS_1_3_VERSION",
    "TLS_GET_RECORD_TYPE",
    "TLS_RX",
    "TLS_RX_EXPECT_NO_PAD",
    "TLS_SET_RECORD_TYPE",
    "TLS_TX",
    "TLS_TX_MAX_PAYLOAD_LEN",
    "TLS_TX_ZEROCOPY_RO",
    "CipherLayout",
    "ContentType",
    "CryptoInfo",
    "CryptoInfoError",
    "KtlsCipher",
    "crypto_info_from_state",
    "pack_payload_len",
    "payload_limit",
]
