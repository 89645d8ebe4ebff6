# SPDX-License-Identifier: GPL-2.0-only
"""One echoed stream over a model QUIC socket: how a consumer uses its socket after DONE.

Shared by the tests, so each of them checks the same thing: the keys the agent
installed carry application data both ways.
"""

from __future__ import annotations

from quichsd.userspace.quic_socket import ModelQuicSocket


def echo_over(sock: ModelQuicSocket, message: bytes, timeout: float) -> bytes:
    """Sends ``message`` on a new stream with FIN; returns what comes back on that stream."""
    stream_id = sock.next_stream_id()
    sock.send_stream(stream_id, message, fin=True)
    received = b""
    while True:
        sid, data, fin = sock.recv_stream(timeout=timeout)
        assert sid == stream_id, f"data on stream {sid}, expected {stream_id}"
        received += data
        if fin:
            return received


def echo_back(sock: ModelQuicSocket, timeout: float, reply: bytes | None = None) -> bytes:
    """Reads one stream to its FIN and answers on it (with ``reply``, else the same bytes)."""
    sid, data, fin = sock.recv_stream(timeout=timeout)
    while not fin:
        more_sid, more, fin = sock.recv_stream(timeout=timeout)
        assert more_sid == sid, f"data on stream {more_sid}, expected {sid}"
        data += more
    sock.send_stream(sid, data if reply is None else reply, fin=True)
    return data
