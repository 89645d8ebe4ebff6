# SPDX-License-Identifier: GPL-2.0-only
"""GnuTLS priorities for TLS over TCP, as tlshd builds them (docs/tlshd-compat.md §TCP-PRIORITIES).

Appended to the system default priority (``gnutls_priority_init2`` with
``GNUTLS_PRIORITY_INIT_DEF_APPEND``), so the distribution's crypto policy
still decides what is allowed; on top of it: TLS 1.3 only, no compression,
no session tickets, and only ciphers the kernel can take over.  Built once per
process (tlshd: once at start-up, not on SIGHUP).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any

from quichsd.ktls.abi import GNUTLS_TO_KTLS, PRIORITY_NAMES, KtlsCipher
from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import TlsSetupError

BASE = "-COMP-ALL:-VERS-ALL:+VERS-TLS1.3:%NO_TICKETS"
#: Hybrid post-quantum groups, each added only if this GnuTLS knows it.
OPTIONAL_GROUPS = ("X25519-MLKEM768", "SECP256R1-MLKEM768", "SECP384R1-MLKEM1024")
PSK_KX = ":+DHE-PSK:+ECDHE-PSK"


class PriorityKind(Enum):
    X509 = "x509"  # certificates, and the anonymous client
    PSK = "psk"  # server PSK; client PSK whose hash is unknown
    PSK_SHA256 = "psk-sha256"
    PSK_SHA384 = "psk-sha384"


_SHA256_CIPHERS = frozenset({KtlsCipher.AES_GCM_128, KtlsCipher.AES_CCM_128})
# ChaCha20-Poly1305 lands here although its TLS 1.3 suite hashes with SHA-256:
# upstream tlshd does so (docs/tlshd-compat.md §TCP-PRIORITIES, intent unconfirmed).
_SHA384_CIPHERS = frozenset({KtlsCipher.AES_GCM_256, KtlsCipher.CHACHA20_POLY1305})


def system_ciphers() -> tuple[KtlsCipher, ...]:
    """The kTLS-capable ciphers of the system default priority, in its order."""
    holder = ffi.new("gnutls_priority_t *")
    rc = lib.gnutls_priority_init(holder, ffi.NULL, ffi.NULL)
    if rc < 0:
        raise TlsSetupError("the system default priority", rc)
    try:
        listing = ffi.new("const unsigned int **")
        count = lib.gnutls_priority_cipher_list(holder[0], listing)
        if count < 0:
            raise TlsSetupError("listing the system default ciphers", count)
        found: list[KtlsCipher] = []
        for i in range(count):
            cipher = GNUTLS_TO_KTLS.get(int(listing[0][i]))
            if cipher is not None and cipher not in found:
                found.append(cipher)
        return tuple(found)
    finally:
        lib.gnutls_priority_deinit(holder[0])


def known_groups(names: Iterable[str] = OPTIONAL_GROUPS) -> tuple[str, ...]:
    return tuple(
        name for name in names if lib.gnutls_group_get_id(name.encode()) != lib.GNUTLS_GROUP_INVALID
    )


def priority_strings(ciphers: Iterable[int], groups: Iterable[str] = ()) -> dict[PriorityKind, str]:
    """The four strings appended to the system default (pure: testable against the spec)."""
    kept = tuple(ciphers)
    base = BASE + "".join(f":+GROUP-{g}" for g in groups) + ":-CIPHER-ALL"

    def plus(selection: Iterable[int]) -> str:
        return "".join(f":+{PRIORITY_NAMES[c]}" for c in selection)

    x509 = base + plus(kept)
    return {
        PriorityKind.X509: x509,
        PriorityKind.PSK: x509 + ":+PSK" + PSK_KX,
        PriorityKind.PSK_SHA256: base + plus(c for c in kept if c in _SHA256_CIPHERS) + PSK_KX,
        PriorityKind.PSK_SHA384: base + plus(c for c in kept if c in _SHA384_CIPHERS) + PSK_KX,
    }


_NVME_IDENTITY = re.compile(rb"NVMe[0-9].([0-9]{2}) ")


def psk_kind(identity: bytes, key_length: int) -> PriorityKind:
    """Which list a client PSK handshake uses (docs/tlshd-compat.md §TCP-PRIORITIES, §PSK-CLIENT).

    An NVMe/TCP identity (``NVMe<d><c><hh> ...``) names its hash: 01 SHA-256,
    02 SHA-384, anything else is refused (EIO, no handshake).  Other identities
    go by key length: 32 bytes SHA-256, 48 SHA-384, otherwise any PSK suite.
    """
    match = _NVME_IDENTITY.match(identity)
    if match is not None:
        digits = match.group(1)
        if digits == b"01":
            return PriorityKind.PSK_SHA256
        if digits == b"02":
            return PriorityKind.PSK_SHA384
        raise TlsSetupError(
            f"NVMe PSK identity names hash {digits.decode()!r} (only 01 and 02 are defined)",
            code=errno.EIO,
        )
    if key_length == 32:
        return PriorityKind.PSK_SHA256
    if key_length == 48:
        return PriorityKind.PSK_SHA384
    return PriorityKind.PSK


_ciphers: tuple[KtlsCipher, ...] | None = None
_caches: dict[tuple[PriorityKind, tuple[int, ...] | None], Any] = {}


def priority_text(kind: PriorityKind, only: tuple[int, ...] | None = None) -> str:
    """The string for ``kind``; ``only`` narrows the kept ciphers (tests, self-test)."""
    global _ciphers
    if _ciphers is None:
        _ciphers = system_ciphers()
    kept: tuple[int, ...] = _ciphers
    if only is not None:
        kept = tuple(c for c in only if c in PRIORITY_NAMES)
    return priority_strings(kept, known_groups())[kind]


def priority_cache(kind: PriorityKind, only: tuple[int, ...] | None = None) -> Any:
    """A ``gnutls_priority_t`` for ``kind``, built once per process and kept alive."""
    key = (kind, only)
    cached = _caches.get(key)
    if cached is not None:
        return cached
    text = priority_text(kind, only)
    holder = ffi.new("gnutls_priority_t *")
    err = ffi.new("const char **")
    rc = lib.gnutls_priority_init2(holder, text.encode(), err, lib.GNUTLS_PRIORITY_INIT_DEF_APPEND)
    if rc < 0:
        raise TlsSetupError(f"TCP priority {kind.value} (system default + {text!r})", rc)
    cache = ffi.gc(holder[0], lib.gnutls_priority_deinit)
    _caches[key] = cache
    return cache


__all__ = [
    "BASE",
    "OPTIONAL_GROUPS",
    "PriorityKind",
    "known_groups",
    "priority_cache",
    "priority_strings",
    "priority_text",
    "psk_kind",
    "system_ciphers",
]
