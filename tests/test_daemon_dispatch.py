# SPDX-License-Identifier: GPL-2.0-only
"""The dispatch table (daemon/dispatch.py): which job serves (role, transport), and
the errno for every request it does not hold (docs/errno.md)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from quichsd.daemon import dispatch
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.jobs.quic import run_quic_job
from quichsd.daemon.jobs.tcp import run_tcp_job
from quichsd.daemon.protocol import Transport
from quichsd.netlink.constants import MessageType
from quichsd.quic.abi import IPPROTO_QUIC
from quichsd.tls import Role


def test_every_role_and_transport_has_its_transports_job() -> None:
    jobs = {Transport.QUIC: run_quic_job, Transport.TCP: run_tcp_job}
    assert {key: dispatch.job_function(name) for key, name in dispatch.JOBS.items()} == {
        (role, transport): jobs[transport] for role in Role for transport in Transport
    }
    assert frozenset({"quic", "tcp"}) == dispatch.SERVED


@pytest.mark.parametrize(
    ("message_type", "role"),
    [(MessageType.CLIENTHELLO, Role.CLIENT), (MessageType.SERVERHELLO, Role.SERVER)],
)
def test_the_message_type_names_the_role(message_type: int, role: Role) -> None:
    assert dispatch.role_of(message_type) is role


@pytest.mark.parametrize("message_type", [MessageType.UNSPEC, 3, 7])
def test_any_other_message_type_is_einval(message_type: int) -> None:
    with pytest.raises(JobRefused) as refused:
        dispatch.role_of(message_type)
    assert refused.value.errno == errno.EINVAL
    assert str(refused.value) == f"message type {int(message_type)}"


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("transport", list(Transport))
def test_a_served_transport_gets_its_job(role: Role, transport: Transport) -> None:
    kind, job = dispatch.job_for(role, str(transport.value))
    assert kind is transport and job is dispatch.JOBS[role, transport]


@pytest.mark.parametrize(
    ("transport", "served", "reason"),
    [
        ("protocol 17", dispatch.SERVED, "protocol 17 not served"),
        ("sctp", dispatch.SERVED, "sctp not served"),
        ("tcp", frozenset({"quic"}), "tcp not served"),
        ("quic", frozenset(), "quic not served"),
    ],
)
def test_a_transport_not_served_is_eopnotsupp(
    transport: str, served: frozenset[str], reason: str
) -> None:
    with pytest.raises(JobRefused) as refused:
        dispatch.job_for(Role.CLIENT, transport, served)
    assert (refused.value.errno, str(refused.value)) == (errno.EOPNOTSUPP, reason)


def _tcp() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def _udp() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@pytest.mark.parametrize(("make", "expected"), [(_tcp, "tcp"), (_udp, "protocol 17")])
def test_so_protocol_names_the_transport_and_leaves_the_fd_open(
    make: Callable[[], socket.socket], expected: str
) -> None:
    with make() as sock:
        assert dispatch.transport_of(sock.fileno()) == expected
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)  # still open


def _quic_socket() -> socket.socket | None:
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    except OSError:
        return None


@pytest.mark.skipif(_quic_socket() is None, reason="this kernel has no QUIC module")
def test_a_kernel_quic_socket_is_quic() -> None:
    sock = _quic_socket()
    assert sock is not None
    with sock:
        assert dispatch.transport_of(sock.fileno()) == Transport.QUIC
