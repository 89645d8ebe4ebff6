"""Pre-forked workers, seen from the parent.

Handing a request to a ready worker costs an SCM_RIGHTS send (10-30 µs);
forking a Python process per request, as tlshd forks, costs ~4 ms.  Workers
are forked from the parent when the pool starts and whenever one retires or
dies, so they share its loaded modules and configuration.

The pool reports two things back: an outcome for a job, or the loss of jobs
whose worker died; the service turns both into exactly one DONE each.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from quichsd.daemon.channel import ChannelBroken, receive_messages, send_message
from quichsd.daemon.protocol import (
    RETIRING,
    ChannelError,
    Job,
    Outcome,
    Reassembler,
    decode_outcome,
    encode_job,
)
from quichsd.daemon.worker import worker_main
from quichsd.quic.driver import share_anti_replay

#: Imported before forking so that every worker inherits it (see ``WorkerPool.start``).
TCP_JOB_MODULE = "quichsd.ktls.job"

OutcomeCallback = Callable[[Outcome], None]
LossCallback = Callable[[list[int], str], None]


@dataclass(eq=False)
class Worker:
    pid: int
    channel: socket.socket
    jobs: set[int] = field(default_factory=set)
    retiring: bool = False
    served: int = 0
    #: Its channel broke mid-message: it gets no more jobs and is killed.
    broken: bool = False
    assembler: Reassembler = field(default_factory=Reassembler)


class WorkerPool:
    """``size`` workers, each running up to ``concurrency`` handshakes at once."""

    def __init__(
        self,
        size: int,
        concurrency: int,
        recycle_after: int,
        on_outcome: OutcomeCallback,
        on_loss: LossCallback,
        *,
        fork_per_request: bool = False,
    ) -> None:
        """``fork_per_request`` is tlshd's model (a fresh process per request), kept so
        ``bench/daemon.py`` can measure what pre-forking saves."""
        self.fork_per_request = fork_per_request
        self.size = 0 if fork_per_request else size
        self.concurrency = concurrency
        self.recycle_after = recycle_after
        self._on_outcome = on_outcome
        self._on_loss = on_loss
        self.workers: list[Worker] = []
        self.spawned = 0
        self.deaths = 0
        #: Workers that retired after their share of jobs (worker_recycle).
        self.recycled = 0
        self._stopping = False
        #: fds besides its channel that a forked worker keeps (the anti-replay store's).
        self._inherited: set[int] = set()

    def start(self) -> None:
        # Workers import the TCP path on their first TCP job otherwise: ~0.3 s under QEMU
        # TCG, paid by each worker's first request (a kernel consumer waiting on it).
        importlib.import_module(TCP_JOB_MODULE)
        # One 0-RTT anti-replay store for the whole daemon, made before any fork: every
        # worker, replacements included, inherits its shared memory and its lock's fd.
        self._inherited = {share_anti_replay().store.fileno()}
        for _ in range(self.size):
            self._spawn()

    def capacity(self) -> int:
        if self.fork_per_request:
            return self.concurrency - sum(len(w.jobs) for w in self.workers)
        return sum(
            self.concurrency - len(w.jobs) for w in self.workers if not (w.retiring or w.broken)
        )

    def submit(self, job: Job, fd: int) -> Worker:
        """Sends ``job`` with ``fd`` to the least busy worker; the caller keeps its fd."""
        if self.fork_per_request:
            worker = self._spawn(recycle_after=1)
        else:
            candidates = [
                w
                for w in self.workers
                if not (w.retiring or w.broken) and len(w.jobs) < self.concurrency
            ]
            if not candidates:
                raise RuntimeError("no worker capacity (the service checks capacity() first)")
            worker = min(candidates, key=lambda w: len(w.jobs))
        try:
            send_message(worker.channel, encode_job(job), [fd])
        except ChannelBroken:
            # Half a job went out: nothing more can be said on this channel.
            worker.broken = True
            asyncio.get_running_loop().call_soon(self.kill, worker, "worker channel broken")
            raise
        worker.jobs.add(job.request_id)
        worker.served += 1
        return worker

    def worker_of(self, request_id: int) -> Worker | None:
        for worker in self.workers:
            if request_id in worker.jobs:
                return worker
        return None

    def kill(self, worker: Worker, reason: str) -> None:
        """Ends a worker now; its jobs are reported lost with ``reason``."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        self._lost(worker, reason)

    async def stop(self) -> None:
        """Closes every channel (workers exit on EOF), then reaps them."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        for worker in list(self.workers):
            loop.remove_reader(worker.channel.fileno())
            worker.channel.close()
        for worker in list(self.workers):
            for _ in range(50):
                pid, _status = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
        self.workers.clear()

    # -- internals ---------------------------------------------------------------

    def _spawn(self, recycle_after: int | None = None) -> Worker:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # child
            lowest = 3
            for keep in sorted(fd for fd in {child_end.fileno(), *self._inherited} if fd >= 3):
                os.closerange(lowest, keep)
                lowest = keep + 1
            os.closerange(lowest, _max_fd())
            worker_main(child_end, recycle_after or self.recycle_after)
        child_end.close()
        parent_end.setblocking(False)
        worker = Worker(pid, parent_end)
        self.workers.append(worker)
        self.spawned += 1
        asyncio.get_running_loop().add_reader(parent_end.fileno(), self._on_message, worker)
        return worker

    def _on_message(self, worker: Worker) -> None:
        try:
            messages, gone = receive_messages(worker.channel, worker.assembler, [])
            for data, _fds in messages:
                if data == RETIRING:
                    if not worker.retiring:  # one replacement per worker, however often
                        worker.retiring = True
                        if not self._stopping and not self.fork_per_request:
                            self._spawn()
                else:
                    outcome = decode_outcome(data)
                    worker.jobs.discard(outcome.request_id)
                    self._on_outcome(outcome)
                if worker.retiring and not worker.jobs:
                    self._retire(worker)
                    return
        except ChannelError as exc:
            self.kill(worker, f"worker broke the channel protocol: {exc}")
            return
        if gone:
            self._lost(worker, "worker exited")

    def _retire(self, worker: Worker) -> None:
        self.recycled += 1
        self._forget(worker)

    def _lost(self, worker: Worker, reason: str) -> None:
        if worker not in self.workers:
            return
        lost = sorted(worker.jobs)
        worker.jobs.clear()
        if not worker.retiring:
            self.deaths += 1
        else:
            self.recycled += 1
        was_retiring = worker.retiring
        self._forget(worker)
        if lost:
            self._on_loss(lost, reason)
        if not self._stopping and not was_retiring:
            self._spawn()

    def _forget(self, worker: Worker) -> None:
        self.workers.remove(worker)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(worker.channel.fileno())
        worker.channel.close()
        _reap(worker.pid)


def _reap(pid: int) -> None:
    """Collects an exited worker without waiting for one still running."""
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if not done:
            asyncio.get_running_loop().call_later(0.5, _reap, pid)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024
