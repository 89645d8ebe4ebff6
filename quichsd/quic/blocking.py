# SPDX-License-Identifier: GPL-2.0-only
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
    sock: QuicSocket,
    role: Role,
    credentials: Credentials,
    timeout: float,
    *,
    confirm_wait: float = 0.0,
) -> HandshakeResult:
    """``confirm_wait``: see ``QuicHandshake`` (a client keeps the connection until confirmed)."""
    deadline = time.monotonic() + timeout
    handshake = QuicHandshake(sock, role, credentials, deadline, confirm_wait=confirm_wait)
    handshake.begin()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while handshake.result is None:
        now = time.monotonic()
        handshake.on_tick(now)
        if handshake.result is not None:
            break
        wait_ms = max(1, int(handshake.next_wakeup(now) * 1000) + 1)
        if not handshake.wants_input:
            time.sleep(wait_ms / 1000)  # after completion: a readable socket is not ours
        elif poller.poll(wait_ms):
            handshake.on_readable()
    assert handshake.result is not None
    return handshake.result
