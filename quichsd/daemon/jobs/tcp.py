# SPDX-License-Identifier: GPL-2.0-only
"""A worker's TCP job: credentials from the request, the handshake, kTLS, an Outcome.

Credentials come from the keyring serials in the request, else from the
configuration files, through the same helpers as QUIC (``jobs/common.py``).
REMOTE_AUTH follows docs/kernel-abi.md §REMOTE-AUTH for TCP: a client with X.509
reports one ``asymmetric`` key per server certificate, a PSK client the
serial of its PSK, an X.509 server 0xFFFFFFFF per client certificate, a PSK
server the serial of the key its lookup found.

Several PSK identities (docs/tlshd-compat.md §PSK-CLIENT: "try each in turn while the
result is EACCES"): a failed TLS handshake cannot be retried on the same TCP
connection (the peer has already answered or closed it), so only one
handshake is attempted.  Identities whose key cannot be read are skipped;
the first readable one is used.  (tlshd collects at most one identity.)
"""

from __future__ import annotations

import errno
import socket

from quichsd.daemon import keyring
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.jobs.common import (
    build_credentials,
    finished,
    job_credentials,
    refused,
)
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.aio import run_tcp_handshake
from quichsd.ktls.handshake import Installer, TcpHandshakeResult
from quichsd.ktls.session import TcpCredentials
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
    if job.auth_mode is AuthMode.PSK and job.role is Role.CLIENT:
        creds, serial = psk_client_credentials(job)
        return creds, [serial]
    shared, used_psk = build_credentials(job, peer_address)
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
        credentials, used_psk = job_credentials(job, sock, tcp_credentials)
        result: TcpHandshakeResult = await run_tcp_handshake(
            sock, job.role, credentials, job.timeout, install=install
        )
    except (JobRefused, keyring.KeyringError) as exc:
        return refused(job, exc)
    return finished(job, used_psk, result, result.completion)


__all__ = [
    "psk_client_credentials",
    "run_tcp_job",
    "tcp_credentials",
]
