# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check`` and a real handshake reach the same verdict on the same files.

For each set of server files (good chains, and chains a peer must refuse) the
check's server lines are compared with a handshake through the daemon's engine:
a server whose credentials are built from the files as a worker builds them,
against a client that trusts the client section's trust store and CRL, again as
a worker builds them.  The two cannot disagree because both ask GnuTLS the same
question (quichsd/tls/verify.py); this proves it case by case.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from quichsd.check import Environment, run_checks
from quichsd.tls import AuthMode, CertificateCredentials, EngineConfig, HandshakeEngine, Role
from quichsd.tls.binding import TlsSetupError
from quichsd.tls.memory import run_pair
from quichsd.tls.selfsigned import Issued, _pem, issue, make_ca, new_key

NOW = datetime.datetime.now(datetime.UTC)
NAME = "server.test"


@dataclass(frozen=True)
class Files:
    """What the configuration names: the server's chain and key, the client's trust."""

    chain: bytes
    key: bytes
    trust: bytes
    crl: bytes | None = None


def _ca_signed(
    issuer: Issued, name: str, *, ca: bool, start: datetime.datetime, end: datetime.datetime
) -> Issued:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return _pem(builder.sign(issuer.key, hashes.SHA256()), key)


def _intermediate(root: Issued, *, expired: bool = False) -> Issued:
    if expired:
        start, end = NOW - datetime.timedelta(days=20), NOW - datetime.timedelta(days=2)
    else:
        start, end = NOW - datetime.timedelta(hours=1), NOW + datetime.timedelta(days=30)
    return _ca_signed(root, "agree intermediate", ca=True, start=start, end=end)


def _self_signed_leaf() -> Issued:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def _revoking(ca: Issued, leaf: Issued) -> bytes:
    from cryptography.hazmat.primitives import serialization

    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.cert.serial_number)
        .revocation_date(NOW - datetime.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - datetime.timedelta(hours=1))
        .next_update(NOW + datetime.timedelta(days=7))
        .add_revoked_certificate(revoked)
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def _good() -> Files:
    ca = make_ca("agree CA")
    leaf = issue(ca, (NAME,))
    return Files(leaf.cert_pem + ca.cert_pem, leaf.key_pem, ca.cert_pem)


def _leaf_only() -> Files:
    ca = make_ca("agree CA")
    leaf = issue(ca, (NAME,))
    return Files(leaf.cert_pem, leaf.key_pem, ca.cert_pem)


def _through_intermediate(*, send_it: bool = True, expired: bool = False) -> Files:
    ca = make_ca("agree CA")
    middle = _intermediate(ca, expired=expired)
    leaf = issue(middle, (NAME,))
    chain = leaf.cert_pem + (middle.cert_pem if send_it else b"")
    return Files(chain, leaf.key_pem, ca.cert_pem)


def _expired() -> Files:
    ca = make_ca("agree CA")
    leaf = issue(ca, (NAME,), expired=True)
    return Files(leaf.cert_pem, leaf.key_pem, ca.cert_pem)


def _wrong_ca() -> Files:
    ca, stranger = make_ca("agree CA"), make_ca("stranger CA")
    leaf = issue(stranger, (NAME,))
    return Files(leaf.cert_pem + stranger.cert_pem, leaf.key_pem, ca.cert_pem)


def _key_mismatch() -> Files:
    ca = make_ca("agree CA")
    leaf = issue(ca, (NAME,))
    return Files(leaf.cert_pem, issue(ca, (NAME,)).key_pem, ca.cert_pem)


def _self_signed(*, trusted: bool) -> Files:
    leaf = _self_signed_leaf()
    trust = leaf.cert_pem if trusted else make_ca("agree CA").cert_pem
    return Files(leaf.cert_pem, leaf.key_pem, trust)


def _revoked() -> Files:
    ca = make_ca("agree CA")
    leaf = issue(ca, (NAME,))
    return Files(leaf.cert_pem, leaf.key_pem, ca.cert_pem, _revoking(ca, leaf))


#: name: (files, whether a peer accepts them)
CASES: dict[str, tuple[Callable[[], Files], bool]] = {
    "chain with its root": (_good, True),
    "leaf alone, root trusted": (_leaf_only, True),
    "through an intermediate": (_through_intermediate, True),
    "self-signed leaf that is itself trusted": (lambda: _self_signed(trusted=True), True),
    "expired leaf": (_expired, False),
    "wrong CA": (_wrong_ca, False),
    "missing intermediate": (lambda: _through_intermediate(send_it=False), False),
    "expired intermediate": (lambda: _through_intermediate(expired=True), False),
    "key not matching the certificate": (_key_mismatch, False),
    "self-signed leaf": (lambda: _self_signed(trusted=False), False),
    "revoked by the client's CRL": (_revoked, False),
}


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def check_accepts(files: Files, directory: Path) -> tuple[bool, list[str]]:
    """``quichsd check``'s verdict: no ✗ on the server's lines."""
    client = [f"x509.truststore={_write(directory, 'trust.pem', files.trust)}"]
    if files.crl is not None:
        client.append(f"x509.crl={_write(directory, 'client.crl', files.crl)}")
    config = _write(
        directory,
        "config",
        "\n".join(
            [
                "[authenticate.client]",
                *client,
                "[authenticate.server]",
                f"x509.certificate={_write(directory, 'chain.pem', files.chain)}",
                f"x509.private_key={_write(directory, 'key.pem', files.key)}",
                "",
            ]
        ).encode(),
    )
    env = Environment(open_family=None, system_trust=(), now=lambda: NOW)
    server = [c for c in run_checks(config, env) if c.name.startswith("server")]
    assert server, "the server's files were checked"
    failed = [f"{c.name}: {c.detail}" for c in server if c.state == "fail"]
    return not failed, failed


def handshake_accepts(files: Files) -> tuple[bool, str]:
    """A handshake's verdict, with credentials built from the files as a worker builds them."""
    try:
        server_creds = CertificateCredentials(chain=files.chain, key=files.key)
    except TlsSetupError as exc:  # the worker refuses the request (EIO): no handshake
        return False, f"server credentials: {exc.strerror}"
    client_creds = CertificateCredentials(trust=files.trust, crl=files.crl)
    client = HandshakeEngine(
        EngineConfig(
            role=Role.CLIENT, auth=AuthMode.X509, certificates=client_creds, peer_name=NAME
        ),
        b"\x01\x02client",
    )
    server = HandshakeEngine(
        EngineConfig(role=Role.SERVER, auth=AuthMode.X509, certificates=server_creds),
        b"\x03\x04server",
    )
    result = run_pair(client, server)
    if result.client.complete is not None:
        return True, "handshake complete"
    failure = result.client.failure
    return False, str(failure.reason if failure is not None else "no completion")


@pytest.mark.parametrize("case", list(CASES))
def test_check_and_handshake_agree(case: str, tmp_path: Path) -> None:
    make, expected = CASES[case]
    files = make()
    by_check, complaints = check_accepts(files, tmp_path)
    by_handshake, why = handshake_accepts(files)
    assert by_handshake == expected, why
    assert by_check == by_handshake, (complaints, why)
    if not expected:
        assert len(complaints) == 1, complaints  # one problem, one line
