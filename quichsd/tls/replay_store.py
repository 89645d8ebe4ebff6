# SPDX-License-Identifier: GPL-2.0-only
"""The 0-RTT anti-replay table: bounded, and shared by every process forked after it.

RFC 8446 §8 wants each 0-RTT ClientHello accepted at most once by the whole
server.  The daemon's workers are forked processes, and any of them can open
any ticket (the ticket key comes from the kernel socket), so the table lives in
memory they all map: an anonymous ``MAP_SHARED`` mapping made by the process
that creates the store (the daemon's parent, before it forks a worker).
Workers forked later inherit the mapping.  Exclusion across processes is an
``fcntl`` record lock on a ``memfd`` they inherit too: the kernel drops the
lock when its holder dies, so a killed worker cannot wedge the others.  See
docs/ARCHITECTURE.md.

Layout: ``buckets`` x ``WAYS`` slots of (16-byte keyed BLAKE2b digest of the
ClientHello's identifier, expiry in Unix seconds).  A slot whose expiry has
passed is free.  The answer is always one of ``Verdict``; everything but
``FRESH`` refuses 0-RTT (the handshake goes on as 1-RTT):

* ``REPLAY``: the same identifier is live in the table;
* ``FULL``: its bucket holds ``WAYS`` live entries;
* ``UNREACHABLE``: the lock stayed taken for ``lock_timeout`` (its holder is
  stopped), or the table is closed.

The digest is keyed with a random salt made at creation, so a peer cannot
choose ClientHellos that crowd one bucket.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable

#: Slots per bucket; a bucket is one read of 192 bytes.
WAYS = 8
_SLOT = struct.Struct("<16sQ")
_BUCKET = struct.Struct("<" + "16sQ" * WAYS)
#: How long an add waits for the lock before answering UNREACHABLE (seconds).
DEFAULT_LOCK_TIMEOUT = 0.05


class Verdict(enum.Enum):
    FRESH = "fresh"
    REPLAY = "replay"
    FULL = "full"
    UNREACHABLE = "unreachable"


class ReplayStore:
    """``capacity`` entries (rounded up to whole buckets).

    ``shared``: in a memfd with a lock that works across processes, for a process that
    forks workers after making it (the daemon); otherwise in anonymous memory guarded
    for the threads of one process, holding no fd (the API and the manual CLI).
    """

    def __init__(
        self,
        capacity: int = 65_536,
        *,
        shared: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("an anti-replay store needs room for at least one entry")
        self.buckets = -(-capacity // WAYS)
        self.capacity = self.buckets * WAYS
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._salt = os.urandom(16)
        # Anonymous and MAP_SHARED (mmap's default): processes forked later see the same
        # pages.  The memfd exists only to carry the lock; an mmap of it would hold a
        # second fd (Python's mmap keeps a dup).
        self._map: mmap.mmap | None = mmap.mmap(-1, self.buckets * _BUCKET.size)
        self._fd = os.memfd_create("quichsd-anti-replay-lock", os.MFD_CLOEXEC) if shared else -1
        self._finalizer = weakref.finalize(self, _release, self._map, self._fd)
        # fcntl locks belong to a process, not a thread: threads of one process queue here.
        self._threads = threading.Lock()

    def fileno(self) -> int:
        """The fd a forked process must keep open to take the lock (-1: not shared)."""
        return self._fd

    def add(self, ident: bytes, expires: float) -> Verdict:
        """Records ``ident`` until ``expires`` (Unix time) unless it is live already."""
        digest = hashlib.blake2b(ident, digest_size=16, key=self._salt).digest()
        index = int.from_bytes(digest[:8], "little") % self.buckets
        offset = index * _BUCKET.size
        with self._threads:
            if self._map is None or not self._lock():
                return Verdict.UNREACHABLE
            try:
                return self._add_locked(self._map, offset, digest, expires)
            finally:
                if self._fd >= 0:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _add_locked(self, table: mmap.mmap, offset: int, digest: bytes, expires: float) -> Verdict:
        now = self._clock()
        fields = _BUCKET.unpack_from(table, offset)
        free = -1
        for way in range(WAYS):
            slot_digest, slot_expiry = fields[2 * way], fields[2 * way + 1]
            if slot_expiry > now:
                if slot_digest == digest:
                    return Verdict.REPLAY
            elif free < 0:
                free = way
        if free < 0:
            return Verdict.FULL
        # Digest and expiry in one write; a holder killed mid-write leaves a slot that is
        # either free or refuses one identifier, never one that lets a replay through.
        _SLOT.pack_into(table, offset + free * _SLOT.size, digest, math.ceil(expires))
        return Verdict.FRESH

    def _lock(self) -> bool:
        if self._fd < 0:
            return True  # one process: the thread lock is all there is to take
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def live(self) -> int:
        """Entries not yet expired (for tests and status)."""
        if self._map is None:
            return 0
        now = self._clock()
        slots = len(self._map) // _SLOT.size
        return sum(1 for i in range(slots) if _SLOT.unpack_from(self._map, i * _SLOT.size)[1] > now)

    def close(self) -> None:
        self._map = None
        self._finalizer()


def _release(table: mmap.mmap, fd: int) -> None:
    table.close()
    if fd >= 0:
        os.close(fd)


__all__ = ["WAYS", "ReplayStore", "Verdict"]
