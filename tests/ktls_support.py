# SPDX-License-Identifier: GPL-2.0-only
"""Helpers for the TCP + kTLS tests: loopback connections, both handshakes, records."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from quichsd.ktls import TcpCredentials, TcpHandshakeResult, run_tcp_handshake
from quichsd.ktls.abi import SOL_TCP, TCP_ULP, TCP_ULP_TLS
from quichsd.tls import Role
from tests.support.ktls_soft import RecordLayer, split_records

TIMEOUT = 10.0


@contextmanager
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, server): a connected TCP pair on 127.0.0.1 (blocking sockets)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    client.settimeout(TIMEOUT)
    server.settimeout(TIMEOUT)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def kernel_has_ktls() -> bool:
    with loopback_pair() as (client, _server):
        try:
            client.setsockopt(SOL_TCP, TCP_ULP, TCP_ULP_TLS)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
    return True


def handshake_pair(
    client_sock: socket.socket,
    server_sock: socket.socket,
    client: TcpCredentials,
    server: TcpCredentials,
    *,
    client_kw: dict[str, Any] | None = None,
    server_kw: dict[str, Any] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[TcpHandshakeResult, TcpHandshakeResult]:
    """Both handshakes on one event loop; no kTLS unless ``install`` is passed in *_kw."""

    async def both() -> tuple[TcpHandshakeResult, TcpHandshakeResult]:
        ckw: dict[str, Any] = {"install": None, **(client_kw or {})}
        skw: dict[str, Any] = {"install": None, **(server_kw or {})}
        return await asyncio.gather(
            run_tcp_handshake(client_sock, Role.CLIENT, client, timeout, **ckw),
            run_tcp_handshake(server_sock, Role.SERVER, server, timeout, **skw),
        )

    return asyncio.run(both())


def read_records(
    sock: socket.socket, layer: RecordLayer, *, until_type: int = 23
) -> list[tuple[int, bytes]]:
    """Protected records from ``sock`` opened with ``layer``, up to one of ``until_type``."""
    buf = b""
    opened: list[tuple[int, bytes]] = []
    while not any(kind == until_type for kind, _ in opened):
        chunk = sock.recv(65536)
        if not chunk:
            break
        records, buf = split_records(buf + chunk)
        opened.extend(layer.open(record) for record in records)
    return opened


def drain_and_close(sock: socket.socket) -> None:
    """Half-close and read what is left, so the peer sees our last records, not a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        while sock.recv(65536):
            pass
    except OSError:
        pass
