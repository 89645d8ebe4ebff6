# SPDX-License-Identifier: GPL-2.0-only
"""Inside a worker: one job, with its socket, to the job its (role, transport)
names in the dispatch table (daemon/dispatch.py), under the job's log levels."""

from __future__ import annotations

import socket

from quichsd.daemon import dispatch, journal
from quichsd.daemon.jobs.common import JobRefused, refused
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.handshake import Installer
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls.debuglog import set_gnutls_debug


def open_kernel_socket(fd: int) -> QuicSocket:
    """A socket object over the worker's copy of the fd (closed by the caller)."""
    return socket.socket(fileno=fd)


async def run_job(job: Job, sock: QuicSocket, *, install_ktls: Installer) -> Outcome:
    """``install_ktls``: the worker's wiring (daemon/wiring.py), for TCP jobs."""
    journal.set_level(journal.level_for(job.loglevel))
    set_gnutls_debug(job.tls_debug)  # before GnuTLS sees the peer's bytes
    try:
        _, run = dispatch.job_for(job.role, job.transport)
    except JobRefused as exc:
        return refused(job, exc)
    return await run(job, sock, install_ktls)
