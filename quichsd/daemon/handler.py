# SPDX-License-Identifier: GPL-2.0-only
"""Inside a worker: one job, with its socket, to the job its (role, transport)
names in the dispatch table (daemon/dispatch.py), under the job's log levels."""

from __future__ import annotations

from quichsd.daemon import dispatch, journal
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.jobs.common import refused
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.handshake import Installer
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls.debuglog import set_gnutls_debug


async def run_job(job: Job, sock: QuicSocket, *, install_ktls: Installer) -> Outcome:
    """``install_ktls``: the worker's wiring (daemon/wiring.py), for TCP jobs."""
    journal.set_level(journal.level_for(job.loglevel))
    set_gnutls_debug(job.tls_debug)  # before GnuTLS sees the peer's bytes
    try:
        _, name = dispatch.job_for(job.role, job.transport)
    except JobRefused as exc:
        return refused(job, exc)
    return await dispatch.job_function(name)(job, sock, install_ktls)
