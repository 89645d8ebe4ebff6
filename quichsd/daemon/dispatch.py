# SPDX-License-Identifier: GPL-2.0-only
"""Which job serves a request: one table, (role, transport) -> job, and the one
place that refuses what it does not hold.

ACCEPT's MESSAGE_TYPE gives the role, the socket's SO_PROTOCOL the transport
(docs/ARCHITECTURE.md, "How a kernel request flows").  The parent asks here
before it hands a request to a worker, so no worker is sent one it cannot
serve; the worker runs the job the same table names.  Refusals (docs/errno.md):
a role the table does not know is EINVAL (a malformed request), a transport it
does not know or the daemon does not serve is EOPNOTSUPP.
"""

from __future__ import annotations

import errno
import functools
import importlib
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from quichsd.daemon.protocol import Job, Outcome, Transport
from quichsd.netlink.constants import MessageType
from quichsd.quic.abi import IPPROTO_QUIC
from quichsd.tls.modes import Role

if TYPE_CHECKING:
    from quichsd.ktls.handshake import Installer
    from quichsd.quic.sockopt import QuicSocket

#: A job: the request, the worker's socket for it and how the worker installs kTLS
#: (its wiring, daemon/wiring.py) in, its Outcome out.
JobFunction = Callable[[Job, "QuicSocket", "Installer"], Awaitable[Outcome]]


class JobRefused(Exception):
    """The request cannot be attempted; ``errno`` is its DONE status."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = code

#: ACCEPT's MESSAGE_TYPE -> the role the daemon plays.
ROLES: Mapping[int, Role] = MappingProxyType(
    {MessageType.CLIENTHELLO: Role.CLIENT, MessageType.SERVERHELLO: Role.SERVER}
)
#: The socket's SO_PROTOCOL -> its transport.
TRANSPORTS: Mapping[int, Transport] = MappingProxyType(
    {IPPROTO_QUIC: Transport.QUIC, socket.IPPROTO_TCP: Transport.TCP}
)
#: The dispatch table: each job by its module and function.  Named, not imported: the
#: parent reads the table but never runs a job, so it does not load the TLS paths
#: (docs/startup.md); the fork server imports them for its workers.
JOBS: Mapping[tuple[Role, Transport], str] = MappingProxyType(
    {
        (Role.CLIENT, Transport.QUIC): "quichsd.daemon.jobs.quic:run_quic_job",
        (Role.SERVER, Transport.QUIC): "quichsd.daemon.jobs.quic:run_quic_job",
        (Role.CLIENT, Transport.TCP): "quichsd.daemon.jobs.tcp:run_tcp_job",
        (Role.SERVER, Transport.TCP): "quichsd.daemon.jobs.tcp:run_tcp_job",
    }
)
#: Every transport the table serves (HandshakeService's default).
SERVED: frozenset[Transport] = frozenset(transport for _, transport in JOBS)


def transport_of(fd: int) -> str:
    """The transport of ``fd`` by SO_PROTOCOL, or "protocol N" for one not ours.

    Borrows ``fd`` rather than a dup of it, and takes the protocol Python read
    (SO_PROTOCOL) to build the socket object: three syscalls fewer per request.
    """
    sock = socket.socket(fileno=fd)
    protocol = sock.proto
    sock.detach()  # the fd stays open: DONE names it
    kind = TRANSPORTS.get(protocol)
    return f"protocol {protocol}" if kind is None else kind.value


def role_of(message_type: int) -> Role:
    """The role ACCEPT's MESSAGE_TYPE asks for; JobRefused(EINVAL) for any other."""
    role = ROLES.get(message_type)
    if role is None:
        raise JobRefused(errno.EINVAL, f"message type {int(message_type)}")
    return role


def job_for(role: Role, transport: str, served: Collection[str] = SERVED) -> tuple[Transport, str]:
    """The job for (role, transport), by name; JobRefused(EOPNOTSUPP) for a transport
    the table does not hold for ``role`` or that is not in ``served``."""
    try:
        kind = Transport(transport)
    except ValueError:
        raise JobRefused(errno.EOPNOTSUPP, f"{transport} not served") from None
    job = JOBS.get((role, kind))
    if job is None or kind not in served:
        raise JobRefused(errno.EOPNOTSUPP, f"{kind} not served")
    return kind, job


@functools.cache  # four entries; a worker looks one up per job
def job_function(name: str) -> JobFunction:
    """The function a table entry names (in a worker, where it is already imported)."""
    module, _, function = name.partition(":")
    return cast("JobFunction", getattr(importlib.import_module(module), function))
