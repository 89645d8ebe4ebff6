# SPDX-License-Identifier: GPL-2.0-only
"""The parent/worker channel's socket side: framed messages (``protocol.frames``) over
a non-blocking SOCK_SEQPACKET, fds by SCM_RIGHTS with a message's first frame.

Both ends use these two functions, so neither can truncate a message: a sender
waits (bounded) for room for every frame, and a receiver sees a whole message or
a ``ChannelError``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Sequence

from quichsd.daemon.protocol import FRAME_SIZE, ChannelError, Reassembler, frames

#: How long a sender waits for room in the channel (the other end reads at once).
SEND_WAIT = 2.0


class ChannelBroken(ChannelError, OSError):
    """Part of a message went out and the rest could not: the peer holds half a
    message, so this channel is done for (the parent kills that worker)."""


def send_message(
    sock: socket.socket, message: bytes, fds: Sequence[int] = (), wait: float = SEND_WAIT
) -> None:
    """Every frame of ``message``, ``fds`` with the first.

    Raises ``MessageTooLarge`` before sending anything, ``OSError`` (a timeout, the
    peer gone) if the first frame could not go, ``ChannelBroken`` if a later one
    could not.
    """
    deadline = time.monotonic() + wait
    for index, frame in enumerate(frames(message)):
        try:
            _send_frame(sock, frame, fds if index == 0 else (), deadline)
        except OSError as exc:
            if index == 0:
                raise
            raise ChannelBroken(exc.errno, f"channel broken mid-message: {exc}") from exc


def _send_frame(sock: socket.socket, frame: bytes, fds: Sequence[int], deadline: float) -> None:
    while True:
        try:
            if fds:
                socket.send_fds(sock, [frame], list(fds))
            else:
                sock.send(frame)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            poller = select.poll()  # not select(): fd numbers may exceed FD_SETSIZE
            poller.register(sock, select.POLLOUT)
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError("the channel stayed full") from None


def receive_messages(
    sock: socket.socket, assembler: Reassembler, pending_fds: list[int], max_fds: int = 0
) -> tuple[list[tuple[bytes, list[int]]], bool]:
    """The whole messages readable now, each with its fds; and whether the peer is gone.

    ``pending_fds`` holds the fds of a message whose frames are still arriving.
    Raises ``ChannelError`` (after closing any fds it received) for a truncated
    frame, fds on a frame other than a message's first, or a bad frame.
    """
    messages: list[tuple[bytes, list[int]]] = []
    while True:
        try:
            if max_fds:
                data, fds, flags, _addr = socket.recv_fds(sock, FRAME_SIZE, max_fds)
            else:
                data, _anc, flags, _addr = sock.recvmsg(FRAME_SIZE)
                fds = []
        except BlockingIOError:
            return messages, False
        except OSError:
            return messages, True
        if not data and not fds:
            return messages, True
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ChannelError("a truncated frame (or more fds than one per message)")
            if fds and assembler.partial:
                raise ChannelError("fds on a frame in the middle of a message")
            message = assembler.feed(data)
        except ChannelError:
            close_all(fds)
            close_all(pending_fds)
            raise
        pending_fds.extend(fds)
        if message is not None:
            messages.append((message, list(pending_fds)))
            pending_fds.clear()


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
