# SPDX-License-Identifier: GPL-2.0-only
"""Transport tests: the real AF_NETLINK channel on this kernel, and the model channel's
SCM_RIGHTS emulation of the kernel's fd installation (ACCEPT) and lookup (DONE)."""

from __future__ import annotations

import errno
import os
import resource
import socket
import struct
from collections.abc import Iterator

import pytest

from quichsd.netlink import messages as m
from quichsd.netlink.channel import KernelChannel
from quichsd.netlink.constants import NLM_F_ACK, NLM_F_REQUEST, AcceptAttr, Command
from quichsd.netlink.errors import FamilyUnavailable
from quichsd.netlink.family import HandshakeFamily
from quichsd.userspace.family import FamilyModel
from quichsd.userspace.family_channel import ModelChannel, _install_fds

A = m.ACCEPT_NAMES
D = m.DONE_NAMES


def _getfamily(port: int, name: str, seq: int) -> bytes:
    return m.encode(
        m.ctrlmsg, msg_type=0x10, flags=NLM_F_REQUEST, seq=seq, pid=port,
        attrs=[("CTRL_ATTR_FAMILY_NAME", name)], cmd=3, version=1,
    )  # fmt: skip


@pytest.fixture
def model() -> Iterator[FamilyModel]:
    with FamilyModel() as fm:
        yield fm


# -- real kernel ------------------------------------------------------------------------


def test_kernel_channel_resolves_nlctrl() -> None:
    with KernelChannel() as chan:
        assert chan.port_id > 0
        chan.send(_getfamily(chan.port_id, "nlctrl", 7))
        data = chan.recv(2.0)
        assert data is not None
        ((hdr, raw),) = m.split_datagram(data)
        reply = m.decode(raw, m.ctrlmsg, hdr)
        assert reply.get_attr("CTRL_ATTR_FAMILY_ID") == 0x10
        assert hdr == m.read_header(raw)
        assert hdr.seq == 7
        assert chan.recv(0) is None  # non-blocking, nothing more queued


def _kernel_has_handshake_family() -> bool:
    """Asks the kernel directly: NLMSG_ERROR (type 2) means no family of that name."""
    with KernelChannel() as chan:
        chan.send(_getfamily(chan.port_id, "handshake", 1))
        data = chan.recv(2.0)
    assert data is not None
    return m.read_header(data).type != 2


@pytest.mark.skipif(_kernel_has_handshake_family(), reason="this kernel has the handshake family")
def test_kernel_without_handshake_family_is_unavailable() -> None:
    with pytest.raises(FamilyUnavailable) as info:
        HandshakeFamily.open_kernel()
    assert info.value.errno == errno.ENOENT


def test_model_enoent_ack_matches_kernel_bytes() -> None:
    """Same request, same options: the model's NLMSG_ERROR is the kernel's, byte for byte
    apart from the port id."""
    with KernelChannel() as kchan:
        kchan.send(_getfamily(kchan.port_id, "no-such-family", 9))
        kernel = kchan.recv(2.0)
        kport = kchan.port_id
    with FamilyModel(family_present=False) as fm, ModelChannel(fm.address) as mchan:
        mchan.send(_getfamily(mchan.port_id, "no-such-family", 9))
        model = mchan.recv(2.0)
        mport = mchan.port_id
    assert kernel is not None and model is not None
    assert kernel.replace(struct.pack("=I", kport), b"PORT") == model.replace(
        struct.pack("=I", mport), b"PORT"
    )


# -- model channel fd handling -----------------------------------------------------------


def test_install_fds_patches_sockfd_and_closes_extras() -> None:
    reply = m.encode(
        m.acceptmsg, msg_type=0x1D, flags=0, seq=1, pid=1,
        attrs=[(A[AcceptAttr.SOCKFD], -1), (A[3], 1), (A[5], 1)], cmd=Command.ACCEPT, version=1,
    )  # fmt: skip
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        patched = _install_fds(reply, [r1, r2])
        assert struct.unpack_from("=i", patched, 24)[0] == r1
        assert patched[:24] == reply[:24] and patched[28:] == reply[28:]
        with pytest.raises(OSError):
            os.fstat(r2)  # no second ACCEPT reply to carry it: closed, not leaked
    finally:
        for fd in (r1, w1, w2):
            os.close(fd)


def test_done_attaches_named_fd(model: FamilyModel) -> None:
    def done(fd: int) -> bytes:
        return m.encode(
            m.donemsg, msg_type=0x1D, flags=NLM_F_REQUEST, seq=1, pid=1,
            attrs=[(D[1], 0), (D[2], fd)], cmd=Command.DONE, version=0,
        )  # fmt: skip

    a, b = socket.socketpair()
    with a, b:
        assert ModelChannel._done_fd(done(a.fileno())) == a.fileno()
        assert ModelChannel._done_fd(done(-1)) is None
        # Not open (the kernel says EBADF): no fd at the open-files limit can exist,
        # whereas a just-closed number may be reused at once by the model's thread.
        never_open = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert ModelChannel._done_fd(done(never_open)) is None
        ctrl = _getfamily(0, "handshake", 1)  # nlctrl cmd 3 is not a DONE
        assert ModelChannel._done_fd(ctrl) is None


def test_model_channel_membership_control(model: FamilyModel) -> None:
    with ModelChannel(model.address) as chan:
        assert chan.port_id in range(4000, 5000)
        chan.add_membership(model.groups["tlshd"])
        assert model.listeners() == [chan.port_id]
        with pytest.raises(OSError) as info:
            chan.add_membership(0)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(OSError) as info:
            chan.setsockopt(1, 2, 3)
        assert info.value.errno == errno.ENOPROTOOPT
        chan.drop_membership(model.groups["tlshd"])
        assert model.listeners() == []


def test_model_channel_ack_tlvs_name_attribute(model: FamilyModel) -> None:
    with ModelChannel(model.address) as chan:
        bad = m.encode(
            m.acceptmsg, msg_type=model.family_id, flags=NLM_F_REQUEST | NLM_F_ACK, seq=5,
            pid=chan.port_id, attrs=[(A[2], 1), (A[1], 3)], cmd=Command.ACCEPT, version=0,
        )  # fmt: skip
        chan.send(bad)
        data = chan.recv(2.0)
    assert data is not None
    hdr = m.read_header(data)
    ack = m.decode(data, m.ack_class(hdr.flags))
    assert ack["error"] == -errno.EINVAL
    assert ack.get_attr("NLMSGERR_ATTR_MSG") == "Unsupported attribute"
    assert m.attribute_at(bad, ack.get_attr("NLMSGERR_ATTR_OFFS")) == A[AcceptAttr.SOCKFD]
