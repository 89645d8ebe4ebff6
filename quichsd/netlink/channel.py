# SPDX-License-Identifier: GPL-2.0-only
"""Transports that move raw netlink message bytes between the agent and a kernel.

``Channel`` is what ``HandshakeFamily`` talks through; ``KernelChannel`` is a real
AF_NETLINK/NETLINK_GENERIC socket.  The userspace family model's channel (an AF_UNIX
connection carrying the same bytes) is the model's own, in
``quichsd.userspace.family_channel``: nothing here knows of it.
"""

from __future__ import annotations

import abc
import contextlib
import select
import socket
from types import TracebackType
from typing import Self

from .constants import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_DROP_MEMBERSHIP,
    NETLINK_EXT_ACK,
    NETLINK_GENERIC,
    SOL_NETLINK,
)

__all__ = ["RECV_SIZE", "Channel", "KernelChannel", "wait_fd"]

RECV_SIZE = 65536


def wait_fd(fd: int, events: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    ms = None if timeout is None else max(0, int(timeout * 1000))
    return bool(poller.poll(ms))


class Channel(abc.ABC):
    """A netlink endpoint: datagrams in, datagrams out, plus group membership.

    The socket is non-blocking; ``fileno()`` can go into a poll/asyncio loop.
    """

    port_id: int

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def send(self, data: bytes) -> None:
        """Send one datagram holding one or more netlink messages."""

    @abc.abstractmethod
    def recv(self, timeout: float | None = 0.0) -> bytes | None:
        """Return the next datagram, or ``None`` if none arrives within ``timeout``."""

    def pending(self) -> bool:
        """Datagrams buffered in userspace, which poll on ``fileno()`` cannot see."""
        return False

    @abc.abstractmethod
    def add_membership(self, group: int) -> None: ...

    @abc.abstractmethod
    def drop_membership(self, group: int) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class KernelChannel(Channel):
    """AF_NETLINK NETLINK_GENERIC socket bound to a kernel-assigned port."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC
        )
        try:
            self._sock.bind((0, 0))
            self.port_id = self._sock.getsockname()[0]
            # Capped acks with TLVs: errors carry the kernel's reason and offset.
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(SOL_NETLINK, opt, 1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        self._sock.sendto(data, (0, 0))

    def recv(self, timeout: float | None = 0.0) -> bytes | None:
        # The kernel answers a request inside its sendmsg: read before paying for a poll.
        try:
            return self._sock.recv(RECV_SIZE)
        except BlockingIOError:
            if timeout == 0 or not wait_fd(self.fileno(), select.POLLIN, timeout):
                return None
        try:
            return self._sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None

    def add_membership(self, group: int) -> None:
        self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def drop_membership(self, group: int) -> None:
        self._sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, group)

    def close(self) -> None:
        self._sock.close()
