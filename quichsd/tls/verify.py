# SPDX-License-Identifier: GPL-2.0-only
"""A certificate chain judged by GnuTLS as the daemon's handshakes judge it.

The daemon verifies a peer with ``gnutls_certificate_verify_peers`` on its
``CertificateCredentials``, which runs ``gnutls_x509_trust_list_verify_crt2``
over the credentials' trust list with no extra flags.  ``verify_chain`` makes
the same credentials from the same files and makes the same call, so
``quichsd check`` and the daemon cannot disagree about a chain.  Only the
peer's name is left out (``check`` has no peer) and the clock is left to the
caller: GnuTLS checks the structure, ``ChainVerdict.path`` carries the
certificates whose validity periods the caller compares with its own "now".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import (
    CertificateCredentials,
    TlsSetupError,
    _datum,
    _format,
    check,
)


@dataclass(frozen=True)
class ChainVerdict:
    """GnuTLS's verdict on a chain, and the certificates it rests on (DER)."""

    #: ``gnutls_certificate_status_t`` bits; 0 means trusted.
    status: int
    #: GnuTLS's own words for ``status`` ("" when trusted).
    reason: str
    #: The chain as sent, in order, up to the last certificate whose issuer is trusted.
    used: tuple[bytes, ...]
    #: The trust anchor that issued the last of ``used``, if one did.
    anchor: bytes | None

    @property
    def trusted(self) -> bool:
        return self.status == 0

    @property
    def signer_not_found(self) -> bool:
        return bool(self.status & lib.GNUTLS_CERT_SIGNER_NOT_FOUND)


def _status_text(status: int) -> str:
    out = ffi.new("gnutls_datum_t *")
    check(
        lib.gnutls_certificate_verification_status_print(status, lib.GNUTLS_CRT_X509, out, 0),
        "describing a verification status",
    )
    try:
        return bytes(ffi.buffer(out.data, out.size)).decode(errors="replace").rstrip(". ")
    finally:
        lib.qd_free(out.data)


def _export(cert: Any) -> bytes:
    out = ffi.new("gnutls_datum_t *")
    check(
        lib.gnutls_x509_crt_export2(cert, lib.GNUTLS_X509_FMT_DER, out), "exporting a certificate"
    )
    try:
        return bytes(ffi.buffer(out.data, out.size))
    finally:
        lib.qd_free(out.data)


class _CertList:
    """Certificates GnuTLS parsed from one PEM or DER blob, freed on close."""

    def __init__(self, blob: bytes) -> None:
        holder = ffi.new("gnutls_x509_crt_t **")
        count = ffi.new("unsigned int *")
        check(
            lib.gnutls_x509_crt_list_import2(holder, count, _datum(blob), _format(blob), 0),
            "reading the chain",
        )
        self.array = holder[0]
        self.size = int(count[0])

    def __iter__(self) -> Iterator[Any]:
        return (self.array[i] for i in range(self.size))

    def close(self) -> None:
        for cert in self:
            lib.gnutls_x509_crt_deinit(cert)
        lib.qd_free(self.array)
        self.size = 0


def credentials_trusting(
    stores: Sequence[bytes], crls: Sequence[bytes] = ()
) -> CertificateCredentials:
    """Certificate credentials whose trust list holds every store (PEM or DER) given.

    A store or CRL GnuTLS refuses is left out, as ``check`` reports it on a line
    of its own; trust from the others still counts.
    """
    creds = CertificateCredentials()
    for blob in stores:
        creds.add_trust(blob)
    for blob in crls:
        creds.add_crl(blob)
    return creds


def verify_chain(
    chain: bytes, creds: CertificateCredentials, *, check_time: bool = False
) -> ChainVerdict:
    """GnuTLS's verdict on ``chain`` (leaf first, PEM or DER) against ``creds``' trust list.

    Without ``check_time`` the validity periods are not looked at (the caller
    compares ``used`` and ``anchor`` with its own clock); with it, the verdict is
    the daemon's at this moment.
    """
    tlist = ffi.new("gnutls_x509_trust_list_t *")
    lib.gnutls_certificate_get_trust_list(creds.ptr, tlist)
    certs = _CertList(chain)
    try:
        if certs.size == 0:
            raise TlsSetupError("the chain holds no certificate")
        flags = 0
        if not check_time:
            flags = (
                lib.GNUTLS_VERIFY_DISABLE_TIME_CHECKS
                | lib.GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS
            )
        status = ffi.new("unsigned int *")
        rc = lib.gnutls_x509_trust_list_verify_crt2(
            tlist[0], certs.array, certs.size, ffi.NULL, 0, flags, status, ffi.NULL
        )
        if rc < 0:
            raise TlsSetupError("verifying the chain", rc)
        used: list[bytes] = []
        anchor = None
        for cert in certs:
            used.append(_export(cert))
            issuer = ffi.new("gnutls_x509_crt_t *")
            found = lib.gnutls_x509_trust_list_get_issuer(
                tlist[0], cert, issuer, lib.GNUTLS_TL_GET_COPY
            )
            if found >= 0:
                anchor = _export(issuer[0])
                lib.gnutls_x509_crt_deinit(issuer[0])
                break
        value = int(status[0])
        return ChainVerdict(value, _status_text(value) if value else "", tuple(used), anchor)
    finally:
        certs.close()


__all__ = ["ChainVerdict", "credentials_trusting", "verify_chain"]
