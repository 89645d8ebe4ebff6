# SPDX-License-Identifier: GPL-2.0-only
"""Hands a finished TLS session to the kernel: TCP_ULP, record size, TX then RX.

The sequence of docs/kernel-abi.md §KTLS-SEQUENCE, with one deliberate
difference: a kernel without ``TLS_TX_MAX_PAYLOAD_LEN`` (ENOPROTOOPT) is not a
failure when the peer asked for no limit below the kernel's default of 16384
(tlshd 1.4.0 fails every handshake there, docs/tlshd-compat.md §DEFECTS).  A peer
that did ask for smaller records cannot be served by such a kernel: EIO.

Any failure is an EIO for DONE; the socket may be left with the ULP attached
and not (fully) keyed, which is why the consumer closes it on a non-zero
status (docs/kernel-abi.md §KTLS-SEQUENCE).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from quichsd.ktls.abi import (
    INSTALLABLE,
    MAX_PLAINTEXT,
    SOL_TCP,
    SOL_TLS,
    TCP_ULP,
    TCP_ULP_TLS,
    TLS_RX,
    TLS_TX,
    TLS_TX_MAX_PAYLOAD_LEN,
    CryptoInfo,
    pack_payload_len,
)

log = logging.getLogger(__name__)


class SockoptTarget(Protocol):
    """What installing needs of a socket (``socket.socket`` or a test fake)."""

    def setsockopt(self, level: int, optname: int, value: int | bytes, /) -> None: ...


@dataclass(frozen=True)
class KtlsMaterial:
    """Everything the kernel needs to take over a TLS 1.3 (or 1.2) connection."""

    version: int
    cipher: int
    tx: CryptoInfo
    rx: CryptoInfo
    #: TLS_TX_MAX_PAYLOAD_LEN to set (16384 unless the peer sent a record_size_limit).
    payload_limit: int = MAX_PLAINTEXT
    peer_record_limit: int | None = None


@dataclass(frozen=True)
class InstallReport:
    payload_limit_set: bool
    payload_limit: int


class KtlsInstallError(OSError):
    """A kTLS step the kernel refused; DONE carries EIO, ``cause`` is the kernel's errno."""

    def __init__(self, step: str, cause: int, reason: str) -> None:
        super().__init__(errno.EIO, reason)
        self.step = step
        self.cause = cause


def _errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def describe(step: str, code: int) -> str:
    """Why a kTLS step failed, in words (tlshd's classes, docs/tlshd-compat.md §TCP-STATUS)."""
    name = _errname(code)
    if step.startswith("TCP_ULP") and code == errno.ENOENT:
        return f"kernel has no kTLS ({step}: {name})"
    if step.startswith("TCP_ULP") and code == errno.EEXIST:
        return f"{step}: a ULP is already attached to the socket ({name})"
    if code in (errno.EBADF, errno.ENOTSOCK):
        return f"{step}: socket descriptor no longer valid ({name})"
    if code == errno.ENOTCONN:
        return f"{step}: the connection is not established ({name})"
    if code in (errno.EINVAL, errno.ENOENT, errno.ENOPROTOOPT):
        return f"{step}: kernel does not support it ({name}: {os.strerror(code)})"
    return f"{step}: {name}: {os.strerror(code)}"


def _set(sock: SockoptTarget, level: int, option: int, value: bytes, step: str) -> None:
    try:
        sock.setsockopt(level, option, value)
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise KtlsInstallError(step, code, describe(step, code)) from None


def install_ktls(sock: SockoptTarget, material: KtlsMaterial) -> InstallReport:
    """TCP_ULP "tls", TLS_TX_MAX_PAYLOAD_LEN, TLS_TX, TLS_RX; KtlsInstallError on failure."""
    if material.cipher not in INSTALLABLE:
        raise KtlsInstallError(
            "cipher", errno.EINVAL, f"kTLS cipher {material.cipher} is not supported"
        )
    _set(sock, SOL_TCP, TCP_ULP, TCP_ULP_TLS, "TCP_ULP tls")
    limit = material.payload_limit
    limit_set = True
    try:
        sock.setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN, pack_payload_len(limit))
    except OSError as exc:
        code = exc.errno or errno.EIO
        if code != errno.ENOPROTOOPT or limit < MAX_PLAINTEXT:
            step = f"TLS_TX_MAX_PAYLOAD_LEN {limit}"
            reason = describe(step, code)
            if code == errno.ENOPROTOOPT:
                reason = f"{reason}; the peer limits records to {limit} bytes"
            raise KtlsInstallError(step, code, reason) from None
        limit_set = False
        log.debug("kernel has no TLS_TX_MAX_PAYLOAD_LEN; records stay at most %d bytes", limit)
    _set(sock, SOL_TLS, TLS_TX, material.tx.pack(), "TLS_TX")
    _set(sock, SOL_TLS, TLS_RX, material.rx.pack(), "TLS_RX")
    return InstallReport(payload_limit_set=limit_set, payload_limit=limit)


__all__ = [
    "InstallReport",
    "KtlsInstallError",
    "KtlsMaterial",
    "SockoptTarget",
    "describe",
    "install_ktls",
]
