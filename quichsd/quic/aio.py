# SPDX-License-Identifier: GPL-2.0-only
"""The asyncio shell around ``QuicHandshake``: a reader callback on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time

from quichsd.quic.driver import Credentials, HandshakeResult, QuicHandshake
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls import Role


async def run_handshake_async(
    sock: QuicSocket,
    role: Role,
    credentials: Credentials,
    timeout: float,
    *,
    confirm_wait: float = 0.0,
) -> HandshakeResult:
    """``confirm_wait``: see ``QuicHandshake`` (a client keeps the connection until confirmed)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    handshake = QuicHandshake(sock, role, credentials, deadline, confirm_wait=confirm_wait)
    wakeup = asyncio.Event()
    fd = sock.fileno()

    def readable() -> None:
        handshake.on_readable()
        wakeup.set()

    handshake.begin()
    loop.add_reader(fd, readable)
    reading = True
    try:
        while handshake.result is None:
            now = time.monotonic()
            handshake.on_tick(now)
            if handshake.result is not None:
                break
            if reading and not handshake.wants_input:
                loop.remove_reader(fd)  # after completion: a readable socket is not ours
                reading = False
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), handshake.next_wakeup(now) + 0.001)
    except asyncio.CancelledError:
        handshake.cancel(errno.ECANCELED, "handshake cancelled")
        raise
    finally:
        if reading:
            loop.remove_reader(fd)
    assert handshake.result is not None
    return handshake.result
