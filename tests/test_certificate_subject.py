# SPDX-License-Identifier: GPL-2.0-only
"""The peer's subject the daemon logs comes from GnuTLS (tls/binding.py
``certificate_subject``), so workers load no second X.509 library; it reads as the
RFC 4514 string cryptography gives for the same certificate."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quichsd.daemon.identities import peer_subject
from quichsd.tls.binding import TlsSetupError, certificate_subject

KEY = ec.generate_private_key(ec.SECP256R1())


def _der(subject: x509.Name) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


SUBJECTS = {
    "common name": _name((NameOID.COMMON_NAME, "server.test")),
    "several": _name(
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Berlin"),
        (NameOID.LOCALITY_NAME, "Berlin"),
        (NameOID.ORGANIZATION_NAME, "quichsd test"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "storage"),
        (NameOID.COMMON_NAME, "nfs1.example.test"),
    ),
    "escapes": _name(
        (NameOID.ORGANIZATION_NAME, 'a,b+c"d\\e<f>g;h'),
        (NameOID.COMMON_NAME, "#lead and trail "),
    ),
    "utf-8": _name((NameOID.COMMON_NAME, "bücher.例え.test")),
    "multi-valued": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "host"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "unit"),
                ]
            )
        ]
    ),
}


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=SUBJECTS.keys())
def test_gnutls_reads_the_subject_as_rfc4514(subject: x509.Name) -> None:
    der = _der(subject)
    expected = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    assert certificate_subject(der) == expected


def test_a_certificate_that_does_not_parse() -> None:
    with pytest.raises(TlsSetupError):
        certificate_subject(b"\x30\x03\x02\x01\x00")
    assert peer_subject([b"not a certificate"], None) == "<unparsable certificate>"
    assert peer_subject([], b"nvme-host") == "psk:nvme-host"
