"""Credentials a worker builds for a request (quichsd.daemon.handler)."""

from __future__ import annotations

from pathlib import Path

from quichsd.daemon.handler import build_credentials
from quichsd.daemon.protocol import Job
from quichsd.tls import AuthMode
from quichsd.tls.selfsigned import issue, make_ca


def _job(tmp_path: Path, auth: AuthMode) -> Job:
    ca = make_ca()
    leaf = issue(ca, ("client.test",))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    files: dict[str, str | None] = {
        "truststore": str(tmp_path / "ca.pem"),
        "certificate": str(tmp_path / "cert.pem"),
        "private_key": str(tmp_path / "key.pem"),
    }
    return Job(
        request_id=1,
        role="client",
        auth_mode=int(auth),
        transport="tcp",
        timeout=5.0,
        peername="server.test",
        generation=int(auth),
        x509=files,
    )


def test_unauth_client_presents_no_certificate_even_if_configured(tmp_path: Path) -> None:
    """knfsd marks a transport peer-authenticated when the client sends a certificate:
    an anonymous (xprtsec=tls) request must not send the configured one."""
    creds, _ = build_credentials(_job(tmp_path, AuthMode.UNAUTH), None)
    assert creds.certificates is not None and not creds.certificates.has_key


def test_x509_client_presents_its_configured_certificate(tmp_path: Path) -> None:
    creds, _ = build_credentials(_job(tmp_path, AuthMode.X509), None)
    assert creds.certificates is not None and creds.certificates.has_key
    assert creds.peer_name == "server.test"
