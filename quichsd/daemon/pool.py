# SPDX-License-Identifier: GPL-2.0-only
"""Pre-forked workers, seen from the parent.

Handing a request to a ready worker costs an SCM_RIGHTS send (10-30 µs);
forking a Python process per request, as tlshd forks, costs ~4 ms.  Workers
are forked by the fork server (daemon/forkserver.py), so they share the
modules it loaded; each job carries the configuration it needs (a reload
reaches workers with their next job).

The pool follows the load (docs/ARCHITECTURE.md, "Process model"): one worker
when idle, another forked as soon as every serving worker holds half its
``concurrency`` (so the new one is up before the others are full), up to
``size``; a worker beyond the first that has held nothing for ``idle_timeout``
seconds is retired.  An idle worker holds no job, so retiring it (closing its
channel) loses nothing.

The pool reports two things back: an outcome for a job, or the loss of jobs
whose worker died; the service turns both into exactly one DONE each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from quichsd.daemon.channel import ChannelBroken, receive_messages, send_message
from quichsd.daemon.forkserver import ForkServer, ForkServerGone
from quichsd.daemon.privilege import EXIT_UNCONFINED
from quichsd.daemon.protocol import (
    RETIRING,
    ChannelError,
    Job,
    Outcome,
    Reassembler,
    decode_log,
    decode_outcome,
    encode_job,
)

log = logging.getLogger("quichsd")
#: How long ``stop`` waits for the workers to leave before having them killed.
STOP_WAIT = 1.0

OutcomeCallback = Callable[[Outcome], None]
LossCallback = Callable[[list[int], str], None]
FatalCallback = Callable[[str], None]
#: Workers kept however idle the daemon is.
MIN_WORKERS = 1


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
    #: When it last held no job (loop time); None while it holds some.
    idle_since: float | None = None


class WorkerPool:
    """1 to ``size`` workers, each running up to ``concurrency`` handshakes at once."""

    def __init__(
        self,
        size: int,
        concurrency: int,
        recycle_after: int,
        on_outcome: OutcomeCallback,
        on_loss: LossCallback,
        *,
        forkserver: ForkServer,
        on_fatal: FatalCallback | None = None,
        fork_per_request: bool = False,
        idle_timeout: float = 30.0,
    ) -> None:
        """``forkserver`` forks the workers (started before anything they must not
        inherit exists).  ``fork_per_request`` is tlshd's model (a fresh process per
        request), kept so ``bench/daemon.py`` can measure what pre-forking saves.
        ``on_fatal`` hears why no worker can serve (one could not drop its privileges,
        or the fork server died).  ``size`` is the most workers; ``idle_timeout`` how long
        a worker beyond the first may hold nothing before it is retired."""
        self.forkserver = forkserver
        self._on_fatal = on_fatal
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
        #: Workers retired after ``idle_timeout`` without a job.
        self.shrunk = 0
        self.idle_timeout = idle_timeout
        self._stopping = False
        self._shrinker: asyncio.Task[None] | None = None
        #: Workers forked and not yet reported ended by the fork server.
        self._alive: set[int] = set()

    def start(self) -> None:
        self.forkserver.watch(self._on_exit, self._on_forkserver_gone)
        for _ in range(min(self.size, MIN_WORKERS)):
            try:
                self._spawn()
            except ForkServerGone as exc:  # it failed its start (an import?)
                self._on_forkserver_gone(self.forkserver.gone_reason(exc))
                return
        if not self.fork_per_request:
            self._shrinker = asyncio.get_running_loop().create_task(self._shrink_idle())

    def serving(self) -> list[Worker]:
        """Workers that take new jobs (not retiring, channel whole)."""
        return [w for w in self.workers if not (w.retiring or w.broken)]

    def capacity(self) -> int:
        if self.fork_per_request:
            return self.concurrency - sum(len(w.jobs) for w in self.workers)
        return sum(self.concurrency - len(w.jobs) for w in self.serving())

    def submit(self, job: Job, fd: int) -> Worker:
        """Sends ``job`` with ``fd`` to the least busy worker; the caller keeps its fd."""
        if self.fork_per_request:
            worker = self._spawn(recycle_after=1)
        else:
            candidates = [w for w in self.serving() if len(w.jobs) < self.concurrency]
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
        worker.idle_since = None
        worker.served += 1
        self._grow()
        return worker

    def worker_of(self, request_id: int) -> Worker | None:
        for worker in self.workers:
            if request_id in worker.jobs:
                return worker
        return None

    def kill(self, worker: Worker, reason: str) -> None:
        """Ends a worker now; its jobs are reported lost with ``reason``."""
        self.forkserver.kill(worker.pid)
        self._lost(worker, reason)

    async def stop(self) -> None:
        """Closes every channel (workers exit on EOF) and waits until the fork server has
        reaped them all (killing those still there after ``STOP_WAIT``)."""
        self._stopping = True
        if self._shrinker is not None:
            self._shrinker.cancel()
        loop = asyncio.get_running_loop()
        for worker in list(self.workers):
            loop.remove_reader(worker.channel.fileno())
            worker.channel.close()
        self.workers.clear()
        for attempt in range(2):
            deadline = loop.time() + STOP_WAIT
            # Without the fork server no end is reported: the workers leave on the EOF.
            while self._alive and self.forkserver.alive and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if attempt == 0:
                for pid in self._alive:
                    self.forkserver.kill(pid)
        self.forkserver.unwatch()

    # -- internals ---------------------------------------------------------------

    def _spawn(self, recycle_after: int | None = None) -> Worker:
        pid, channel = self.forkserver.spawn(recycle_after or self.recycle_after)
        worker = Worker(pid, channel, idle_since=asyncio.get_running_loop().time())
        self.workers.append(worker)
        self._alive.add(pid)
        self.spawned += 1
        asyncio.get_running_loop().add_reader(channel.fileno(), self._on_message, worker)
        return worker

    def _grow(self) -> None:
        """Forks one more worker if the serving ones are all half full (or none is left)
        and the pool is below ``size``; a failure here costs no job (they were sent)."""
        if self._stopping or self.fork_per_request:
            return
        serving = self.serving()
        if len(serving) >= self.size:
            return
        threshold = max(1, self.concurrency // 2)
        if len(serving) >= MIN_WORKERS and any(len(w.jobs) < threshold for w in serving):
            return
        try:
            self._spawn()
        except OSError as exc:  # ForkServerGone: its watcher reports the death
            log.error("cannot fork a worker: %s", exc)

    async def _shrink_idle(self) -> None:
        """Retires workers idle for ``idle_timeout``, the longest idle first, keeping one."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            now = loop.time()
            idle = sorted(
                (w for w in self.serving() if not w.jobs and w.idle_since is not None),
                key=lambda w: w.idle_since or 0.0,
            )
            for worker in idle:
                if len(self.serving()) <= MIN_WORKERS:
                    break
                if now - (worker.idle_since or now) < self.idle_timeout:
                    break
                log.debug("worker %d idle for %.0f s: retiring it", worker.pid, self.idle_timeout)
                worker.retiring = True
                self.shrunk += 1
                self._forget(worker)  # it holds no job: its channel's EOF ends it

    def _on_forkserver_gone(self, reason: str) -> None:
        """No worker can be forked any more, and the parent cannot fork a clean fork server
        (it holds the netlink socket, the journal...): stop, answering what is in flight,
        and let the service manager start the daemon again."""
        self._stopping = True
        self._alive.clear()
        if self._on_fatal is not None:
            self._on_fatal(reason)

    def _on_exit(self, pid: int, how: str, code: int) -> None:
        """The fork server reaped worker ``pid``; its jobs were answered on its channel's EOF."""
        self._alive.discard(pid)
        if code == EXIT_UNCONFINED:
            # Never serve unconfined, and do not fork one replacement after another.
            self._stopping = True
            # Its last words (why it could not) were written before it exited, but the
            # exit may be heard before the channel is read: read them first.
            for worker in [w for w in self.workers if w.pid == pid]:
                self._on_message(worker)
            if self._on_fatal is not None:
                self._on_fatal(f"worker {pid} could not drop its privileges")
            return
        log.log(logging.DEBUG if code == 0 else logging.WARNING, "worker %d %s", pid, how)

    def _on_message(self, worker: Worker) -> None:
        try:
            messages, gone = receive_messages(worker.channel, worker.assembler, [])
            for data, _fds in messages:
                if data == RETIRING:
                    if not worker.retiring:  # one replacement per worker, however often
                        worker.retiring = True
                        self._grow()
                elif (record := decode_log(data)) is not None:
                    _log_for(worker, *record)
                else:
                    outcome = decode_outcome(data)
                    worker.jobs.discard(outcome.request_id)
                    if not worker.jobs:
                        worker.idle_since = asyncio.get_running_loop().time()
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
        self._forget(worker)
        if lost:
            self._on_loss(lost, reason)
        self._grow()  # none left, or those left are busy

    def _forget(self, worker: Worker) -> None:
        self.workers.remove(worker)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(worker.channel.fileno())
        worker.channel.close()


def _log_for(worker: Worker, level: int, name: str, text: str) -> None:
    """A worker's record, logged here under its logger name and the worker's pid."""
    logger = logging.getLogger(name if name.startswith("quichsd") else "quichsd")
    if logger.isEnabledFor(level):
        record = logger.makeRecord(logger.name, level, "(worker)", 0, "%s", (text,), None)
        record.process = worker.pid
        logger.handle(record)
