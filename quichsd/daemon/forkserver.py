# SPDX-License-Identifier: GPL-2.0-only
"""The fork server: the one process that forks workers (docs/ARCHITECTURE.md, "Process model").

``serve`` starts it first, before it opens the netlink socket, the journal or the
status socket and before its event loop runs.  So a worker, forked from it,
inherits none of those fds, no running loop and no libsystemd state -- nothing
needs closing after the fork and no private asyncio call resets anything.

What only workers need (the handshake code, GnuTLS, the TCP path: ``PRELOAD``)
the fork server imports itself when the parent first asks for a worker, which
the parent does once it has joined the netlink group and reported READY=1: no
worker's import delays the parent or competes with it for a CPU before then
(docs/startup.md), and the parent never holds those modules.  The ``setup``
callable it runs next makes what every worker must share (the 0-RTT
anti-replay store's shared mapping).  Then it forks that first worker.

The parent talks to it over one SOCK_SEQPACKET pair with the workers' framed
channel (daemon/channel.py), JSON messages:

* ``{"spawn": N}`` -> ``{"spawned": PID}`` with the parent's end of the new
  worker's channel by SCM_RIGHTS (N: the worker's ``recycle_after``);
* ``{"kill": PID}``: SIGKILL, only to a worker not yet reaped (no pid reuse race);
* ``{"exited": PID, "how": TEXT, "code": N}``, unasked, when a worker ends
  (``code``: its exit code, or minus the signal that ended it).

It exits when the parent closes its end, after its workers (which leave when
the parent closes their channels) are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from quichsd.daemon.channel import receive_messages, send_message
from quichsd.daemon.privilege import (
    CAP_SETPCAP,
    EXIT_UNCONFINED,
    ConfineError,
    keep_only,
    name_process,
)
from quichsd.daemon.protocol import ChannelError, Reassembler

if TYPE_CHECKING:
    from quichsd.daemon.wiring import Wiring

log = logging.getLogger("quichsd.forkserver")

#: Imported by the fork server before it forks a worker, so that every worker inherits
#: them: the worker's entry and the dispatch table's jobs, which workers would import
#: on their first job otherwise (the TCP one: ~0.3 s under QEMU TCG), and seccomp.
PRELOAD = (
    "quichsd.daemon.worker",
    "quichsd.daemon.jobs.quic",
    "quichsd.daemon.jobs.tcp",
    "quichsd.daemon._privilege",
)
#: How long ``spawn`` waits for the fork server's answer; the first answer waits for its
#: imports (``PRELOAD``), seconds under QEMU TCG.
SPAWN_WAIT = 10.0
FIRST_SPAWN_WAIT = 60.0
#: How long the fork server, told to stop, waits for its workers before killing them.
STOP_WAIT = 2.0

ExitCallback = Callable[[int, str, int], None]
GoneCallback = Callable[[str], None]


class ForkServerGone(OSError):
    """The fork server died or stopped answering: no worker can be forked."""


class ForkServer:
    """The parent's handle on the fork server process."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.control = control
        self._assembler = Reassembler()
        self._pending: list[int] = []
        self._on_exit: ExitCallback | None = None
        self._on_gone: GoneCallback | None = None
        self._watched = False
        self._answered = False
        #: False once its end of the control socket is closed (it died, or was closed).
        self.alive = True

    @classmethod
    def start(
        cls,
        wiring: Wiring,
        preload: Iterable[str] = PRELOAD,
        setup: Callable[[], object] | None = None,
    ) -> ForkServer:
        """Forks the fork server; call it before opening anything a worker must not hold.

        The fork server imports ``preload`` and calls ``setup`` when asked for its first
        worker (the answer to that first ``spawn`` waits for them).  Its workers run
        against ``wiring`` (daemon/wiring.py)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, wiring, tuple(preload), setup)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours)

    def spawn(self, recycle_after: int) -> tuple[int, socket.socket]:
        """A new worker: its pid and the parent's end of its channel (non-blocking)."""
        self._send({"spawn": recycle_after})
        deadline = time.monotonic() + (SPAWN_WAIT if self._answered else FIRST_SPAWN_WAIT)
        while True:
            for message, fds in self._receive():
                if "failed" in message:
                    raise ForkServerGone(0, f"the fork server could not fork: {message['failed']}")
                if "spawned" in message:
                    if len(fds) != 1:
                        raise ForkServerGone(0, "the fork server sent a worker without its channel")
                    channel = socket.socket(fileno=fds[0])
                    channel.setblocking(False)
                    self._answered = True
                    return int(message["spawned"]), channel
            left = deadline - time.monotonic()
            poller = select.poll()
            poller.register(self.control, select.POLLIN)
            if left <= 0 or not poller.poll(left * 1000):
                raise ForkServerGone(0, "the fork server did not fork a worker in time")

    def kill(self, pid: int) -> None:
        """SIGKILL to worker ``pid`` (nothing if it has already ended)."""
        with contextlib.suppress(OSError):
            self._send({"kill": pid})

    def watch(self, on_exit: ExitCallback, on_gone: GoneCallback | None = None) -> None:
        """Reports each worker's end to ``on_exit(pid, how, code)`` from the running loop,
        and the fork server's own end, once, to ``on_gone(why)``."""
        self._on_exit = on_exit
        self._on_gone = on_gone
        if not self._watched:
            asyncio.get_running_loop().add_reader(self.control.fileno(), self._readable)
            self._watched = True

    def unwatch(self) -> None:
        if self._watched:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.control.fileno())
            self._watched = False

    def close(self, wait: float = STOP_WAIT + 1.0) -> None:
        """Ends the fork server (and so, at last, the workers left) and reaps it."""
        self.alive = False
        self.control.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    # -- internals ---------------------------------------------------------------

    def _send(self, message: dict[str, int]) -> None:
        try:
            send_message(self.control, json.dumps(message).encode())
        except OSError as exc:
            raise ForkServerGone(exc.errno or 0, f"the fork server is gone: {exc}") from None

    def _receive(self) -> list[tuple[dict[str, Any], list[int]]]:
        """Whole messages readable now; exit notices go to the watcher at once."""
        try:
            raw, gone = receive_messages(self.control, self._assembler, self._pending, max_fds=1)
        except ChannelError as exc:
            raise ForkServerGone(0, f"the fork server broke its protocol: {exc}") from None
        messages = []
        for data, fds in raw:
            message = json.loads(data)
            if "exited" in message:
                self._report_exit(int(message["exited"]), str(message["how"]), int(message["code"]))
            else:
                messages.append((message, fds))
        if gone:
            raise ForkServerGone(0, "the fork server exited")
        return messages

    def _report_exit(self, pid: int, how: str, code: int) -> None:
        """A worker's end, to the watcher on the loop's next turn: a worker that dies at
        once is reported in the same read as its own ``spawned``, and its pool must know
        it (``spawn`` has returned) before it hears of its end."""
        if self._on_exit is None:
            return
        try:
            asyncio.get_running_loop().call_soon(self._on_exit, pid, how, code)
        except RuntimeError:  # no loop (a caller outside one): nothing to wait for
            self._on_exit(pid, how, code)

    def _readable(self) -> None:
        try:
            for _message, fds in self._receive():
                for fd in fds:  # an answer nobody waits for: cannot happen, closed anyway
                    os.close(fd)
        except ForkServerGone as exc:
            self.unwatch()
            if not self.alive:
                return  # already reported (gone_reason)
            reason = self.gone_reason(exc)
            if self._on_gone is not None:
                self._on_gone(reason)
            else:
                log.error("%s", reason)

    def gone_reason(self, exc: ForkServerGone) -> str:
        """One line for its end (its pid, and how it ended once it can be reaped); from
        here on it counts as gone."""
        self.alive = False
        return f"{exc.strerror} (pid {self.pid}{self._how_it_ended()}): no worker can be forked"

    def _how_it_ended(self) -> str:
        """``, killed by SIGKILL`` once it can be reaped (shortly after its socket's EOF)."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return ""
            if pid:
                return f", {describe(status)[0]}"
            time.sleep(0.01)
        return ""


def describe(status: int) -> tuple[str, int]:
    """How a worker ended, for the log, and its code (exit code, or -signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        how = f"killed by {signal.Signals(sig).name}"
        if sig == signal.SIGSYS:
            how += " (a system call outside its seccomp allow-list)"
        return how, -sig
    code = os.waitstatus_to_exitcode(status)
    return f"exited with code {code}", code


# -- the fork server process ---------------------------------------------------------


def ignore_daemon_signals() -> None:
    """The parent decides when workers (and the fork server) stop: it closes their
    channels, or has one killed.  Signals meant for the daemon that reach its whole
    process group -- Ctrl-C, a terminal hangup, systemd's SIGTERM to every process of
    the unit (KillMode=control-group, the default) -- must not end handshakes the parent
    is draining.  Workers inherit these dispositions across the fork."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _serve(
    control: socket.socket,
    wiring: Wiring,
    preload: tuple[str, ...],
    setup: Callable[[], object] | None,
) -> NoReturn:
    """The fork server process (never returns)."""
    code = 0
    try:
        ignore_daemon_signals()
        name_process("quichsd-forksrv")
        try:
            keep_only(CAP_SETPCAP)  # what a worker needs to empty its own bounding set
        except ConfineError as exc:
            print(
                f"quichsd: the fork server cannot drop privileges: {exc.strerror}", file=sys.stderr
            )
            os._exit(EXIT_UNCONFINED)
        _Server(control, wiring, preload, setup).run()
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)


class _Server:
    """Forks workers on demand, reaps them through their pidfds, reports each end."""

    def __init__(
        self,
        control: socket.socket,
        wiring: Wiring,
        preload: tuple[str, ...],
        setup: Callable[[], object] | None,
    ) -> None:
        control.setblocking(False)
        self.wiring = wiring
        self.control = control
        self.poller = select.poll()
        self.poller.register(control, select.POLLIN)
        self.children: dict[int, int] = {}  # pidfd -> pid
        self.assembler = Reassembler()
        #: Done before the first worker (see the module's docstring); None once done.
        self._prepare: tuple[tuple[str, ...], Callable[[], object] | None] | None = (
            preload,
            setup,
        )

    def run(self) -> None:
        """Until the parent closes its end; then waits for the workers (bounded)."""
        running = True
        while running:
            for fd, _event in self.poller.poll():
                if fd in self.children:
                    self._reap(fd)
                else:
                    running = self._requests()
        # The parent is gone or done: its workers leave on their channels' EOF.
        self.poller.unregister(self.control)
        deadline = time.monotonic() + STOP_WAIT
        while self.children and time.monotonic() < deadline:
            for fd, _event in self.poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                self._reap(fd)
        for pidfd, pid in list(self.children.items()):
            os.kill(pid, signal.SIGKILL)
            self._reap(pidfd)

    def _requests(self) -> bool:
        """Serves what the parent asked; False once it has closed its end."""
        messages, gone = receive_messages(self.control, self.assembler, [])
        for data, _fds in messages:
            request = json.loads(data)
            if "spawn" in request:
                self._spawn(int(request["spawn"]))
            elif "kill" in request and int(request["kill"]) in self.children.values():
                os.kill(int(request["kill"]), signal.SIGKILL)  # not reaped yet: still ours
        return not gone

    def _spawn(self, recycle_after: int) -> None:
        if self._prepare is not None:
            preload, setup = self._prepare
            self._prepare = None
            for name in preload:
                importlib.import_module(name)  # an ImportError ends the fork server
            if setup is not None:
                setup()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:
            self._tell({"failed": f"socketpair: {exc.strerror}"})
            return
        with ours, theirs:
            try:
                pid = os.fork()
            except OSError as exc:
                self._tell({"failed": f"fork: {exc.strerror}"})
                return
            if pid == 0:
                from quichsd.daemon.worker import worker_main  # preloaded: no import now

                # The worker keeps its channel and stdio, nothing else.
                self.control.close()
                theirs.close()
                for pidfd in self.children:
                    os.close(pidfd)
                worker_main(ours, recycle_after, self.wiring)
            pidfd = os.pidfd_open(pid)
            self.children[pidfd] = pid
            self.poller.register(pidfd, select.POLLIN)
            send_message(self.control, json.dumps({"spawned": pid}).encode(), [theirs.fileno()])

    def _reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _pid, status = os.waitpid(pid, 0)
        how, code = describe(status)
        self._tell({"exited": pid, "how": how, "code": code})

    def _tell(self, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            send_message(self.control, json.dumps(message).encode())
