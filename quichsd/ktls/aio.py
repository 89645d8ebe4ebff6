# SPDX-License-Identifier: GPL-2.0-only
"""The asyncio shell around ``TcpHandshake``: a reader or writer callback on the event loop.

Between GnuTLS's steps the socket is waited on as ``gnutls_record_get_direction()``
says, so one worker runs many handshakes at once; the procedure itself is
``handshake.py`` (as ``quic/aio.py`` waits for ``quic/driver.py``).
"""

from __future__ import annotations

import asyncio
import time

from quichsd.ktls.handshake import Installer, TcpHandshake, TcpHandshakeResult
from quichsd.ktls.install import install_ktls
from quichsd.ktls.session import TcpCredentials, TcpSocket
from quichsd.tls import Role


async def _wait(loop: asyncio.AbstractEventLoop, fd: int, write: bool, timeout: float) -> bool:
    """Until ``fd`` is readable (writable); False when ``timeout`` passes first.

    One future, settled by the fd's callback or by a timer: ``asyncio.wait_for`` would
    add a timeout scope (a task on Python 3.11) to every step of every handshake."""
    ready: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool) -> None:
        if not ready.done():
            ready.set_result(value)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    )
    add(fd, settle, True)
    timer = loop.call_later(timeout, settle, False)
    try:
        return await ready
    finally:
        timer.cancel()
        remove(fd)


async def run_tcp_handshake(
    sock: TcpSocket,
    role: Role,
    credentials: TcpCredentials,
    timeout: float,
    *,
    install: Installer | None = install_ktls,
    ciphers: tuple[int, ...] | None = None,
    record_size_limit: int | None = None,
) -> TcpHandshakeResult:
    """The TLS handshake on a connected TCP socket, then kTLS on it (``TcpHandshake``)."""
    loop = asyncio.get_running_loop()
    handshake = TcpHandshake(
        sock,
        role,
        credentials,
        timeout,
        install=install,
        ciphers=ciphers,
        record_size_limit=record_size_limit,
    )
    try:
        handshake.begin()
        while (write := handshake.step()) is not None:
            remaining = handshake.deadline - time.monotonic()
            if remaining <= 0 or not await _wait(loop, sock.fileno(), write, remaining):
                handshake.expire()
    finally:
        handshake.abandon()  # a cancelled wait: the session closed, TCP_NODELAY restored
    return handshake.result


__all__ = ["run_tcp_handshake"]
