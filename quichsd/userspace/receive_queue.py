# SPDX-License-Identifier: GPL-2.0-only
"""The socket's receive list and the descriptor that says it is non-empty.

Handshake data (INITIAL and HANDSHAKE levels) is queued ahead of stream
data, as in the kernel.  ``recvmsg`` takes one queued item (one reassembled
CRYPTO run, or one stream delivery) or the rest of a partially read one.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Item:
    """One entry of the receive list; ``level`` is None for stream data."""

    data: bytes
    level: int | None = None
    stream_id: int = -1
    fin: bool = False


@dataclass(frozen=True, slots=True)
class Piece:
    """What one read took from an item; ``complete`` when nothing of it is left."""

    data: bytes
    item: Item
    complete: bool


class ReceiveQueue:
    def __init__(self) -> None:
        self._handshake: deque[Item] = deque()
        self._streams: deque[Item] = deque()

    def __bool__(self) -> bool:
        return bool(self._handshake or self._streams)

    @property
    def has_stream_data(self) -> bool:
        return bool(self._streams)

    def push_handshake(self, level: int, data: bytes) -> None:
        self._handshake.append(Item(data, level))

    def push_stream(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._streams.append(Item(data, None, stream_id, fin))

    def take(self, bufsize: int) -> Piece | None:
        """The next read for recvmsg: handshake data first, then stream data."""
        queue = self._handshake or self._streams
        return self._take(queue, bufsize) if queue else None

    def take_stream(self) -> Item | None:
        """A whole stream item, for the model's own ``recv_stream``."""
        return self._streams.popleft() if self._streams else None

    @staticmethod
    def _take(queue: deque[Item], bufsize: int) -> Piece:
        item = queue[0]
        size = max(bufsize, 0)
        if len(item.data) <= size:
            queue.popleft()
            return Piece(item.data, item, True)
        head, item.data = item.data[:size], item.data[size:]
        return Piece(head, item, False)


class Readiness:
    """An eventfd that is readable exactly while ``recvmsg`` would not block."""

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False

    def fileno(self) -> int:
        """-1 once closed, like ``socket.socket.fileno``."""
        return self._fd

    def update(self, ready: bool) -> None:
        if self._fd < 0 or ready == self._signalled:
            return
        if ready:
            os.eventfd_write(self._fd, 1)
        else:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._fd)
        self._signalled = ready

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
