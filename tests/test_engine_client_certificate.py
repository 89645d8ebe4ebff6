# SPDX-License-Identifier: GPL-2.0-only
"""The configured client certificate is presented whenever the server asks.

GnuTLS 3.7.9 picks the client certificate itself and skips an RSA
(rsaEncryption) key when the server's CertificateRequest lists only RSA-PSS
schemes, which it could sign with: it sends an empty Certificate and the
handshake fails on the server (certificate_required).  Our credentials hand
GnuTLS the configured certificate through a retrieve callback (as tlshd), so
on 3.7 and 3.8 alike the server gets it.  The server here is our engine whose
priorities allow only the schemes a strict peer (Go, for one) would request.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization

from quichsd.tls import (
    CertificateCredentials,
    CertificateRequest,
    HandshakeEngine,
    gnutls_version,
)
from quichsd.tls.memory import PairResult
from quichsd.tls.selfsigned import Issued, issue, make_ca

EngineFactory = Callable[..., HandshakeEngine]
Exchange = Callable[..., PairResult]

RSA_PSS = ("RSA-PSS-RSAE-SHA256", "RSA-PSS-RSAE-SHA384", "RSA-PSS-RSAE-SHA512")
#: client key kind -> the only schemes the server lists besides RSA-PSS (its own key is RSA).
CASES = {
    "rsa": (),
    "ecdsa": ("ECDSA-SECP256R1-SHA256",),
    "ecdsa-p384": ("ECDSA-SECP384R1-SHA384",),
    "ed25519": ("EDDSA-ED25519",),
}


@pytest.fixture(scope="module")
def rsa_server(ca: Issued) -> CertificateCredentials:
    leaf = issue(ca, ("server.test",), kind="rsa")
    return CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem, trust=ca.cert_pem)


def _client_credentials(ca: Issued, kind: str) -> tuple[CertificateCredentials, Issued]:
    leaf = issue(ca, ("client.test",), kind=kind)
    key = leaf.key_pem
    if kind == "rsa":  # a PKCS#1 file ("BEGIN RSA PRIVATE KEY"), as openssl genrsa writes
        key = leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        assert key.startswith(b"-----BEGIN RSA PRIVATE KEY")
    return CertificateCredentials(chain=leaf.cert_pem, key=key, trust=ca.cert_pem), leaf


@pytest.mark.parametrize("mode", [CertificateRequest.REQUIRE, CertificateRequest.REQUEST])
@pytest.mark.parametrize("kind", list(CASES))
def test_client_certificate_is_presented_to_a_server_with_strict_schemes(
    kind: str,
    mode: CertificateRequest,
    ca: Issued,
    rsa_server: CertificateCredentials,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    creds, leaf = _client_credentials(ca, kind)
    result = exchange(
        make_client(certificates=creds),
        make_server(
            certificates=rsa_server,
            certificate_request=mode,
            signatures=RSA_PSS + CASES[kind],
        ),
    )
    assert result.server.failure is None, (gnutls_version(), result.server.failure)
    assert result.client.failure is None, result.client.failure
    done = result.server.complete
    assert done is not None
    assert done.peer_certificates[:1] == (leaf.cert_der,), f"{kind}: no certificate sent"


def test_certificate_from_a_key_the_schemes_exclude_fails_on_the_server_not_silently(
    ca: Issued,
    rsa_server: CertificateCredentials,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    """An ECDSA client asked for RSA-PSS only: presented, and the handshake fails clearly."""
    creds, _ = _client_credentials(ca, "ecdsa")
    result = exchange(
        make_client(certificates=creds),
        make_server(
            certificates=rsa_server,
            certificate_request=CertificateRequest.REQUIRE,
            signatures=RSA_PSS,
        ),
    )
    assert result.client.failure is not None or result.server.failure is not None
    assert result.server.complete is None


def test_credentials_without_a_key_present_nothing(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange, ca: Issued
) -> None:
    result = exchange(
        make_client(certificates=CertificateCredentials(trust=ca.cert_pem)),
        make_server(certificate_request=CertificateRequest.REQUEST),
    )
    done = result.server.complete
    assert done is not None and done.peer_certificates == ()


def test_many_credentials_each_present_their_own(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    """The callback finds each session's own credentials among several alive at once."""
    ca = make_ca("quichsd registry CA")
    pairs = [_client_credentials(ca, "ecdsa") for _ in range(3)]
    leaf = issue(ca, ("server.test",))
    server = CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem, trust=ca.cert_pem)
    for creds, client_leaf in reversed(pairs):
        result = exchange(
            make_client(certificates=creds),
            make_server(certificates=server, certificate_request=CertificateRequest.REQUIRE),
        )
        done = result.server.complete
        assert done is not None, result.server.failure
        assert done.peer_certificates[0] == client_leaf.cert_der
