# SPDX-License-Identifier: GPL-2.0-only
"""A worker process: receives jobs with their fds, runs handshakes concurrently.

GnuTLS parses peer bytes here, never in the netlink parent, and only after the
worker has given up every privilege (daemon/privilege.py).  A worker runs
many handshakes at once on one asyncio loop (they mostly wait for the
network), retires after ``recycle_after`` jobs to bound memory, and exits when
its parent goes away.  Whatever a job raises becomes an EIO outcome: the
parent must hear about every job it sent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

from quichsd.daemon import handler, privilege
from quichsd.daemon.channel import close_all, receive_messages, send_message
from quichsd.daemon.protocol import (
    RETIRING,
    ChannelError,
    Job,
    Outcome,
    Reassembler,
    bounded_outcome,
    decode_job,
    encode_log,
)

if TYPE_CHECKING:
    from quichsd.daemon.wiring import Wiring

log = logging.getLogger("quichsd")


def worker_main(channel: socket.socket, recycle_after: int, wiring: Wiring) -> NoReturn:
    """Entry point in the child the fork server forked; never returns.

    The event loop is made first (its self-pipe is a ``socketpair()``, which the
    seccomp filter then forbids), then the worker gives up its privilege, then it
    reads its first job.  ``wiring``: how it opens a QUIC socket and installs kTLS.
    """
    privilege.name_process("quichsd-worker")
    sys.dont_write_bytecode = True  # its files are read-only to a worker (privilege.py)
    logging.getLogger("quichsd").addHandler(ChannelLogHandler(channel))
    code = 0
    try:
        with asyncio.Runner() as runner:
            runner.get_loop()
            try:
                privilege.confine()
            except privilege.ConfineError as exc:
                log.error("a worker cannot drop its privileges: %s", exc.strerror)
                code = privilege.EXIT_UNCONFINED
            else:
                runner.run(_serve(channel, recycle_after, wiring))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


class ChannelLogHandler(logging.Handler):
    """A worker's log records go to the parent, which logs them as its own with the
    worker's pid: a worker opens no journald or syslog socket (it cannot)."""

    def __init__(self, channel: socket.socket) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            send_message(self.channel, encode_log(record.levelno, record.name, text))
        except OSError:
            pass  # the parent is gone (or stopping): nobody is left to log it
        except Exception:
            self.handleError(record)


#: Python >= 3.12: a task that runs at once up to its first wait.  A job then sends its
#: first flight (or reads the peer's) in the turn its message arrived, not the loop's next.
_eager: Callable[..., asyncio.Task[None]] | None = getattr(asyncio, "eager_task_factory", None)


def _start_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    return _eager(loop, coro) if _eager is not None else loop.create_task(coro)


async def _serve(channel: socket.socket, recycle_after: int, wiring: Wiring) -> None:
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    accepted = 0

    assembler = Reassembler()
    pending_fds: list[int] = []

    def reply(outcome: Outcome) -> None:
        try:
            send_message(channel, bounded_outcome(outcome))
        except OSError:
            stop.set()  # the parent is gone (or the channel broke); it answers for the job

    async def run(job: Job, fd: int) -> None:
        sock = None
        try:
            sock = wiring.open_quic_socket(fd)
            outcome = await handler.run_job(job, sock, install_ktls=wiring.install_ktls)
        except Exception as exc:  # a bug must cost one handshake, not the worker
            outcome = Outcome(job.request_id, errno.EIO, reason=f"worker error: {exc!r}")
        finally:
            close = getattr(sock, "close", None)
            if close is not None:
                close()
            else:
                os.close(fd)
        reply(outcome)

    def on_message() -> None:
        nonlocal accepted
        try:
            messages, gone = receive_messages(channel, assembler, pending_fds, max_fds=1)
        except ChannelError:
            # Nothing can be answered on a channel that lost its framing: leaving makes the
            # parent answer every job of ours (EIO), including any it could not send whole.
            traceback.print_exc()
            stop.set()
            return
        for data, fds in messages:
            try:
                job = decode_job(data)
            except ChannelError:
                traceback.print_exc()
                close_all(fds)
                stop.set()
                return
            if not fds:
                reply(Outcome(job.request_id, errno.EBADF, reason="job arrived without its fd"))
                continue
            accepted += 1
            task = _start_task(loop, run(job, fds[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if accepted == recycle_after:  # once: jobs sent before the parent read it follow
                try:
                    send_message(channel, RETIRING)
                except OSError:
                    stop.set()
        if gone:
            stop.set()  # parent closed the channel

    loop.add_reader(channel.fileno(), on_message)
    # Until the parent closes the channel: it does so when it stops, and when this worker,
    # retiring, has answered every job the parent sent (which may include jobs sent before
    # the parent read RETIRING; leaving on our own would lose those).  Jobs in flight when
    # the parent goes are dropped: nobody is left to send their DONE.
    await stop.wait()
    loop.remove_reader(channel.fileno())
