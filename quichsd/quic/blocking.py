"""The blocking shell around ``QuicHandshake``: poll(2) on the socket until done.

Re-arms the wait on every iteration with the time left (tlshd's select() loop
reuses a consumed timeval and busy-loops).
"""

from __future__ import annotations

import select
import time

from quichsd.quic.driver import Credentials, HandshakeResult, QuicHandshake
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls import Role


def run_handshake(
    sock: QuicSocket, role: Role, credentials: Credentials, timeout: float
) -> HandshakeResult:
    handshake = QuicHandshake(sock, role, credentials, time.monotonic() + timeout)
    handshake.begin()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while handshake.result is None:
        now = time.monotonic()
        handshake.on_tick(now)
        if handshake.result is not None:
            break
        wait_ms = max(1, int(handshake.next_wakeup(now) * 1000) + 1)
        if poller.poll(wait_ms):
            handshake.on_readable()
    assert handshake.result is not None
    return handshake.result
