# SPDX-License-Identifier: GPL-2.0-only
"""End to end over the userspace family model: HandshakeFamily as the agent,
FamilyModel as the kernel and its consumers (docs/kernel-abi.md §ACCEPT, §TIMEOUTS and §PROBE)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Iterator

import pytest

from quichsd.netlink import messages as m
from quichsd.netlink.constants import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    REMOTE_AUTH_MUTUAL,
    AuthMode,
    Command,
    MessageType,
)
from quichsd.netlink.errors import FamilyUnavailable, NetlinkCommandError
from quichsd.netlink.family import HandshakeFamily, KernelCapabilities
from quichsd.netlink.requests import AcceptedRequest, X509Pair
from quichsd.userspace.family import FamilyModel, RequestCancelled, RequestHandle, State
from quichsd.userspace.family_channel import ModelChannel, open_model_family

WAIT = 2.0
A = m.ACCEPT_NAMES
D = m.DONE_NAMES


@pytest.fixture
def model() -> Iterator[FamilyModel]:
    with FamilyModel(family_id=0x2A, group_base=0x21) as fm:
        yield fm


@pytest.fixture
def open_family(model: FamilyModel) -> Iterator[Callable[..., HandshakeFamily]]:
    opened: list[HandshakeFamily] = []

    def factory(join: bool = False) -> HandshakeFamily:
        fam = open_model_family(model.address, join=join, reply_timeout=WAIT)
        opened.append(fam)
        return fam

    yield factory
    for fam in opened:
        fam.close()


@pytest.fixture
def sockets() -> Iterator[Callable[[], socket.socket]]:
    made: list[socket.socket] = []

    def factory() -> socket.socket:
        a, b = socket.socketpair()
        made.extend((a, b))
        return a

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def handle(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> RequestHandle:
    """One default request, submitted while a listener is joined (else ESRCH): the
    common start of the cancel and DONE tests."""
    open_family(join=True)
    return model.submit(sockets())


def accepted(agent: HandshakeFamily) -> AcceptedRequest:
    """``agent.accept()`` where a request must be pending: ``None`` fails the test."""
    req = agent.accept()
    assert req is not None
    return req


def wait_ready(fam: HandshakeFamily) -> list[int]:
    import select

    select.select([fam.fileno()], [], [], WAIT)
    return [n.handler_class for n in fam.recv_ready()]


# -- the full sequence -----------------------------------------------------------------


def test_resolve_join_submit_accept_done(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    listener = open_family(join=True)
    assert listener.family_id == 0x2A and listener.version == 1
    assert listener.groups == {"none": 0x21, "tlshd": 0x22}
    consumer_sock = sockets()
    handle = model.submit(
        consumer_sock, MessageType.CLIENTHELLO, AuthMode.X509, timeout_ms=5000,
        cert=0x11223344, privkey=0x55667788, peername="host1.example", keyring=0x2F6B3A11,
    )  # fmt: skip
    assert wait_ready(listener) == [1]

    agent = open_family()
    req = accepted(agent)
    try:
        assert req.sockfd not in (-1, consumer_sock.fileno())
        assert os.fstat(req.sockfd).st_ino == os.fstat(consumer_sock.fileno()).st_ino
        assert os.get_inheritable(req.sockfd) is False  # O_CLOEXEC like the kernel
        agent_view = socket.socket(fileno=os.dup(req.sockfd))
        with agent_view:
            assert agent_view.getsockname() == consumer_sock.getsockname()
        assert req.message_type is MessageType.CLIENTHELLO
        assert req.auth_mode is AuthMode.X509
        assert (req.timeout_ms, req.peername, req.keyring) == (5000, "host1.example", 0x2F6B3A11)
        assert req.certificates == [X509Pair(0x11223344, 0x55667788)]
        assert handle.state is State.ACCEPTED and model.unanswered() == [handle]

        agent.done(req.sockfd, 0, [0x0A1B2C3D, 0x0A1B2C3E])
    finally:
        req.close()
    completion = handle.wait(WAIT)
    assert completion == (0, [0x0A1B2C3D, 0x0A1B2C3E])
    assert completion.peerid == 0x0A1B2C3D and completion.kernel_status == 0
    stats = model.stats
    assert (stats.readies, stats.accepts, stats.dones, stats.dones_ignored) == (1, 1, 1, 0)
    assert model.unanswered() == []


def test_psk_request_and_failure_status(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    open_family(join=True)
    handle = model.submit(
        sockets(), MessageType.SERVERHELLO, AuthMode.PSK, peer_identities=[5, 6, 7]
    )
    agent = open_family()
    req = accepted(agent)
    assert req.peer_identities == [5, 6, 7] and req.timeout_ms is None and req.peername is None
    agent.done(req.sockfd, errno.EACCES, [REMOTE_AUTH_MUTUAL])  # dropped: status != 0
    req.close()
    assert handle.wait(WAIT) == (errno.EACCES, [])
    assert handle.wait(WAIT).kernel_status == -errno.EACCES


def test_accept_with_nothing_pending_returns_none(
    open_family: Callable[..., HandshakeFamily],
) -> None:
    assert open_family().accept() is None


def test_every_accept_gets_one_done(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    listener = open_family(join=True)
    second_listener = open_family(join=True)
    handles = [model.submit(sockets()) for _ in range(3)]
    assert wait_ready(listener) == [1, 1, 1]  # one READY per request, to every member
    assert wait_ready(second_listener) == [1, 1, 1]
    agent = open_family()
    while (req := agent.accept()) is not None:
        agent.done(req.sockfd, 0)
        req.close()
    assert [h.wait(WAIT).status for h in handles] == [0, 0, 0]
    assert model.accepts == model.dones == 3 and model.dones_ignored == 0


def test_ready_buffered_while_accepting_on_the_same_socket(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    fam = open_family(join=True)
    model.submit(sockets())
    assert wait_ready(fam) == [1]
    model.submit(sockets())
    model.submit(sockets())  # two READYs now queued ahead of the ACCEPT reply
    req = accepted(fam)
    assert fam.pending_ready()  # kept in userspace: poll on fileno() cannot see them
    assert [n.handler_class for n in fam.recv_ready()] == [1, 1]
    assert not fam.pending_ready()
    fam.done(req.sockfd, 0)
    req.close()


def test_wait_ready_asyncio(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    fam = open_family(join=True)

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, model.submit, sockets())
        notices = await asyncio.wait_for(fam.wait_ready(), WAIT)
        return [n.handler_class for n in notices]

    assert asyncio.run(scenario()) == [1]


# -- consumer-side refusals ----------------------------------------------------------------


def test_submit_without_listener_is_esrch(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    open_family()  # connected and resolved, but not joined
    with pytest.raises(OSError) as info:
        model.submit(sockets())
    assert info.value.errno == errno.ESRCH
    assert model.requests == []


def test_submit_pending_limit_is_eagain(
    open_family: Callable[..., HandshakeFamily], sockets: Callable[[], socket.socket]
) -> None:
    with FamilyModel(pending_max=2) as fm:
        fam = open_model_family(fm.address, join=True)
        with fam:
            fm.submit(sockets())
            fm.submit(sockets())
            with pytest.raises(OSError) as info:
                fm.submit(sockets())
            assert info.value.errno == errno.EAGAIN


def test_submit_twice_on_one_socket_is_ebusy(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    open_family(join=True)
    sock = sockets()
    handle = model.submit(sock)
    assert handle.cancel() is True
    with pytest.raises(OSError) as info:  # the entry lives until the socket is destroyed
        model.submit(sock)
    assert info.value.errno == errno.EBUSY
    handle.release()
    model.submit(sock)


# -- cancellation ------------------------------------------------------------------------------


def test_cancel_pending_request(
    open_family: Callable[..., HandshakeFamily], handle: RequestHandle
) -> None:
    assert handle.cancel() is True
    assert open_family().accept() is None  # removed from the pending queue
    with pytest.raises(RequestCancelled):
        handle.wait(WAIT)
    assert handle.cancel() is False


def test_done_after_cancel_is_accepted_but_ignored(
    model: FamilyModel, open_family: Callable[..., HandshakeFamily], handle: RequestHandle
) -> None:
    agent = open_family()
    req = accepted(agent)
    assert handle.cancel() is True
    agent.done(req.sockfd, 0)  # ACKed with 0, no completion
    req.close()
    with pytest.raises(RequestCancelled):
        handle.wait(WAIT)
    assert (model.dones, model.dones_ignored) == (0, 1)


def test_second_done_ignored_and_cancel_after_done_false(
    model: FamilyModel, open_family: Callable[..., HandshakeFamily], handle: RequestHandle
) -> None:
    agent = open_family()
    req = accepted(agent)
    agent.done(req.sockfd, 0, [1])
    agent.done(req.sockfd, errno.EIO, [2])
    req.close()
    assert handle.wait(WAIT) == (0, [1])
    assert (model.dones, model.dones_ignored) == (1, 1)
    assert handle.cancel() is False


def test_wait_times_out_without_done(handle: RequestHandle) -> None:
    with pytest.raises(TimeoutError):
        handle.wait(0.05)


# -- DONE refusals -------------------------------------------------------------------------------


def test_done_errors(
    model: FamilyModel,
    open_family: Callable[..., HandshakeFamily],
    sockets: Callable[[], socket.socket],
) -> None:
    agent = open_family()
    unrelated = sockets()
    with pytest.raises(NetlinkCommandError) as info:
        agent.done(unrelated.fileno(), 0)  # a socket without a request
    assert info.value.errno == errno.EBUSY and info.value.command == "DONE"
    with pytest.raises(NetlinkCommandError) as info:
        agent.done(-1, 0)
    assert info.value.errno == errno.EBADF
    r, w = os.pipe()
    try:
        with pytest.raises(NetlinkCommandError) as info:
            agent.done(r, 0)
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError):
        agent.done(unrelated.fileno(), -13)


def test_done_without_ack_reports_late_error(
    open_family: Callable[..., HandshakeFamily], sockets: Callable[[], socket.socket]
) -> None:
    agent = open_family()
    agent.done(sockets().fileno(), 0, ack=False)  # like tlshd: nobody reads the answer
    assert agent.accept() is None  # the stray NLMSG_ERROR is seen on the next request
    assert [e.errno for e in agent.late_errors] == [errno.EBUSY]
    assert agent.late_errors[0].command == "DONE"


def test_done_without_status_completes_with_eio(model: FamilyModel, handle: RequestHandle) -> None:
    with ModelChannel(model.address) as chan:
        agent = HandshakeFamily(chan, reply_timeout=WAIT)
        agent.resolve()
        req = accepted(agent)
        chan.send(
            m.encode(
                m.donemsg,
                msg_type=model.family_id,
                flags=NLM_F_REQUEST,
                seq=1,
                pid=chan.port_id,
                attrs=[(D[2], req.sockfd)],
                cmd=Command.DONE,
                version=0,
            )
        )
        assert handle.wait(WAIT) == (errno.EIO, [])
        req.close()


# -- capability probe --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote_auth", "tag", "expected"),
    [
        (True, False, KernelCapabilities(remote_peerids=True, session_tags=False)),
        (True, True, KernelCapabilities(remote_peerids=True, session_tags=True)),
        (False, False, KernelCapabilities(remote_peerids=False, session_tags=False)),
    ],
)
def test_probe(remote_auth: bool, tag: bool, expected: KernelCapabilities) -> None:
    model = FamilyModel(supports_remote_auth=remote_auth, supports_tag=tag)
    with model as fm, open_model_family(fm.address, join=True) as fam:
        assert fam.probe_optional_attributes() == expected
        errors = fm.stats.errors
        assert fm.dones == 0 and errors.get("EBADF", 0) + errors.get("EINVAL", 0) == 2


def test_done_honours_probe_result(sockets: Callable[[], socket.socket]) -> None:
    with FamilyModel(supports_tag=True) as fm:
        listener = open_model_family(fm.address, join=True)
        agent = open_model_family(fm.address)
        with listener, agent:
            handle = fm.submit(sockets(), MessageType.SERVERHELLO, AuthMode.X509)
            req = accepted(agent)
            agent.done(req.sockfd, 0, [9], tags=["mu-chap"])  # not probed: tag dropped
            assert handle.wait(WAIT) == (0, [9])
            req.close()
            assert agent.probe_optional_attributes().session_tags is True
    with FamilyModel() as fm, open_model_family(fm.address, join=True) as fam:
        fam.capabilities = KernelCapabilities(remote_peerids=True, session_tags=True)
        handle = fm.submit(sockets())
        req = accepted(fam)
        with pytest.raises(NetlinkCommandError) as info:  # the kernel rejects TAG
            fam.done(req.sockfd, 0, tags=["x"])
        assert info.value.errno == errno.EINVAL
        assert info.value.attribute == "HANDSHAKE_A_DONE_TAG"
        assert info.value.message == "Unknown attribute type"
        req.close()


# -- family availability and permissions ------------------------------------------------------


def test_family_unavailable() -> None:
    with FamilyModel(family_present=False) as fm:
        with pytest.raises(FamilyUnavailable) as info:
            open_model_family(fm.address)
        assert info.value.errno == errno.ENOENT
        with ModelChannel(fm.address) as chan:
            fam = HandshakeFamily(chan)
            fam.family_id = 0x1D  # a stale id: messages to it are ENOENT too
            with pytest.raises(NetlinkCommandError) as cmd_info:
                fam.done(0, 0)
            assert cmd_info.value.errno == errno.ENOENT


def test_accept_without_admin_is_eperm(
    model: FamilyModel, open_family: Callable[..., HandshakeFamily]
) -> None:
    model.admin = False
    with pytest.raises(NetlinkCommandError) as info:
        open_family().accept()
    assert info.value.errno == errno.EPERM and info.value.command == "ACCEPT"


# -- strict validation ----------------------------------------------------------------------------


def _raw(model: FamilyModel, chan: ModelChannel, cmd: int, attrs: list[tuple[str, object]],
         flags: int = NLM_F_REQUEST | NLM_F_ACK, cls: type = m.acceptmsg) -> bytes:  # fmt: skip
    return m.encode(
        cls, msg_type=model.family_id, flags=flags, seq=77, pid=chan.port_id,
        attrs=attrs, cmd=cmd, version=0,
    )  # fmt: skip


def _answer(chan: ModelChannel) -> tuple[int, str | None, int | None]:
    data = chan.recv(WAIT)
    assert data is not None
    hdr = m.read_header(data)
    assert hdr.type == 2 and hdr.seq == 77
    ack = m.decode(data, m.ack_class(hdr.flags))
    return -ack["error"], ack.get_attr("NLMSGERR_ATTR_MSG"), ack.get_attr("NLMSGERR_ATTR_OFFS")


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def test_strict_validation(model: FamilyModel) -> None:
    with ModelChannel(model.address) as chan:

        def check(data: bytes, code: int, msg: str | None = None) -> None:
            chan.send(data)
            got = _answer(chan)
            assert got[0] == code, (data.hex(), got)
            if msg is not None:
                assert got[1] == msg

        accept = _raw(model, chan, Command.ACCEPT, [(A[2], 1)])
        check(accept, errno.EAGAIN)  # valid, nothing pending
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 3)]), errno.EINVAL, "integer out of range")
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 2)]), errno.EAGAIN)  # policy max 2
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 1), (A[1], 5)]), errno.EINVAL,
              "Unsupported attribute")  # fmt: skip
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 1), (A[3], 1)]), errno.EINVAL,
              "Unknown attribute type")  # fmt: skip
        check(_raw(model, chan, Command.ACCEPT, []), errno.EINVAL)  # HANDLER_CLASS required
        check(_patched(accept, 20, b"\x06\x00"), errno.EINVAL, "Attribute has invalid length")
        check(_patched(accept, 22, b"\x02\x80"), errno.EINVAL, "NLA_F_NESTED not expected")
        check(_raw(model, chan, Command.READY, [(A[2], 1)]), errno.EOPNOTSUPP)
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 1)],
                   flags=NLM_F_REQUEST | NLM_F_ACK | 0x300), errno.EOPNOTSUPP)  # fmt: skip
        trailing = accept[:-4] + b"\x01\x00\x00\x00\x00\x00\x00\x00"
        trailing = _patched(trailing, 0, (len(trailing) - 1).to_bytes(4, "little"))
        check(trailing[:-1], errno.EINVAL, "bytes leftover after parsing attributes")

        def done(attrs: list[tuple[str, object]]) -> bytes:
            return _raw(model, chan, Command.DONE, attrs, cls=m.donemsg)

        check(done([(D[1], 0), (D[2], -1)]), errno.EBADF)
        check(done([(D[1], 0)]), errno.EINVAL)  # SOCKFD required
        check(done([(D[1], 0), (D[2], -1), (D[4], "t")]), errno.EINVAL, "Unknown attribute type")
        check(done([(D[1], 4096), (D[2], -1)]), errno.EINVAL, "integer out of range")
        check(done([(D[1], 4095), (D[2], -1)]), errno.EBADF)

        # Without NLM_F_REQUEST the message is ignored; only NLM_F_ACK gets an (empty) ACK.
        check(_raw(model, chan, Command.ACCEPT, [(A[2], 9)], flags=NLM_F_ACK), 0)
        chan.send(_raw(model, chan, Command.ACCEPT, [(A[2], 9)], flags=0))
        assert chan.recv(0.1) is None
        # With NLM_F_REQUEST alone, success is silent and errors are always reported.
        chan.send(_raw(model, chan, Command.ACCEPT, [(A[2], 1)], flags=NLM_F_REQUEST))
        assert _answer(chan)[0] == errno.EAGAIN


def test_error_names_offending_attribute(
    model: FamilyModel, open_family: Callable[..., HandshakeFamily]
) -> None:
    fam = open_family()
    with pytest.raises(NetlinkCommandError) as info:
        fam.accept(handler_class=7)
    err = info.value
    assert err.errno == errno.EINVAL and err.command == "ACCEPT"
    assert err.attribute == "HANDSHAKE_A_ACCEPT_HANDLER_CLASS"
    assert "HANDLER_CLASS" in str(err) and "EINVAL" in str(err)
