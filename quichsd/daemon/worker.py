"""A worker process: receives jobs with their fds, runs handshakes concurrently.

GnuTLS parses peer bytes here, never in the netlink parent.  A worker runs
many handshakes at once on one asyncio loop (they mostly wait for the
network), retires after ``recycle_after`` jobs to bound memory, and exits when
its parent goes away.  Whatever a job raises becomes an EIO outcome: the
parent must hear about every job it sent.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import traceback

from quichsd.daemon import handler
from quichsd.daemon.protocol import RETIRING, Job, Outcome, decode_job, encode_outcome

MAX_MESSAGE = 64 * 1024


def worker_main(channel: socket.socket, recycle_after: int) -> None:
    """Entry point in the forked child; never returns normally."""
    # Forked from inside the parent's running loop: that loop is not ours to run.
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    # The parent decides when workers stop (it closes their channels, or SIGKILLs one):
    # signals meant for the daemon that reach its whole process group -- Ctrl-C, a
    # terminal hangup, systemd's SIGTERM to every process of the unit (KillMode=
    # control-group, the default) -- must not end handshakes the parent is draining.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    code = 0
    try:
        asyncio.run(_serve(channel, recycle_after))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


async def _serve(channel: socket.socket, recycle_after: int) -> None:
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    accepted = 0

    def reply(outcome: Outcome) -> None:
        try:
            channel.send(encode_outcome(outcome))
        except OSError:
            stop.set()  # the parent is gone; it answers for the job itself

    async def run(job: Job, fd: int) -> None:
        sock = None
        try:
            sock = handler.open_quic_socket(fd)
            outcome = await handler.run_job(job, sock)
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
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(channel, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError:
                stop.set()
                return
            if not data:
                stop.set()  # parent closed the channel
                return
            job = decode_job(data)
            if not fds:
                reply(Outcome(job.request_id, errno.EBADF, reason="job arrived without its fd"))
                continue
            accepted += 1
            task = loop.create_task(run(job, fds[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if accepted == recycle_after:  # once: jobs sent before the parent read it follow
                channel.send(RETIRING)

    loop.add_reader(channel.fileno(), on_message)
    # Until the parent closes the channel: it does so when it stops, and when this worker,
    # retiring, has answered every job the parent sent (which may include jobs sent before
    # the parent read RETIRING; leaving on our own would lose those).  Jobs in flight when
    # the parent goes are dropped: nobody is left to send their DONE.
    await stop.wait()
    loop.remove_reader(channel.fileno())
