# SPDX-License-Identifier: GPL-2.0-only
"""TLS 1.3 record protection in software from a kTLS ``CryptoInfo``.

What the kernel does with the material we hand it, done with ``cryptography``
instead: it proves the extracted key, IV, salt and sequence number are right
on a machine whose kernel has no kTLS (tests, the self-test), and it is an
independent reading of the layout tables (RFC 8446 §5.2-§5.3: per-record
nonce = static IV XOR the 64-bit sequence number, left-padded; additional
data = the 5-byte record header; inner plaintext = content, type, zeros).
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from quichsd.ktls.abi import TLS_1_3_VERSION, ContentType, CryptoInfo, KtlsCipher

_RECORD_HEADER = struct.Struct("!BHH")
_LEGACY_VERSION = 0x0303
_TAG = 16

Aead = AESGCM | AESCCM | ChaCha20Poly1305


class RecordError(ValueError):
    """A record that does not decrypt or parse."""


def _aead(info: CryptoInfo) -> Aead:
    if info.cipher in (KtlsCipher.AES_GCM_128, KtlsCipher.AES_GCM_256):
        return AESGCM(info.key)
    if info.cipher == KtlsCipher.AES_CCM_128:
        return AESCCM(info.key, tag_length=_TAG)
    if info.cipher == KtlsCipher.CHACHA20_POLY1305:
        return ChaCha20Poly1305(info.key)
    raise RecordError(f"no software implementation of kTLS cipher {info.cipher}")


class RecordLayer:
    """One direction of a TLS 1.3 connection, starting where ``info`` says."""

    def __init__(self, info: CryptoInfo) -> None:
        if info.version != TLS_1_3_VERSION:
            raise RecordError("only TLS 1.3 records are implemented")
        self.info = info
        self.seq = int.from_bytes(info.rec_seq, "big")
        self._iv = info.nonce_base()
        self._aead = _aead(info)

    def _nonce(self) -> bytes:
        pad = self.seq.to_bytes(len(self._iv), "big")
        return bytes(a ^ b for a, b in zip(self._iv, pad, strict=True))

    def seal(self, content: bytes, content_type: int = ContentType.APPLICATION_DATA) -> bytes:
        """One protected record carrying ``content``."""
        inner = content + bytes([content_type])
        header = _RECORD_HEADER.pack(
            ContentType.APPLICATION_DATA, _LEGACY_VERSION, len(inner) + _TAG
        )
        sealed = self._aead.encrypt(self._nonce(), inner, header)
        self.seq += 1
        return header + sealed

    def open(self, record: bytes) -> tuple[int, bytes]:
        """(content type, content) of one whole protected record."""
        if len(record) < _RECORD_HEADER.size:
            raise RecordError("short record")
        outer, _version, length = _RECORD_HEADER.unpack_from(record)
        if outer != ContentType.APPLICATION_DATA or len(record) != _RECORD_HEADER.size + length:
            raise RecordError(f"not one protected record (type {outer}, length {length})")
        try:
            inner = self._aead.decrypt(
                self._nonce(), record[_RECORD_HEADER.size :], record[: _RECORD_HEADER.size]
            )
        except Exception as exc:  # cryptography's InvalidTag
            raise RecordError(f"record {self.seq} does not decrypt: {exc!r}") from None
        self.seq += 1
        stripped = inner.rstrip(b"\0")
        if not stripped:
            raise RecordError("record without a content type")
        return stripped[-1], stripped[:-1]


def split_records(stream: bytes) -> tuple[list[bytes], bytes]:
    """Whole TLS records at the front of ``stream``, and the incomplete rest."""
    records: list[bytes] = []
    offset = 0
    while len(stream) - offset >= _RECORD_HEADER.size:
        _type, _version, length = _RECORD_HEADER.unpack_from(stream, offset)
        end = offset + _RECORD_HEADER.size + length
        if end > len(stream):
            break
        records.append(stream[offset:end])
        offset = end
    return records, stream[offset:]


__all__ = ["RecordError", "RecordLayer", "split_records"]
