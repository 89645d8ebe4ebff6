# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd serve`` on the models (``quichsd.userspace.serve``) whose workers act as if a peer
had taken one over: for a request whose peer name is ``HOSTILE_PEERNAME`` the worker
opens a netlink socket before the handshake -- what code injected by a peer would do to
reach the handshake family and ACCEPT or DONE other consumers' requests.  The daemon is
otherwise the real one (fork server, privilege drop, seccomp filter);
tests/test_daemon_e2e.py runs it through DaemonRig(entry=...).

Nothing of this is in the package: the wrapper replaces ``handler.run_job`` before ``serve``
starts its fork server, so every worker has the wrapper.
"""

from __future__ import annotations

import socket
import sys

from quichsd.daemon import handler
from quichsd.daemon.protocol import Job, Outcome
from quichsd.ktls.handshake import Installer
from quichsd.quic.sockopt import QuicSocket
from quichsd.userspace.serve import main

HOSTILE_PEERNAME = "open-netlink.test"
NETLINK_GENERIC = 16
_real_run_job = handler.run_job


async def run_job(job: Job, sock: QuicSocket, *, install_ktls: Installer) -> Outcome:
    if job.peername == HOSTILE_PEERNAME:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        return Outcome(job.request_id, 0, reason="the netlink socket opened: not confined")
    return await _real_run_job(job, sock, install_ktls=install_ktls)


if __name__ == "__main__":
    handler.run_job = run_job  # type: ignore[assignment]
    sys.exit(main(sys.argv[1:]))
