# SPDX-License-Identifier: GPL-2.0-only
"""HelloRetryRequest on the wire, against unmodified aioquic and qh3 (floor 2).

What each peer can do (aioquic 1.7.2, qh3 2.1.0), read from their TLS code:

* aioquic's client sends a key share for every group it lists, so no server
  ever needs to ask it for another: it cannot trigger a HelloRetryRequest.
* qh3's client shares only X25519MLKEM768 and X25519 and lists P-256/P-384
  without shares, so a server that takes only P-256 must answer with a
  HelloRetryRequest -- the case of a post-quantum-first client against GnuTLS.
  qh3 cannot process the answer: it reads the HelloRetryRequest as a
  ServerHello, raises in its event loop and closes when its connect times out.
  Before the fix our server never got that far: it
  failed on its own with "the client offered no ALPN protocol" (alert 120).
* Neither server ever sends a HelloRetryRequest (both fail with
  handshake_failure when no key share suits them), so our client's side of a
  retry is tested against our own server on the model (tests/test_manual.py's
  hello-retry pair, over UDP) and in memory (tests/test_engine_hrr.py).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from interop_support import (
    ALERT_NO_APPLICATION_PROTOCOL,
    QH3,
    InteropFixtures,
    LoopThread,
    Pki,
    Stack,
    listener,
    peer_client_config,
    serve_peer_client,
    server_credentials,
)


class TestQh3ClientAgainstOurRetryingServer(InteropFixtures):
    PEER_ROLE = "client"
    #: qh3 parses the HelloRetryRequest's key_share (a group, no key) as a ServerHello's.
    KNOWN_LOOP_ERRORS = ("Read out of bounds", "ConnectionError")

    @pytest.fixture
    def peer_loop(self, stack: Stack) -> Iterator[LoopThread]:
        """As InteropFixtures' but without the descriptor check: when its TLS raises in the
        loop, qh3 never closes its client's UDP socket (bound to ::), a qh3 leak."""
        threads = set(threading.enumerate())
        loop = LoopThread(stack.name)
        try:
            yield loop
        finally:
            loop.stop()
        assert set(threading.enumerate()) <= threads
        unexpected = [e for e in loop.errors if not any(k in e for k in self.KNOWN_LOOP_ERRORS)]
        assert not unexpected, f"{stack.name} raised in its event loop: {unexpected}"

    @pytest.mark.parametrize("peer", [QH3], ids=[QH3.package], indirect=True)
    def test_our_server_answers_with_a_retry_not_an_alpn_failure(
        self, peer_loop: LoopThread, stack: Stack, pki: Pki
    ) -> None:
        credentials = dataclasses.replace(server_credentials(pki), groups=("SECP256R1",))
        with listener() as ours:
            server, client = serve_peer_client(
                peer_loop, stack, ours, credentials, peer_client_config(stack, pki)
            )
        assert client.error is not None  # qh3 cannot follow a HelloRetryRequest
        assert not server.result.ok
        assert server.result.alert != ALERT_NO_APPLICATION_PROTOCOL, server.result
        assert "ALPN" not in server.result.reason, server.result.reason
        # Our server sent the retry and waited for a second ClientHello; qh3, having raised
        # in its loop, closes only when its own connect gives up -- before our deadline, or
        # (on a loaded machine) after it.
        waited = ("the peer closed", "no handshake within the deadline")
        assert server.result.reason.startswith(waited), server.result.reason
