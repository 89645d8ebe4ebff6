# SPDX-License-Identifier: GPL-2.0-only
"""A worker that cannot confine itself says why on its channel and exits; the fork
server's report of the exit can reach the parent before the channel is read.  The
parent must still log the worker's reason before it gives up (the daemon's stderr is
all a sysadmin has to go on)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from quichsd.daemon.channel import send_message
from quichsd.daemon.forkserver import ForkServer
from quichsd.daemon.pool import WorkerPool
from quichsd.daemon.privilege import EXIT_UNCONFINED
from quichsd.daemon.protocol import encode_log

REASON = "a worker cannot drop its privileges: seccomp_init: libseccomp found no filter"


class _ForkServerWithoutProcesses:
    """Hands out channels without forking; the test plays the worker's end."""

    def __init__(self) -> None:
        self.worker_ends: list[socket.socket] = []
        self.on_exit = None
        self.alive = True

    def spawn(self, recycle_after: int) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.worker_ends.append(theirs)
        return 4242 + len(self.worker_ends), ours

    def watch(self, on_exit: object, on_gone: object = None) -> None:
        self.on_exit = on_exit

    def unwatch(self) -> None:
        self.on_exit = None

    def kill(self, pid: int) -> None:
        pass


def test_the_reason_is_logged_before_the_fatal_exit(caplog: pytest.LogCaptureFixture) -> None:
    logged_before_fatal: list[list[str]] = []

    async def main() -> None:
        forkserver = _ForkServerWithoutProcesses()
        pool = WorkerPool(
            1,
            4,
            0,
            lambda outcome: None,
            lambda ids, reason: None,
            forkserver=forkserver,  # type: ignore[arg-type]
            on_fatal=lambda why: logged_before_fatal.append(
                [r.getMessage() for r in caplog.records]
            ),
        )
        pool.start()
        (worker,) = pool.workers
        worker_end = forkserver.worker_ends[0]
        send_message(worker_end, encode_log(logging.ERROR, "quichsd.daemon.worker", REASON))
        worker_end.close()
        # The exit is heard first: no loop iteration has read the channel yet.
        pool._on_exit(worker.pid, "exited with 3", EXIT_UNCONFINED)

    with caplog.at_level(logging.INFO, logger="quichsd"):
        asyncio.run(main())
    assert len(logged_before_fatal) == 1, "the daemon gives up once"
    assert REASON in logged_before_fatal[0]


def test_an_exit_read_with_its_own_spawn_reaches_the_pool_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real ForkServer and pool, the test playing the fork server's process: the
    worker's ``spawned`` and its ``exited`` arrive in one read (a worker that fails its
    confinement dies in milliseconds, a busy parent reads late).  The pool must have the
    worker, and so read its reason, before it hears of the exit."""
    logged_before_fatal: list[list[str]] = []

    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        forkserver = ForkServer(pid=0, control=ours)
        parent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        send_message(worker_end, encode_log(logging.ERROR, "quichsd.daemon.worker", REASON))
        worker_end.close()
        pid = 4321
        send_message(theirs, json.dumps({"spawned": pid}).encode(), [parent_end.fileno()])
        parent_end.close()
        send_message(
            theirs, json.dumps({"exited": pid, "how": "exited", "code": EXIT_UNCONFINED}).encode()
        )
        pool = WorkerPool(
            1,
            4,
            0,
            lambda outcome: None,
            lambda ids, reason: None,
            forkserver=forkserver,
            on_fatal=lambda why: logged_before_fatal.append(
                [r.getMessage() for r in caplog.records]
            ),
        )
        pool.start()
        for _ in range(5):
            await asyncio.sleep(0)
        forkserver.unwatch()
        ours.close()
        theirs.close()

    with caplog.at_level(logging.INFO, logger="quichsd"):
        asyncio.run(main())
    assert len(logged_before_fatal) == 1, "the daemon gives up once"
    assert REASON in logged_before_fatal[0]
