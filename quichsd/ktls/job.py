# SPDX-License-Identifier: GPL-2.0-only
"""A worker's TCP job: credentials from the request, the handshake, kTLS, an Outcome.

Credentials come from the keyring serials in the request, else from the
configuration files, through the same helpers as QUIC (``daemon.handler``).
REMOTE_AUTH follows handshake-netlink.md §9 for TCP: a client with X.509
reports one ``asymmetric`` key per server certificate, a PSK client the
serial of its PSK, an X.509 server 0xFFFFFFFF per client certificate, a PSK
server the serial of the key its lookup found.

Several PSK identities (tlshd-behaviour.md §7.3: "try each in turn while the
result is EACCES"): a failed TLS handshake cannot be retried on the same TCP
connection (the peer has already answered or closed it), so only one
handshake is attempted.  Identities whose key cannot be read are skipped;
the first readable one is used.  (tlshd collects at most one identity.)
"""

from __future__ import annotations

import errno
import socket

from quichsd.daemon import handler, keyring
from quichsd.daemon.handler import JobRefused
from quichsd.daemon.identities import peer_subject, remote_auth
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.session import (
    Installer,
    TcpCredentials,
    TcpHandshakeResult,
    run_tcp_handshake,
)
from quichsd.tls import AuthMode, Role


def psk_client_credentials(job: Job) -> tuple[TcpCredentials, int]:
    """The PSK a client offers and its serial: the first listed key that can be read."""
    if not job.peer_identities:
        raise JobRefused(errno.ENOKEY, "PSK client request without a peer identity")
    problems: list[str] = []
    for serial in job.peer_identities:
        try:
            identity = keyring.psk_identity(serial)
            key = keyring.read_key(serial)
        except keyring.KeyringError as exc:
            problems.append(f"PSK key {serial:#x}: {exc.strerror}")
            continue
        return TcpCredentials(AuthMode.PSK, psk_identity=identity, psk_key=key), serial
    raise JobRefused(errno.ENOKEY, "; ".join(problems))


def tcp_credentials(job: Job, peer_address: str | None) -> tuple[TcpCredentials, list[int]]:
    """Credentials for the job, and the serial(s) that identify a PSK peer once it succeeds."""
    if job.auth_mode == AuthMode.PSK and job.role == "client":
        creds, serial = psk_client_credentials(job)
        return creds, [serial]
    shared, used_psk = handler.build_credentials(job, peer_address)
    return (
        TcpCredentials(
            shared.auth,
            certificates=shared.certificates,
            psk_lookup=shared.psk_lookup,
            peer_name=shared.peer_name,
            verify_peer=shared.verify_peer,
        ),
        used_psk,
    )


async def run_tcp_job(job: Job, sock: object, install: Installer) -> Outcome:
    """``install``: what hands the finished session to the kernel (the worker's wiring)."""
    if not isinstance(sock, socket.socket):
        return Outcome(job.request_id, errno.EIO, reason="a TCP handshake needs a kernel socket")
    try:
        # The request's keyring only while its keys are read (keyring.possessing).
        with keyring.possessing(job.keyring):
            credentials, used_psk = tcp_credentials(job, _peer_address(sock))
        role = Role.SERVER if job.role == "server" else Role.CLIENT
        result: TcpHandshakeResult = await run_tcp_handshake(
            sock, role, credentials, job.timeout, install=install
        )
    except JobRefused as exc:
        return Outcome(job.request_id, exc.errno, reason=str(exc))
    except keyring.KeyringError as exc:
        return Outcome(job.request_id, errno.ENOKEY, reason=str(exc))
    done = result.completion
    return Outcome(
        request_id=job.request_id,
        status=result.status,
        remote_auth=remote_auth(job, done.peer_certificates, used_psk)
        if result.ok and done
        else (),
        reason=result.reason,
        cipher=done.cipher if done else 0,
        peer=peer_subject(done.peer_certificates, done.psk_identity) if done else None,
        duration=result.duration,
    )


def _peer_address(sock: socket.socket) -> str | None:
    try:
        address = sock.getpeername()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else None


__all__ = [
    "psk_client_credentials",
    "run_tcp_job",
    "tcp_credentials",
]
