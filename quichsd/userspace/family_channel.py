# SPDX-License-Identifier: GPL-2.0-only
"""The family model's channel: ``HandshakeFamily`` over a connection to ``FamilyModel``.

``ModelChannel`` is the model's counterpart of ``quichsd.netlink.KernelChannel``: an
AF_UNIX SOCK_SEQPACKET connection to the userspace family model
(``quichsd.userspace.family``); it carries byte-identical netlink messages, one datagram
per netlink send, and emulates the two places where the kernel touches fd tables:

* ACCEPT reply: the kernel installs a new fd in the caller and writes its number into
  SOCKFD. The model sends the socket by SCM_RIGHTS (SOCKFD = -1 placeholder); the
  channel receives it (MSG_CMSG_CLOEXEC, like the kernel's O_CLOEXEC) and patches the
  SOCKFD attribute bytes to the received number before anyone parses the message.
* DONE: the kernel resolves SOCKFD in the sender's fd table. The channel attaches the
  fd named by SOCKFD via SCM_RIGHTS (if it is open) so the model can identify the
  socket by (st_dev, st_ino) as the kernel does by struct socket; an fd that is not
  open is not attached and the model answers EBADF.

Socket calls the AF_UNIX peer cannot see (setsockopt of group membership and of
NETLINK_CAP_ACK / NETLINK_EXT_ACK, learning the port id) travel as a control message
of type ``MODEL_CTL_TYPE`` (0x0e, below NLMSG_MIN_TYPE so a kernel would skip it):
fields op/level/optname/value (u32 each, see ``modelctlmsg``), flags
NLM_F_REQUEST|NLM_F_ACK; the model answers with an NLMSG_ERROR ack whose error is
0 or -errno and whose nlmsg_pid is the connection's port id, as a kernel ack is.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import os
import select
import socket
import struct
import time
from collections import deque

from pyroute2.netlink import nlmsg

from quichsd.netlink import HandshakeFamily
from quichsd.netlink.channel import RECV_SIZE, Channel, wait_fd
from quichsd.netlink.constants import (
    GENL_ID_CTRL,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_DROP_MEMBERSHIP,
    NETLINK_EXT_ACK,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    NLMSG_MIN_TYPE,
    SOL_NETLINK,
    AcceptAttr,
    Command,
    DoneAttr,
)
from quichsd.netlink.errors import ChannelClosed, MalformedMessage, ReplyTimeout
from quichsd.netlink.messages import (
    ACCEPT_NAMES,
    DONE_NAMES,
    Framed,
    acceptmsg,
    ack_class,
    decode,
    donemsg,
    encode,
    raw_attributes,
    split_datagram,
)

__all__ = [
    "MODEL_CTL_HELLO",
    "MODEL_CTL_SETSOCKOPT",
    "MODEL_CTL_TYPE",
    "ModelChannel",
    "modelctlmsg",
    "open_model_family",
]

MODEL_CTL_TYPE = 0x0E
MODEL_CTL_SETSOCKOPT = 1
MODEL_CTL_HELLO = 2

_CTL_TIMEOUT = 5.0


class modelctlmsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """Model-channel control request (type ``MODEL_CTL_TYPE``).

    Stands in for socket calls an AF_UNIX peer cannot make on a netlink socket:
    ``op`` 1 = setsockopt(level, optname, value), ``op`` 2 = hello (learn the port id).
    """

    fields = (("op", "I"), ("level", "I"), ("optname", "I"), ("value", "I"))


def open_model_family(
    address: str, *, join: bool = False, reply_timeout: float = 5.0
) -> HandshakeFamily:
    """``HandshakeFamily.open_kernel``'s counterpart: resolved (and joined) over a
    connection to the ``FamilyModel`` at ``address``."""
    return HandshakeFamily.over(ModelChannel(address), join=join, reply_timeout=reply_timeout)


class ModelChannel(Channel):
    """SEQPACKET connection to ``quichsd.userspace.family.FamilyModel`` (see module doc)."""

    def __init__(self, address: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self._backlog: deque[bytes] = deque()
        self._ctl_seq = itertools.count(0x7F000000)
        self.port_id = 0
        try:
            self._sock.connect(address)
            self._sock.setblocking(False)
            self.port_id = self._control(MODEL_CTL_HELLO, 0, 0, 0)
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                self.setsockopt(SOL_NETLINK, opt, 1)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> bool:
        """Datagrams set aside while a control request waited for its ack."""
        return bool(self._backlog)

    # -- sending ---------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        fd = self._done_fd(data)
        deadline = time.monotonic() + _CTL_TIMEOUT
        while True:
            try:
                if fd is None:
                    self._sock.send(data)
                else:
                    socket.send_fds(self._sock, [data], [fd])
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not wait_fd(self.fileno(), select.POLLOUT, left):
                    raise ReplyTimeout("send to family model", _CTL_TIMEOUT) from None
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ChannelClosed("family model closed the connection") from exc

    @staticmethod
    def _done_fd(data: bytes) -> int | None:
        """The open fd named by SOCKFD of the (first) DONE in ``data``, if any."""
        try:
            messages = split_datagram(data)
        except MalformedMessage:
            return None
        for framed in messages:
            if not _is_family_message(framed) or framed.data[NLMSG_HDRLEN] != Command.DONE:
                continue
            try:
                attrs, _ = raw_attributes(decode(framed.data, donemsg, framed.header), DONE_NAMES)
            except MalformedMessage:
                return None
            for attr in attrs:
                if attr.number == DoneAttr.SOCKFD and len(attr.payload) == 4:
                    fd: int = struct.unpack("=i", attr.payload)[0]
                    if fd < 0:
                        return None
                    try:
                        os.fstat(fd)
                    except OSError:
                        return None
                    return fd
            return None
        return None

    # -- receiving -------------------------------------------------------------------
    def recv(self, timeout: float | None = 0.0) -> bytes | None:
        if self._backlog:
            return self._backlog.popleft()
        return self._recv_socket(timeout)

    def _recv_socket(self, timeout: float | None) -> bytes | None:
        if timeout != 0 and not wait_fd(self.fileno(), select.POLLIN, timeout):
            return None
        try:
            data, ancdata, _flags, _addr = self._sock.recvmsg(
                RECV_SIZE, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return None
        except ConnectionResetError as exc:
            raise ChannelClosed("family model closed the connection") from exc
        if not data:
            raise ChannelClosed("family model closed the connection")
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
                fds.extend(arr)
        return _install_fds(data, fds) if fds else data

    # -- control requests ------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: int) -> None:
        """setsockopt on the emulated netlink socket; raises OSError like the syscall."""
        self._control(MODEL_CTL_SETSOCKOPT, level, optname, value)

    def add_membership(self, group: int) -> None:
        self.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def drop_membership(self, group: int) -> None:
        self.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, group)

    def _control(self, op: int, level: int, optname: int, value: int) -> int:
        """Send a control request and wait for its ack; returns the ack's nlmsg_pid."""
        seq = next(self._ctl_seq)
        self.send(
            encode(
                modelctlmsg,
                msg_type=MODEL_CTL_TYPE,
                flags=NLM_F_REQUEST | NLM_F_ACK,
                seq=seq,
                pid=self.port_id,
                op=op,
                level=level,
                optname=optname,
                value=value,
            )
        )
        deadline = time.monotonic() + _CTL_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            data = self._recv_socket(left)
            if data is None:
                break
            for framed in split_datagram(data):
                hdr = framed.header
                if hdr.type == NLMSG_ERROR and hdr.seq == seq:
                    ack = decode(framed.data, ack_class(hdr.flags), hdr)
                    if ack["error"]:
                        code = -ack["error"]
                        raise OSError(code, os.strerror(code))
                    return hdr.pid
            self._backlog.append(data)
        raise ReplyTimeout("family model control request", _CTL_TIMEOUT)

    def close(self) -> None:
        self._sock.close()


def _is_family_message(framed: Framed) -> bool:
    """A genl message of a family other than nlctrl (the model serves only handshake)."""
    kind = framed.header.type
    return kind >= NLMSG_MIN_TYPE and kind != GENL_ID_CTRL and len(framed.data) > NLMSG_HDRLEN


def _install_fds(data: bytes, fds: list[int]) -> bytes:
    """Write received fd numbers into the SOCKFD placeholders of each ACCEPT reply.

    Each ACCEPT reply of the datagram owns the next fd, as the kernel installs one
    per reply, and every SOCKFD of that reply holding the placeholder -1 is set to
    it.  A reply whose SOCKFD names something else (a model playing a faulty
    kernel) keeps its fd installed all the same, unnamed, as a kernel's would be:
    the agent must find it.  An fd left over (no reply to own it) is closed so it
    cannot leak.
    """
    buf = bytearray(data)
    remaining = list(fds)
    base = 0
    try:
        messages = split_datagram(data)
    except MalformedMessage:
        messages = []
    for framed in messages:
        raw = framed.data
        if remaining and _is_family_message(framed) and raw[NLMSG_HDRLEN] == Command.ACCEPT:
            fd = remaining.pop(0)
            try:
                attrs, _ = raw_attributes(decode(raw, acceptmsg, framed.header), ACCEPT_NAMES)
            except MalformedMessage:
                attrs = []
            for attr in attrs:
                if attr.number == AcceptAttr.SOCKFD and attr.payload == _PLACEHOLDER:
                    struct.pack_into("=i", buf, base + attr.offset + 4, fd)
        base += (len(raw) + 3) & ~3
    for fd in remaining:
        with contextlib.suppress(OSError):
            os.close(fd)
    return bytes(buf)


#: SOCKFD as the model sends it: "the fd that came with this reply".
_PLACEHOLDER = struct.pack("=i", -1)
