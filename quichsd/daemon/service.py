# SPDX-License-Identifier: GPL-2.0-only
"""The daemon parent: READY → ACCEPT → a worker → DONE, and the invariant.

Every request this process ACCEPTs gets exactly one DONE.  All endings pass
through ``_complete()``, which sends DONE and closes our fd the first time it
is called for a request and ignores every later call: a worker's outcome, the
loss of a worker, the parent's own deadline, a refusal before dispatch, and
shutdown.  The fd stays open until then, because the kernel finds the
request by the fd named in DONE.

Back-pressure: a READY is a credit, not an order.  The parent ACCEPTs only
while the pool has room, so excess requests wait in the kernel's queue
(which bounds them) instead of in this process.  After an ACCEPT fails the
credits say nothing any more, so the parent ACCEPTs, with a back-off, until
the kernel answers that nothing is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from quichsd.daemon import journal
from quichsd.daemon.config import DaemonConfig
from quichsd.daemon.dispatch import SERVED, JobRefused, job_for, role_of
from quichsd.daemon.dispatch import transport_of as transport_of  # the default probe
from quichsd.daemon.forkserver import ForkServer
from quichsd.daemon.metrics import Metrics
from quichsd.daemon.pool import WorkerPool
from quichsd.daemon.protocol import Job, MessageTooLarge, Outcome, x509_files_for
from quichsd.netlink import AcceptedRequest, HandlerClass, MalformedRequest, ReadyNotice
from quichsd.tls import AuthMode

log = logging.getLogger("quichsd")

#: Past its deadline a handshake's worker gets this long to answer before it is killed.
OVERRUN_GRACE = 2.0
#: Back-off after a failed ACCEPT: first delay, doubling up to the last (seconds).
ACCEPT_RETRY_FIRST = 0.05
ACCEPT_RETRY_MAX = 2.0


class FamilyPort(Protocol):
    """What the service needs of the handshake family (``quichsd.netlink.HandshakeFamily``)."""

    def fileno(self) -> int: ...

    def recv_ready(self) -> list[ReadyNotice]: ...

    def pending_ready(self) -> bool: ...

    def accept(self, handler_class: int = ...) -> AcceptedRequest | None: ...

    def done(self, sockfd: int, status: int, remote_auth: Sequence[int] = ...) -> None: ...


@dataclass
class InFlight:
    request_id: int
    fd: int
    #: For the log and the metrics: the role and transport once known, else "?"
    #: (a transport the daemon does not serve is "protocol N").
    role: str
    transport: str
    auth_mode: AuthMode
    peername: str | None
    deadline: float
    started: float
    #: The peer's IP address for the log line (tlshd logs it too); None until known.
    address: str | None = None


#: ``_log_handshake``'s arguments, for a record logged after the next ACCEPTs.
_Unlogged = tuple[InFlight, int, str, Outcome | None, float]


@dataclass
class Counters:
    accepted: int = 0
    done: int = 0
    done_failed: int = 0
    late_outcomes: int = 0


class HandshakeService:
    def __init__(
        self,
        family: FamilyPort,
        config: DaemonConfig,
        *,
        workers: int,
        concurrency: int | None = None,
        report_remote_auth: bool = True,
        transport_probe: Callable[[int], str] = transport_of,
        served_transports: frozenset[str] = SERVED,
        forkserver: ForkServer,
        fork_per_request: bool = False,
    ) -> None:
        self.family = family
        self.config = config
        self.generation = 0
        self.report_remote_auth = report_remote_auth
        self.transport_probe = transport_probe
        self.served_transports = served_transports
        #: None: ``[quichsd] handshakes_per_worker``, which a reload changes too.
        self._concurrency = concurrency
        self.pool = WorkerPool(
            workers,
            config.handshakes_per_worker if concurrency is None else concurrency,
            config.worker_recycle,
            self._on_outcome,
            self._on_loss,
            forkserver=forkserver,
            on_fatal=self._fatal,
            fork_per_request=fork_per_request,
            idle_timeout=config.worker_idle_timeout,
        )
        self.inflight: dict[int, InFlight] = {}
        self.counters = Counters()
        self.statuses: Counter[int] = Counter()
        self.metrics = Metrics()
        #: Called once run() watches the netlink socket, before the first worker (READY=1).
        self.on_started: list[Callable[[], None]] = []
        #: Called once when a stop is first requested (STOPPING=1).
        self.on_stopping: list[Callable[[], None]] = []
        self._credits = 0
        #: After a failed ACCEPT: requests may be pending without credits (_accept_failed).
        self._probing = False
        self._backoff = ACCEPT_RETRY_FIRST
        self._retry: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        self._overrun: set[int] = set()
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        #: Why the service stopped on its own (no worker could serve), if it did.
        self.failure: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True) -> None:
        """Serves until ``request_stop()`` (or SIGTERM/SIGINT), then drains."""
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        loop.add_reader(self.family.fileno(), self._on_netlink)
        # READY=1 first: the group is joined, so the kernel queues requests for us from
        # now on (docs/startup.md); the first worker, whose fork waits for the fork
        # server's imports, must not hold back what is ordered after the service.
        for started in self.on_started:
            started()
        self.pool.start()
        loop.call_soon(self._on_netlink)  # READYs already buffered by start-up requests
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        watchdog = loop.create_task(self._watchdog())
        try:
            await self._stopped.wait()
            await self._drain(self.config.shutdown_grace)
        finally:
            watchdog.cancel()
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            loop.remove_reader(self.family.fileno())
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.pool.stop()

    def _fatal(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("%s: stopping", reason)
        self.request_stop()

    def request_stop(self) -> None:
        if not self._stopping:
            log.info("stopping: no new requests; %d in flight", len(self.inflight))
            for stopping in self.on_stopping:
                stopping()
        self._stopping = True
        if self._stopped is not None:
            self._stopped.set()

    def reload(self, config: DaemonConfig) -> None:
        """New requests use ``config``; those in flight keep the one they started with."""
        self.config = config
        self.generation += 1
        if self._concurrency is None:
            self.pool.concurrency = config.handshakes_per_worker
        self.pool.idle_timeout = config.worker_idle_timeout
        self.metrics.reloaded()

    async def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request_id in list(self.inflight):
            self._complete(request_id, errno.ETIMEDOUT, reason="daemon shutting down")

    # -- requests in ------------------------------------------------------------------

    def _on_netlink(self) -> None:
        self._take_ready()
        self._pump()

    def _take_ready(self) -> None:
        try:
            notices = self.family.recv_ready()
        except OSError as exc:
            log.error("netlink receive failed: %s", exc)
            return
        self._credits += sum(1 for n in notices if n.handler_class == HandlerClass.TLSHD)

    def _pump(self) -> None:
        while (
            (self._credits > 0 or self._probing)
            and self._retry is None
            and not self._stopping
            and self.pool.capacity() > 0
        ):
            try:
                request = self.family.accept()
            except MalformedRequest as exc:
                self._took_one()
                self._refuse_malformed(exc)
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            if request is None:  # nothing pending: another agent took it, or it was cancelled
                self._credits = 0
                self._probing = False
                return
            self._took_one()
            self._dispatch(request)
        # READYs that arrived while ACCEPT/DONE waited for answers sit in memory, not
        # in the socket: poll() would not see them.
        if self.family.pending_ready():
            asyncio.get_running_loop().call_soon(self._on_netlink)

    def _took_one(self) -> None:
        self._credits = max(0, self._credits - 1)
        self._backoff = ACCEPT_RETRY_FIRST

    def _accept_failed(self, exc: OSError) -> None:
        """An ACCEPT the kernel refused (EMFILE: our fd table is full; ENOMEM...).

        The kernel completes that one request itself and sends no further READY for
        the ones still queued, so their credits no longer say what is pending: keep
        ACCEPTing, after a back-off that lets requests in flight return their fds,
        until the kernel answers that nothing is pending (EAGAIN).
        """
        self._credits = max(0, self._credits - 1)
        self._probing = True
        delay = self._backoff
        self._backoff = min(self._backoff * 2, ACCEPT_RETRY_MAX)
        log.error("ACCEPT failed: %s; trying again in %.2f s", exc, delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_accept)

    def _retry_accept(self) -> None:
        self._retry = None
        self._on_netlink()

    def _refuse_malformed(self, exc: MalformedRequest) -> None:
        log.error("unusable ACCEPT reply: %s", exc)
        if exc.sockfd is None:
            # The reply installed no fd (HandshakeFamily.accept): nothing of ours to answer
            # on, and whatever number it named is not ours to close.
            return
        now = time.monotonic()
        request_id = next(self._ids)
        self.counters.accepted += 1
        self.inflight[request_id] = InFlight(
            request_id, exc.sockfd, "?", "?", AuthMode.UNSPEC, None, now, now
        )
        self._complete(request_id, errno.EINVAL, reason=str(exc))

    def _dispatch(self, request: AcceptedRequest) -> None:
        now = time.monotonic()
        config = self.config
        timeout = request.timeout_ms / 1000.0 if request.timeout_ms else config.handshake_timeout
        request_id = next(self._ids)
        self.counters.accepted += 1
        entry = InFlight(
            request_id,
            request.sockfd,
            "?",
            "?",
            request.auth_mode,
            request.peername,
            now + timeout,
            now,
        )
        self.inflight[request_id] = entry
        try:
            role = role_of(request.message_type)
            entry.role = role.value
            try:
                entry.transport = self.transport_probe(request.sockfd)
            except OSError as exc:
                raise JobRefused(errno.EIO, f"SO_PROTOCOL: {exc}") from None
            entry.address = journal.peer_address(request.sockfd)
            transport, _ = job_for(role, entry.transport, self.served_transports)
        except JobRefused as refused:
            self._complete(request_id, refused.errno, reason=str(refused))
            return
        job = Job(
            request_id=request_id,
            role=role,
            auth_mode=request.auth_mode,
            transport=transport,
            timeout=timeout,
            peer_identities=tuple(request.peer_identities),
            certificate=request.certificate,
            private_key=request.private_key,
            peername=request.peername,
            keyring=request.keyring,
            generation=self.generation,
            x509=x509_files_for(config, role),
            loglevel=config.loglevel,
            tls_debug=config.tls_debug,
        )
        try:
            self.pool.submit(job, request.sockfd)
        except MessageTooLarge as exc:
            self._complete(request_id, errno.EINVAL, reason=f"request parameters: {exc}")
        except OSError as exc:
            self._complete(request_id, errno.EIO, reason=f"handing to a worker: {exc}")

    # -- outcomes ----------------------------------------------------------------------

    def _on_outcome(self, outcome: Outcome) -> None:
        # DONE, then the next ACCEPTs, then the log record: a request waiting in the
        # kernel does not wait for the previous one's log line.
        unlogged = self._complete(
            outcome.request_id,
            outcome.status,
            outcome.remote_auth,
            outcome.reason,
            outcome,
            log_now=False,
        )
        self._pump()
        if unlogged is not None:
            _log_handshake(*unlogged)

    def _on_loss(self, request_ids: list[int], reason: str) -> None:
        for request_id in request_ids:
            code = errno.ETIMEDOUT if request_id in self._overrun else errno.EIO
            self._overrun.discard(request_id)
            self._complete(request_id, code, reason=reason)
        self._pump()

    async def _watchdog(self) -> None:
        """Kills a worker that let a handshake run past its deadline (stuck in C?)."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for entry in list(self.inflight.values()):
                if now < entry.deadline + OVERRUN_GRACE:
                    continue
                worker = self.pool.worker_of(entry.request_id)
                if worker is None:
                    self._complete(entry.request_id, errno.ETIMEDOUT, reason="deadline passed")
                    continue
                self._overrun.add(entry.request_id)
                log.error(
                    "request %d overran its deadline: killing worker %d",
                    entry.request_id,
                    worker.pid,
                )
                self.pool.kill(worker, "worker killed: a handshake overran its deadline")

    def _complete(
        self,
        request_id: int,
        status: int,
        remote_auth: Sequence[int] = (),
        reason: str = "",
        outcome: Outcome | None = None,
        *,
        log_now: bool = True,
    ) -> _Unlogged | None:
        """DONE for ``request_id`` the first time (the only place one is sent), its fd
        closed, counted and logged; without ``log_now``, returns the log record's arguments
        for the caller to log (``_log_handshake``)."""
        entry = self.inflight.pop(request_id, None)
        if entry is None:
            self.counters.late_outcomes += 1  # already answered: never a second DONE
            return None
        auth = tuple(remote_auth) if status == 0 and self.report_remote_auth else ()
        try:
            self.family.done(entry.fd, status, auth)
            self.counters.done += 1
        except OSError as exc:
            self.counters.done_failed += 1
            log.error("request %d: DONE failed: %s", request_id, exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(entry.fd)
        self.statuses[status] += 1
        duration = time.monotonic() - entry.started
        self.metrics.observe(entry.transport, entry.role, status, duration)
        if not log_now:
            return entry, status, reason, outcome, duration
        _log_handshake(entry, status, reason, outcome, duration)
        return None


def _log_handshake(
    entry: InFlight, status: int, reason: str, outcome: Outcome | None, duration: float
) -> None:
    """One record per request: text for stderr/syslog, QUICHSD_* fields for journald."""
    done = outcome if status == 0 else None
    journal.log_handshake(
        log,
        journal.HandshakeRecord(
            request_id=entry.request_id,
            transport=entry.transport,
            role=entry.role,
            auth_mode=entry.auth_mode,
            peername=entry.peername,
            status=status,
            reason=reason,
            duration=duration,
            cipher=done.cipher if done else 0,
            alpn=done.alpn if done else None,
            peer=done.peer if done else None,
            resumed=bool(done and done.resumed),
            address=entry.address,
        ),
    )
