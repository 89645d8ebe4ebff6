# SPDX-License-Identifier: GPL-2.0-only
"""A worker's QUIC job: credentials from the request, ``QuicHandshake`` on the
socket (quic/driver.py through quic/aio.py), an Outcome."""

from __future__ import annotations

from quichsd.daemon import keyring
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.jobs.common import (
    build_credentials,
    finished,
    job_credentials,
    refused,
)
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.handshake import Installer
from quichsd.quic.aio import run_handshake_async
from quichsd.quic.sockopt import QuicSocket


async def run_quic_job(job: Job, sock: QuicSocket, _install_ktls: Installer) -> Outcome:
    """The dispatch table's QUIC entry; the kTLS installer is not used here: the QUIC
    module takes its keys by setsockopt."""
    try:
        credentials, used_psk = job_credentials(job, sock, build_credentials)
        result = await run_handshake_async(sock, job.role, credentials, job.timeout)
    except (JobRefused, keyring.KeyringError) as exc:
        return refused(job, exc)
    done = result.complete
    alpn = done.alpn if done else None
    return finished(job, used_psk, result, done, alpn=alpn, resumed=bool(done and done.resumed))
