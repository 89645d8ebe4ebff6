# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check`` on what real configurations hold: CAs in the other section, odd
certificates, and keys this GnuTLS may not sign with as peers ask."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.x509.oid import NameOID

from quichsd.check import Check, Environment, run_checks
from quichsd.tls.selfsigned import Issued, issue, make_ca

NOW = datetime.datetime.now(datetime.UTC)


def _env() -> Environment:
    return Environment(open_family=None, system_trust=(), now=lambda: NOW)


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _config(directory: Path, server: dict[str, Path], client_trust: Path | None) -> Path:
    lines = ["[authenticate.client]"]
    if client_trust is not None:
        lines.append(f"x509.truststore={client_trust}")
    lines.append("[authenticate.server]")
    lines += [f"{key}={value}" for key, value in server.items()]
    path = directory / "config"
    path.write_text("\n".join(lines) + "\n")
    return path


def _named(checks: list[Check], prefix: str) -> dict[str, Check]:
    return {c.name: c for c in checks if c.name.startswith(prefix)}


def _server(tmp_path: Path, leaf: Issued, key: bytes | None = None) -> dict[str, Path]:
    return {
        "x509.certificate": _write(tmp_path, "server.pem", leaf.cert_pem),
        "x509.private_key": _write(tmp_path, "server.key", key or leaf.key_pem),
    }


def test_server_chain_whose_ca_is_only_in_the_client_trust_store_is_fine(tmp_path: Path) -> None:
    ca = make_ca("client-side CA")
    server = _server(tmp_path, issue(ca, ("server.test",)))
    client_trust = _write(tmp_path, "ca.pem", ca.cert_pem)
    checks = _named(run_checks(_config(tmp_path, server, client_trust), _env()), "server")
    assert checks["server chain"].state == "ok", checks
    assert checks["server chain"].detail == "chains to CN=client-side CA"


def test_server_chain_trusted_nowhere_still_fails(tmp_path: Path) -> None:
    ca = make_ca("nobody's CA")
    server = _server(tmp_path, issue(ca, ("server.test",)))
    checks = _named(run_checks(_config(tmp_path, server, None), _env()), "server")
    assert checks["server chain"].state == "fail"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make the certificate")
def test_negative_serial_number_is_a_line_in_the_table_not_a_python_warning(
    tmp_path: Path,
) -> None:
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=negative",
            "-days",
            "10",
            "-set_serial",
            "-12345",
        ],
        check=True,
        capture_output=True,
    )
    config = _config(
        tmp_path, {"x509.certificate": cert, "x509.private_key": key}, tmp_path / "server.pem"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-m", "quichsd.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        timeout=60,
    )
    assert "Warning" not in done.stderr and "warn(" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert "CN=negative has a negative serial number" in done.stdout
    assert "client trust store" in done.stdout and "one has a negative serial" in done.stdout


@pytest.mark.parametrize(
    ("kind", "state", "words"),
    [
        ("rsa", "ok", "RSA key signs as RSA-PSS-RSAE-SHA256"),
        ("ecdsa", "ok", "secp256r1 key signs as ECDSA-SECP256R1-SHA256"),
        ("ecdsa-p384", "ok", "secp384r1 key signs as ECDSA-SECP384R1-SHA384"),
        ("ed25519", "warn", "many peers do not list Ed25519"),
    ],
)
def test_signing_with_the_configured_key(kind: str, state: str, words: str, tmp_path: Path) -> None:
    ca = make_ca("signing CA")
    server = _server(tmp_path, issue(ca, ("server.test",), kind=kind))
    trust = _write(tmp_path, "ca.pem", ca.cert_pem)
    checks = _named(run_checks(_config(tmp_path, server, trust), _env()), "server")
    assert checks["server signing"].state == state, checks["server signing"]
    assert words in checks["server signing"].detail


def test_a_dsa_key_cannot_sign_in_tls_1_3(tmp_path: Path) -> None:
    ca = make_ca("dsa CA")
    key = dsa.generate_private_key(2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsa.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=3))
        .sign(ca.key, hashes.SHA256())
    )
    server = {
        "x509.certificate": _write(
            tmp_path, "server.pem", cert.public_bytes(serialization.Encoding.PEM)
        ),
        "x509.private_key": _write(
            tmp_path,
            "server.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    }
    trust = _write(tmp_path, "ca.pem", ca.cert_pem)
    checks = _named(run_checks(_config(tmp_path, server, trust), _env()), "server")
    assert checks["server signing"].state == "fail"
    assert "TLS 1.3 has no signature scheme" in checks["server signing"].detail
