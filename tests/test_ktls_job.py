# SPDX-License-Identifier: GPL-2.0-only
"""The daemon's TCP jobs: ``handler.run_job`` with transport "tcp" on real loopback sockets
(``daemon/jobs/tcp.py``).

Credentials come from configuration files or keyring serials, as for QUIC;
REMOTE_AUTH follows docs/kernel-abi.md §REMOTE-AUTH for TCP.  kTLS itself is replaced
by a recorder (the worker's ``install_ktls`` parameter) where the test is about the
handshake (this host has no kTLS); one test keeps the real installer and expects EIO
with the kernel's reason.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from ktls_support import TIMEOUT, kernel_has_ktls, loopback_pair

from quichsd.daemon import handler, keyring
from quichsd.daemon.config import X509Files
from quichsd.daemon.protocol import Job, Outcome, Transport
from quichsd.daemon.service import HandshakeService
from quichsd.ktls import InstallReport, KtlsMaterial, TcpCredentials, run_tcp_handshake
from quichsd.ktls.handshake import Installer
from quichsd.ktls.install import SockoptTarget, install_ktls
from quichsd.tls import AuthMode, CertificateCredentials, Role
from quichsd.tls.selfsigned import Issued

SERVER_NAME = "server.test"
_generations = itertools.count(1000)
_ids = itertools.count(1)


class Recorder(list[KtlsMaterial]):
    """An installer that records what it was given instead of installing kTLS."""

    def __call__(self, sock: SockoptTarget, material: KtlsMaterial) -> InstallReport:
        self.append(material)
        return InstallReport(payload_limit_set=True, payload_limit=material.payload_limit)


@pytest.fixture
def installed() -> Recorder:
    """kTLS installation replaced with a recorder (pass it as ``install``)."""
    return Recorder()


@pytest.fixture(scope="module")
def pki_files(
    tmp_path_factory: pytest.TempPathFactory, ca: Issued, server_leaf: Issued, client_leaf: Issued
) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("pki")
    out = {}
    for name, data in (
        ("ca", ca.cert_pem),
        ("server_cert", server_leaf.cert_pem),
        ("server_key", server_leaf.key_pem),
        ("client_cert", client_leaf.cert_pem),
        ("client_key", client_leaf.key_pem),
    ):
        path = tmp / f"{name}.pem"
        path.write_bytes(data)
        out[name] = str(path)
    return out


def make_job(
    role: str, auth: AuthMode, *, x509: dict[str, str | None] | None = None, **kw: Any
) -> Job:
    return Job(
        request_id=next(_ids),
        role=Role(role),
        auth_mode=auth,
        transport=Transport.TCP,
        timeout=TIMEOUT,
        generation=next(_generations),  # the handler caches file credentials per generation
        x509=X509Files.from_text(x509 or {}),
        **kw,
    )


def client_files(pki: dict[str, str], *, own: bool) -> dict[str, str | None]:
    return {
        "truststore": pki["ca"],
        "certificate": pki["client_cert"] if own else None,
        "private_key": pki["client_key"] if own else None,
    }


def server_files(pki: dict[str, str]) -> dict[str, str | None]:
    return {
        "truststore": pki["ca"],
        "certificate": pki["server_cert"],
        "private_key": pki["server_key"],
    }


def job_against(
    job: Job, peer_role: Role, peer: TcpCredentials, install: Installer = install_ktls
) -> tuple[Outcome, int]:
    """Runs ``job`` on one end of a loopback pair and our handshake on the other."""

    async def run() -> tuple[Outcome, int]:
        with loopback_pair() as (c, s):
            mine, theirs = (s, c) if job.role == "server" else (c, s)
            outcome, result = await asyncio.gather(
                handler.run_job(job, mine, install_ktls=install),
                run_tcp_handshake(theirs, peer_role, peer, TIMEOUT, install=None),
            )
            return outcome, result.status

    return asyncio.run(run())


def test_tcp_is_served_by_default() -> None:
    default = inspect.signature(HandshakeService).parameters["served_transports"].default
    assert default == frozenset({"quic", "tcp"})


def test_x509_client_reports_one_key_per_server_certificate(
    installed: Recorder, pki_files: dict[str, str], server_creds: CertificateCredentials
) -> None:
    job = make_job(
        "client", AuthMode.X509, x509=client_files(pki_files, own=True), peername=SERVER_NAME
    )
    outcome, peer_status = job_against(
        job, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds),
        install=installed,
    )
    assert (outcome.status, peer_status) == (0, 0), outcome.reason
    assert outcome.cipher in (51, 52, 53, 54)
    assert outcome.peer == "CN=server.test"
    # server_creds sends leaf + CA; each becomes an asymmetric key (0 if the kernel
    # has no asymmetric key type).
    assert len(outcome.remote_auth) == 2
    assert all(isinstance(serial, int) for serial in outcome.remote_auth)
    assert len(installed) == 1 and installed[0].cipher == outcome.cipher


def test_x509_client_wrong_name_is_eacces(
    installed: Recorder, pki_files: dict[str, str], server_creds: CertificateCredentials
) -> None:
    job = make_job(
        "client", AuthMode.X509, x509=client_files(pki_files, own=True), peername="other.test"
    )
    outcome, _ = job_against(
        job, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds),
        install=installed,
    )
    assert outcome.status == errno.EACCES
    assert outcome.remote_auth == ()
    assert installed == []


def test_anonymous_client_reports_nothing(
    installed: Recorder, pki_files: dict[str, str], server_creds: CertificateCredentials
) -> None:
    job = make_job(
        "client", AuthMode.UNAUTH, x509=client_files(pki_files, own=False), peername=SERVER_NAME
    )
    outcome, _ = job_against(
        job, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds),
        install=installed,
    )
    assert outcome.status == 0, outcome.reason
    assert outcome.remote_auth == ()


@pytest.mark.parametrize("client_has_cert", [True, False])
def test_x509_server_marks_each_client_certificate(
    installed: Recorder,
    pki_files: dict[str, str],
    client_cert_creds: CertificateCredentials,
    trust_creds: CertificateCredentials,
    client_has_cert: bool,
) -> None:
    job = make_job("server", AuthMode.X509, x509=server_files(pki_files))
    creds = client_cert_creds if client_has_cert else trust_creds
    outcome, peer_status = job_against(
        job, Role.CLIENT, TcpCredentials(AuthMode.X509, certificates=creds, peer_name=SERVER_NAME),
        install=installed,
    )
    assert (outcome.status, peer_status) == (0, 0), outcome.reason
    expected = (0xFFFFFFFF, 0xFFFFFFFF) if client_has_cert else ()  # leaf + CA sent
    assert outcome.remote_auth == expected


def test_unauthenticated_server_job_is_eio(pki_files: dict[str, str]) -> None:
    job = make_job("server", AuthMode.UNAUTH, x509=server_files(pki_files))

    async def run() -> Outcome:
        with loopback_pair() as (_c, s):
            return await handler.run_job(job, s, install_ktls=install_ktls)

    assert asyncio.run(run()).status == errno.EIO


def _psk_key(identity: str, key: bytes) -> int:
    return keyring.add_key("user", identity, key, keyring.KEY_SPEC_SESSION_KEYRING)


def _unique(name: str) -> str:
    return f"quichsd-ktls-{os.getpid()}-{name}"


def test_psk_client_reports_the_serial_that_succeeded(installed: Recorder) -> None:
    identity, key = _unique("client"), os.urandom(32)
    serial = _psk_key(identity, key)
    job = make_job("client", AuthMode.PSK, peer_identities=(0x7FFFFFF0, serial))
    outcome, peer_status = job_against(
        job, Role.SERVER, TcpCredentials(AuthMode.PSK, psk_lookup={identity.encode(): key}.get),
        install=installed,
    )
    assert (outcome.status, peer_status) == (0, 0), outcome.reason
    assert outcome.remote_auth == (serial,)  # the unreadable first serial was skipped
    assert outcome.peer == f"psk:{identity}"


def test_psk_client_without_identity_is_enokey() -> None:
    job = make_job("client", AuthMode.PSK)

    async def run() -> Outcome:
        with loopback_pair() as (c, _s):
            return await handler.run_job(job, c, install_ktls=install_ktls)

    outcome = asyncio.run(run())
    assert outcome.status == errno.ENOKEY


@pytest.mark.parametrize("key_length", [32, 48])
def test_psk_server_reports_the_key_it_found_in_one_search(
    installed: Recorder, monkeypatch: pytest.MonkeyPatch, key_length: int
) -> None:
    # GnuTLS >= 3.8.11 asks twice (tests/test_ktls_handshake.py): one search answers both.
    identity, key = _unique(f"server-{key_length}"), os.urandom(key_length)
    serial = _psk_key(identity, key)
    searched: list[bytes] = []
    real = keyring.find_psk

    def counting(name: bytes, ring: int | None = None) -> tuple[int, bytes] | None:
        searched.append(name)
        return real(name, ring)

    monkeypatch.setattr(keyring, "find_psk", counting)
    job = make_job("server", AuthMode.PSK)
    outcome, peer_status = job_against(
        job,
        Role.CLIENT,
        TcpCredentials(AuthMode.PSK, psk_identity=identity.encode(), psk_key=key),
        install=installed,
    )
    assert (outcome.status, peer_status) == (0, 0), outcome.reason
    assert outcome.remote_auth == (serial,)
    assert searched == [identity.encode()]


def test_psk_server_unknown_identity_is_ekeyrejected(installed: Recorder) -> None:
    job = make_job("server", AuthMode.PSK)
    outcome, peer_status = job_against(
        job,
        Role.CLIENT,
        TcpCredentials(AuthMode.PSK, psk_identity=_unique("nobody").encode(), psk_key=bytes(32)),
        install=installed,
    )
    assert outcome.status == errno.EKEYREJECTED
    assert peer_status == errno.EKEYREJECTED
    assert installed == []


def _real_installer_outcome(
    pki_files: dict[str, str], server_creds: CertificateCredentials
) -> Outcome:
    job = make_job(
        "client", AuthMode.X509, x509=client_files(pki_files, own=False), peername=SERVER_NAME
    )
    outcome, _ = job_against(
        job, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds)
    )
    return outcome


@pytest.mark.skipif(not kernel_has_ktls(), reason="this kernel has no kTLS (TCP_ULP tls)")
def test_real_installer_on_a_kernel_with_ktls(
    pki_files: dict[str, str], server_creds: CertificateCredentials
) -> None:
    assert _real_installer_outcome(pki_files, server_creds).status == 0


@pytest.mark.skipif(kernel_has_ktls(), reason="this kernel has kTLS (TCP_ULP tls)")
def test_real_installer_on_a_kernel_without_ktls(
    pki_files: dict[str, str], server_creds: CertificateCredentials
) -> None:
    outcome = _real_installer_outcome(pki_files, server_creds)
    assert outcome.status == errno.EIO
    assert outcome.reason == (
        "client TCP handshake: kTLS: kernel has no kTLS (TCP_ULP tls: ENOENT)"
    )
    assert outcome.remote_auth == ()


def test_a_non_socket_is_refused(tmp_path: Path) -> None:
    job = make_job("client", AuthMode.UNAUTH)
    outcome = asyncio.run(handler.run_job(job, object(), install_ktls=install_ktls))  # type: ignore[arg-type]
    assert outcome.status == errno.EIO
