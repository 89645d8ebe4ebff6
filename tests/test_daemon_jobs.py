# SPDX-License-Identifier: GPL-2.0-only
"""Credentials a worker builds for a request (quichsd.daemon.jobs.common)."""

from __future__ import annotations

import dataclasses
import errno
import socket
from pathlib import Path

from quichsd.daemon import keyring
from quichsd.daemon.config import X509Files
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.jobs import common
from quichsd.daemon.jobs.common import build_credentials
from quichsd.daemon.protocol import Job, Transport
from quichsd.tls import AuthMode, Cipher, Role
from quichsd.tls.selfsigned import issue, make_ca


def _job(tmp_path: Path, auth: AuthMode) -> Job:
    ca = make_ca()
    leaf = issue(ca, ("client.test",))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    files = X509Files(
        truststore=tmp_path / "ca.pem",
        certificate=tmp_path / "cert.pem",
        private_key=str(tmp_path / "key.pem"),
    )
    return Job(
        request_id=1,
        role=Role.CLIENT,
        auth_mode=auth,
        transport=Transport.TCP,
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
    assert len(common._credential_cache) <= 3


# -- what the QUIC and TCP jobs share ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Done:
    cipher: int
    peer_certificates: tuple[bytes, ...]
    psk_identity: bytes | None


@dataclasses.dataclass(frozen=True)
class _Ended:
    status: int
    reason: str = ""
    duration: float = 0.0


def test_an_outcome_reports_remote_auth_only_on_success(tmp_path: Path) -> None:
    job = dataclasses.replace(_job(tmp_path, AuthMode.PSK), role=Role.SERVER)
    done = _Done(52, (), b"client-id")
    ok = common.finished(job, [0x1234], _Ended(0, duration=0.5), done)
    assert (ok.status, ok.remote_auth, ok.cipher) == (0, (0x1234,), Cipher.AES_256_GCM)
    assert (ok.peer, ok.alpn, ok.resumed, ok.duration) == ("psk:client-id", None, False, 0.5)
    failed = common.finished(job, [0x1234], _Ended(13, "denied"), done)
    assert (failed.status, failed.remote_auth, failed.reason) == (13, (), "denied")
    never = common.finished(job, [], _Ended(110, "timed out"), None)
    assert (never.cipher, never.peer, never.remote_auth) == (Cipher.ANY, None, ())
    quic = common.finished(job, [7], _Ended(0), done, alpn=b"smb\xff", resumed=True)
    assert (quic.alpn, quic.resumed) == ("smb\ufffd", True)


def test_a_refusal_carries_its_errno_and_a_keyring_failure_enokey(tmp_path: Path) -> None:
    job = _job(tmp_path, AuthMode.X509)
    refused = common.refused(job, JobRefused(errno.EINVAL, "unknown auth mode 0"))
    assert (refused.status, refused.reason) == (errno.EINVAL, "unknown auth mode 0")
    lost = common.refused(job, keyring.KeyringError(errno.EKEYREVOKED, "revoked"))
    assert lost.status == errno.ENOKEY


def test_the_peer_address_is_the_connected_ip_or_none() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        assert common.peer_address(client) == "127.0.0.1"
    a, b = socket.socketpair()
    with a, b:
        assert common.peer_address(a) is None  # AF_UNIX: no address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unconnected:
        assert common.peer_address(unconnected) is None  # ENOTCONN
    assert common.peer_address(object()) is None  # a model socket without getpeername
