# SPDX-License-Identifier: GPL-2.0-only
"""Nothing stranded, nothing leaked: the real daemon against a family model that plays a
faulty kernel (issue 11).  Same rig and fixtures as ``test_daemon_e2e``."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_daemon_e2e import (  # noqa: F401  (fixtures)
    ALPN,
    SERVER_NAME,
    WAIT,
    PeerServer,
    SilentPeer,
    aio,
    done_within,
    make_rig,
    peer_server,
    pki,
    psk_identity,
    silent_peer,
)

from quichsd.netlink.constants import AcceptAttr
from quichsd.userspace import ModelQuicListener
from tests.support.family_faults import PLACEHOLDER, AcceptFault
from tests.support.rig import DaemonRig


def _fd_table(pid: int) -> dict[int, str]:
    table = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            table[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return table


def _settled_fd_table(pid: int) -> dict[int, str]:
    """The table once two reads 0.2 s apart agree (start-up opens and closes a few)."""
    table = _fd_table(pid)
    for _ in range(50):
        time.sleep(0.2)
        table, previous = _fd_table(pid), table
        if table == previous:
            break
    return table


def _wait_fd_table(pid: int, expected: dict[int, str]) -> dict[int, str]:
    """The table once it matches ``expected`` (the parent closes an fd just after its
    DONE, which the consumer may see first), or as it is after ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while (table := _fd_table(pid)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return table


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit in /proc/PID/limits")


# == item 1: a failed ACCEPT strands nothing =======================================================


def test_failed_accept_strands_no_queued_request(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
    peer_server: PeerServer,  # noqa: F811
) -> None:
    """Four requests queue; the daemon's first ACCEPT fails with EMFILE (the kernel then
    completes that request with EIO and sends no further READY): the three others are
    still served, without a new READY."""
    rig = make_rig(workers=1)
    rig.family.inject_accept_fault(AcceptFault(error=errno.EMFILE))
    os.kill(rig.pid, signal.SIGSTOP)  # so all four are queued before its first ACCEPT
    try:
        requests = [
            rig.client_request(peer_server.address, "x509", peername=SERVER_NAME) for _ in range(4)
        ]
    finally:
        os.kill(rig.pid, signal.SIGCONT)
    statuses = sorted(done_within(request, WAIT)[0] for request in requests)
    assert statuses == [0, 0, 0, errno.EIO], rig.log()
    assert rig.family.stats.readies == 4
    assert "ACCEPT failed" in rig.log()
    rig.check_invariants()


def test_open_files_soft_limit_raised_to_the_hard_one(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard - 1, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        rig = make_rig()  # inherits the lowered soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _nofile(rig.pid) == (hard, hard)


# == item 2: the parent acts only on the fd a reply installed ======================================

#: Replies that bring an fd: each must be answered DONE(EINVAL) on that fd.
INSTALLED = {
    "SOCKFD names stderr": AcceptFault(sockfd=(2,)),
    "SOCKFD names stdin": AcceptFault(sockfd=(0,)),
    "SOCKFD twice, both the installed fd": AcceptFault(sockfd=(PLACEHOLDER, PLACEHOLDER)),
    "SOCKFD twice, the installed fd and stderr": AcceptFault(sockfd=(PLACEHOLDER, 2)),
    "SOCKFD twice, stderr and the installed fd": AcceptFault(sockfd=(2, PLACEHOLDER)),
    "SOCKFD missing": AcceptFault(sockfd=()),
    "SOCKFD negative": AcceptFault(sockfd=(-7,)),
    "MESSAGE_TYPE missing": AcceptFault(omit=frozenset({AcceptAttr.MESSAGE_TYPE})),
    "AUTH_MODE missing": AcceptFault(omit=frozenset({AcceptAttr.AUTH_MODE})),
}
#: Replies without an fd (the model completes their requests with EIO): nothing to answer.
NOT_INSTALLED = {
    "stderr named, no fd": AcceptFault(sockfd=(2,), install=False),
    "placeholder, no fd": AcceptFault(install=False),
}


def test_malformed_replies_touch_only_the_installed_fd(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
    peer_server: PeerServer,  # noqa: F811
) -> None:
    rig = make_rig(workers=1)
    before = _settled_fd_table(rig.pid)
    probe_errors = rig.family.stats.errors  # the start-up probe's EBADF and EINVAL
    statuses = {}
    for name, fault in {**INSTALLED, **NOT_INSTALLED}.items():
        rig.family.inject_accept_fault(fault)
        request = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
        statuses[name] = done_within(request, WAIT)[0]
    expected = dict.fromkeys(INSTALLED, errno.EINVAL) | dict.fromkeys(NOT_INSTALLED, errno.EIO)
    assert statuses == expected, rig.log()
    # Every DONE named a request's socket: none on stderr/stdin, none refused by the kernel.
    assert rig.family.stats.errors == probe_errors
    # The parent's own fds are intact and nothing leaked: stderr still carries the log.
    control = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(control, WAIT)[0] == 0
    rig.wait_for_log(r"request \d+: .* succeeded")
    assert _wait_fd_table(rig.pid, before) == before
    assert rig.log().count("unusable ACCEPT reply") == len(INSTALLED) + len(NOT_INSTALLED)
    rig.check_invariants()


@pytest.mark.parametrize("name", ["SOCKFD names stderr", "SOCKFD twice, both the installed fd"])
def test_one_malformed_reply(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
    peer_server: PeerServer,  # noqa: F811
    name: str,
) -> None:
    """The two the fault campaign found: stderr closed (log lost), and a leaked fd."""
    rig = make_rig(workers=1)
    before = _settled_fd_table(rig.pid)
    rig.family.inject_accept_fault(INSTALLED[name])
    request = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(request, WAIT)[0] == errno.EINVAL
    assert _wait_fd_table(rig.pid, before) == before
    rig.check_invariants()


# == item 5: the worker channel carries any message whole ==========================================


def test_a_job_over_64_kib_reaches_its_worker_whole(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
    peer_server: PeerServer,  # noqa: F811
) -> None:
    """A peer name of control characters, escaped in the job's JSON (6 bytes each): a
    ~72 KiB job, and an outcome whose reason names it.  Both used to be cut at 64 KiB:
    the worker died on the truncated job and the request ended EIO."""
    rig = make_rig(workers=1)
    workers = rig.worker_pids()
    name = "\x01" * 12_000
    request = rig.client_request(
        peer_server.address, "x509", peername=name, server_name=SERVER_NAME
    )
    status, _, waited = done_within(request, WAIT)
    assert status == errno.EACCES, rig.log()[-2000:]  # the server is not called that
    assert waited < 5
    assert rig.worker_pids() == workers  # no worker died or was killed
    rig.check_invariants()


# == item 7: a request's keys are reachable only from its own handshake ==========================


def test_an_in_flight_requests_psk_is_not_anothers(
    make_rig: Callable[..., DaemonRig],  # noqa: F811
    silent_peer: SilentPeer,  # noqa: F811
) -> None:
    """Request A (a PSK client whose key lives in the keyring its ACCEPT names) stays in
    flight against a silent peer.  A server request B that names no keyring, offered
    A's identity, must not find A's key; a server request that names a keyring holding
    that identity finds it.  (A's keyring used to be linked into the session keyring
    every worker shares while A ran.)"""
    rig = make_rig(workers=1)
    identity, key = psk_identity(), secrets.token_bytes(32)
    ring_a, keys_a = rig.new_keyring(keys={identity: key})
    first = rig.client_request(
        silent_peer.address,
        "psk",
        peer_identities=[keys_a[identity]],
        keyring=ring_a,
        timeout_ms=6000,
    )
    deadline = time.monotonic() + WAIT
    while not silent_peer.received:  # A has read its key and sent its ClientHello
        assert time.monotonic() < deadline, rig.log()
        time.sleep(0.02)
    with ModelQuicListener(alpn=[ALPN]) as listener:
        # The peer offering A's identity is the daemon's own client role, with the key
        # in a keyring of its own (the server searches neither).
        ring_c, keys_c = rig.new_keyring(keys={identity: key})
        client = rig.client_request(
            listener.address, "psk", peer_identities=[keys_c[identity]], keyring=ring_c
        )
        second = rig.server_request(listener, "psk")
        assert done_within(second, WAIT)[0] == errno.EKEYREJECTED, rig.log()[-3000:]
        rig.finish(second)
        done_within(client, WAIT)
        # The control: a server request naming a keyring with the identity finds it.
        ring_b, _ = rig.new_keyring(keys={identity: key})
        client = rig.client_request(
            listener.address, "psk", peer_identities=[keys_c[identity]], keyring=ring_c
        )
        server = rig.server_request(listener, "psk", keyring=ring_b)
        assert done_within(server, WAIT)[0] == 0, rig.log()[-3000:]
        assert done_within(client, WAIT)[0] == 0
    assert not first.handle.done  # A was in flight all along
    assert done_within(first, WAIT)[0] == errno.ETIMEDOUT
    rig.check_invariants()
