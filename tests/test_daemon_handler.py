# SPDX-License-Identifier: GPL-2.0-only
"""Credentials a worker builds for a request (quichsd.daemon.handler)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from quichsd.daemon import handler
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


def test_credential_cache_stays_bounded_across_reloads_and_renewed_files(
    tmp_path: Path,
) -> None:
    """Each reload (a new generation) and each rewritten file builds new credentials; the
    old ones must not pile up in the worker (issue 11, item 9)."""
    job = _job(tmp_path, AuthMode.X509)
    first = build_credentials(job, None)[0].certificates
    assert build_credentials(job, None)[0].certificates is first  # cached
    for generation in range(2, 40):
        later = dataclasses.replace(job, generation=generation)
        assert build_credentials(later, None)[0].certificates is not first
        if generation % 5 == 0:
            (tmp_path / "ca.pem").write_bytes((tmp_path / "ca.pem").read_bytes())  # renewed
    assert len(handler._credential_cache) <= 3
