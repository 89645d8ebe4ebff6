# SPDX-License-Identifier: GPL-2.0-only
"""The 0-RTT anti-replay store (quichsd/tls/replay_store.py) and GnuTLS's view of it.

Bounded (a full bucket refuses), entries expire, one verdict across forked
processes, a stuck lock holder makes the store unreachable (refuse) and a dead
one does not, and ``AntiReplay`` keys it by the ClientHello's identifier, not by
GnuTLS's per-process recording time.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
from collections.abc import Iterator

import pytest

from quichsd.tls import AntiReplay
from quichsd.tls.replay_store import WAYS, ReplayStore, Verdict

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[ReplayStore]:
    s = ReplayStore(4 * WAYS, clock=clock)
    yield s
    s.close()


def test_fresh_then_replay(store: ReplayStore) -> None:
    assert store.add(b"hello-1", NOW + 10) is Verdict.FRESH
    assert store.add(b"hello-2", NOW + 10) is Verdict.FRESH
    assert store.add(b"hello-1", NOW + 10) is Verdict.REPLAY
    assert store.live() == 2


def test_full_refuses_until_entries_expire(clock: Clock) -> None:
    one_bucket = ReplayStore(WAYS, clock=clock)
    try:
        assert one_bucket.capacity == WAYS
        for i in range(WAYS):
            assert one_bucket.add(b"id-%d" % i, NOW + 10) is Verdict.FRESH
        assert one_bucket.add(b"one more", NOW + 10) is Verdict.FULL
        assert one_bucket.add(b"id-0", NOW + 10) is Verdict.REPLAY  # still known while full
        clock.now = NOW + 10  # every entry's expiry: all slots free again
        assert one_bucket.add(b"one more", NOW + 20) is Verdict.FRESH
        assert one_bucket.live() == 1
    finally:
        one_bucket.close()


def test_expiry(store: ReplayStore, clock: Clock) -> None:
    assert store.add(b"hello", NOW + 10) is Verdict.FRESH
    clock.now = NOW + 9.5
    assert store.add(b"hello", NOW + 20) is Verdict.REPLAY
    clock.now = NOW + 10.0
    assert store.add(b"hello", NOW + 20) is Verdict.FRESH  # expired: taken anew
    clock.now = NOW + 19.9
    assert store.add(b"hello", NOW + 30) is Verdict.REPLAY


def _fork(body: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = body()  # type: ignore[operator]
        finally:
            os._exit(code)
    return pid


def test_one_verdict_across_processes() -> None:
    """Four forked processes add the same 500 identifiers (and 100 of their own) at once:
    each shared identifier is fresh in exactly one of them."""
    store = ReplayStore(8192, shared=True)
    shared = [b"shared-%d" % i for i in range(500)]
    read_end, write_end = os.pipe()
    pids = []
    try:
        for n in range(4):

            def child(n: int = n) -> int:
                os.close(read_end)
                order = shared if n % 2 else list(reversed(shared))
                fresh = sum(store.add(i, 2e9) is Verdict.FRESH for i in order)
                own = sum(
                    store.add(b"own-%d-%d" % (n, i), 2e9) is Verdict.FRESH for i in range(100)
                )
                os.write(write_end, struct.pack("<II", fresh, own))
                return 0

            pids.append(_fork(child))
        os.close(write_end)
        write_end = -1
        counts = []
        with os.fdopen(read_end, "rb") as results:
            read_end = -1
            for _ in pids:
                counts.append(struct.unpack("<II", results.read(8)))
    finally:
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    assert sum(fresh for fresh, _ in counts) == len(shared)
    assert [own for _, own in counts] == [100] * 4
    assert store.live() == len(shared) + 400
    store.close()


def test_stuck_lock_holder_makes_it_unreachable_and_a_dead_one_does_not() -> None:
    """A process stopped while holding the lock: the store answers UNREACHABLE within its
    lock timeout (0-RTT refused, nothing waits longer); once it is killed the kernel drops
    its lock and the store answers again."""
    store = ReplayStore(64, shared=True, lock_timeout=0.05)
    ready_r, ready_w = os.pipe()

    def holder() -> int:
        fcntl.lockf(store.fileno(), fcntl.LOCK_EX)
        os.write(ready_w, b"x")
        signal.pause()
        return 0

    pid = _fork(holder)
    try:
        assert os.read(ready_r, 1) == b"x"
        assert store.add(b"hello", 2e9) is Verdict.UNREACHABLE
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert store.add(b"hello", 2e9) is Verdict.FRESH
    store.close()
    assert store.add(b"hello", 2e9) is Verdict.UNREACHABLE  # closed: refuse, do not raise


def test_anti_replay_keys_by_identifier_not_recording_time() -> None:
    """GnuTLS prefixes its key with the recording start, which each forked worker moves on
    by itself; the same ClientHello (identifier) must still be caught."""
    guard = AntiReplay(capacity=64)
    binder = bytes(range(32))
    first = struct.pack(">QI", 1_800_000_000, 5) + binder
    later = struct.pack(">QI", 1_800_000_020, 7) + binder  # another process's recording time
    assert guard.add(first, 2e9)
    assert not guard.add(later, 2e9)
    assert guard.refused == 1
    assert guard.refusals[Verdict.REPLAY] == 1
    assert guard.add(struct.pack(">QI", 1_800_000_000, 5) + bytes(32), 2e9)  # another binder


def test_anti_replay_refuses_when_full() -> None:
    guard = AntiReplay(store=ReplayStore(WAYS))
    prefix = bytes(12)
    assert all(guard.add(prefix + b"binder-%02d" % i, 2e9) for i in range(WAYS))
    assert not guard.add(prefix + b"binder-xx", 2e9)
    assert guard.refusals[Verdict.FULL] == 1


def test_fds_held() -> None:
    """A shared store holds one fd (its lock's, which workers keep); a private one none."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    private = ReplayStore(64)
    assert private.fileno() == -1 and open_fds() == before
    shared = ReplayStore(64, shared=True)
    assert shared.fileno() >= 0 and open_fds() == before + 1
    shared.close()
    private.close()
    assert open_fds() == before
