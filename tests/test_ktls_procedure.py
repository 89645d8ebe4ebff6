# SPDX-License-Identifier: GPL-2.0-only
"""``TcpHandshake`` (ktls/handshake.py) is the TCP procedure without an event loop.

Two handshakes driven by nothing but ``select()`` reach the same result the
asyncio shell (ktls/aio.py) reaches; a cancelled asyncio wait still closes the
session and restores TCP_NODELAY, and a deadline that passes gives ETIMEDOUT.
"""

from __future__ import annotations

import asyncio
import errno
import select
import time

import pytest
from ktls_support import loopback_pair

from quichsd.ktls import TcpCredentials, TcpHandshake, run_tcp_handshake
from quichsd.ktls.abi import SOL_TCP, TCP_NODELAY
from quichsd.tls import AuthMode, CertificateCredentials, Role

SERVER_NAME = "server.test"


def test_select_loop_runs_both_sides(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        client = TcpHandshake(
            c,
            Role.CLIENT,
            TcpCredentials(AuthMode.X509, certificates=trust_creds, peer_name=SERVER_NAME),
            5.0,
            install=None,
        )
        server = TcpHandshake(
            s,
            Role.SERVER,
            TcpCredentials(AuthMode.X509, certificates=server_creds),
            5.0,
            install=None,
        )
        client.begin()
        server.begin()
        waits = {client: client.step(), server: server.step()}
        while any(w is not None for w in waits.values()):
            assert time.monotonic() < client.deadline, "no progress"
            readers = [h.sock for h, w in waits.items() if w is False]
            writers = [h.sock for h, w in waits.items() if w is True]
            ready_r, ready_w, _ = select.select(readers, writers, [], 1.0)
            for h in waits:
                if waits[h] is not None and h.sock in (*ready_r, *ready_w):
                    waits[h] = h.step()
        assert client.over and server.over
        assert client.result.ok and server.result.ok, (client.result.reason, server.result.reason)
        assert client.result.cipher == server.result.cipher != 0
        material_c, material_s = client.result.material, server.result.material
        assert material_c is not None and material_s is not None
        assert material_c.tx == material_s.rx


def test_silent_peer_expires_with_etimedout(trust_creds: CertificateCredentials) -> None:
    with loopback_pair() as (c, _s):
        credentials = TcpCredentials(AuthMode.X509, certificates=trust_creds, peer_name="x")
        result = asyncio.run(run_tcp_handshake(c, Role.CLIENT, credentials, 0.2, install=None))
        assert result.status == errno.ETIMEDOUT and "no handshake within 0.2 s" in result.reason
        assert c.getsockopt(SOL_TCP, TCP_NODELAY) == 0, "TCP_NODELAY restored"


def test_cancelled_wait_closes_and_restores(trust_creds: CertificateCredentials) -> None:
    with loopback_pair() as (c, _s):
        credentials = TcpCredentials(AuthMode.X509, certificates=trust_creds, peer_name="x")

        async def cancel_it() -> None:
            task = asyncio.ensure_future(run_tcp_handshake(c, Role.CLIENT, credentials, 30.0))
            await asyncio.sleep(0.05)
            assert c.getsockopt(SOL_TCP, TCP_NODELAY) == 1, "on during the handshake"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_it())
        assert c.getsockopt(SOL_TCP, TCP_NODELAY) == 0, "TCP_NODELAY restored after cancel"
