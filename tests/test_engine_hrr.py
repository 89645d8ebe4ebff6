# SPDX-License-Identifier: GPL-2.0-only
"""HelloRetryRequest in memory: our client and server engines with different group priorities.

A client sends key shares only for the first group(s) of its list; a server that
takes none of them but shares a group with the client's supported_groups answers
with a HelloRetryRequest (RFC 8446 §4.1.4).  ALPN, transport parameters and the
PSK binder then come from the second ClientHello, and early data offered in the
first is refused (RFC 8446 §4.2.10) while the handshake goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from quichsd.tls import (
    AntiReplay,
    AuthMode,
    EngineConfig,
    HandshakeComplete,
    HandshakeEngine,
    InstallSecret,
    Level,
    PeerTransportParameters,
    PskClientCredentials,
    Role,
    SendHandshake,
    TlsSetupError,
    gnutls_version,
)
from quichsd.tls.engine import HRR_AFTER_EARLY_DATA
from quichsd.tls.memory import PairResult, Side

EngineFactory = Callable[..., HandshakeEngine]
Exchange = Callable[..., PairResult]
INITIAL, HANDSHAKE, APP, EARLY = Level.INITIAL, Level.HANDSHAKE, Level.APP, Level.EARLY
CLIENT_TP = b"\x01\x02client transport parameters"

#: The client's key share is for P-256 only (GnuTLS shares the first group of a kind).
CLIENT_GROUPS = ("SECP256R1", "SECP384R1")
#: The server takes only P-384: it must ask for it.
SERVER_GROUPS = ("SECP384R1",)
#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3).
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
PSK = (b"hrr-identity", bytes(range(32)))


def _server_hellos(side: Side) -> list[bytes]:
    """The ServerHello-type messages the server sent at INITIAL, in order."""
    return [e.data for e in side.events if isinstance(e, SendHandshake) and e.level == INITIAL]


def _is_hrr(message: bytes) -> bool:
    # handshake header (4) + legacy_version (2), then the 32-byte random
    return message[0] == 2 and message[6:38] == HRR_RANDOM


def _complete(side: Side) -> HandshakeComplete:
    assert side.failure is None, side.failure
    assert side.complete is not None, side.events
    return side.complete


def _assert_retried(result: PairResult) -> None:
    hellos = _server_hellos(result.server)
    assert len(hellos) == 2, hellos
    assert _is_hrr(hellos[0]) and not _is_hrr(hellos[1])


def _psk_pair(alpn: tuple[bytes, ...]) -> tuple[HandshakeEngine, HandshakeEngine]:
    client = HandshakeEngine(
        EngineConfig(
            role=Role.CLIENT,
            auth=AuthMode.PSK,
            psk=PskClientCredentials(*PSK),
            alpn=alpn,
            groups=CLIENT_GROUPS,
        ),
        CLIENT_TP,
    )
    server = HandshakeEngine(
        EngineConfig(
            role=Role.SERVER,
            auth=AuthMode.PSK,
            psk_lookup=lambda identity: PSK[1] if identity == PSK[0] else None,
            alpn=alpn,
            groups=SERVER_GROUPS,
        ),
        b"\x03\x04server transport parameters",
    )
    return client, server


@pytest.mark.parametrize("alpn", [(b"smb",), ()], ids=["alpn", "no-alpn"])
def test_x509_server_retries_and_completes_with_alpn(
    alpn: tuple[bytes, ...],
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    result = exchange(
        make_client(alpn=alpn, groups=CLIENT_GROUPS), make_server(alpn=alpn, groups=SERVER_GROUPS)
    )
    client, server = _complete(result.client), _complete(result.server)
    _assert_retried(result)
    assert client.alpn == server.alpn == (alpn[0] if alpn else None)
    assert result.server.alpn == (alpn[0] if alpn else None)
    # The second ClientHello repeats the transport parameters; the kernel gets them once.
    assert len(result.server.of(PeerTransportParameters)) == 1
    assert result.server.peer_transport_parameters == CLIENT_TP
    for level in (HANDSHAKE, APP):
        assert result.client.secrets[(level, True)] == result.server.secrets[(level, False)]


def test_psk_server_retries_and_completes_with_alpn(exchange: Exchange) -> None:
    result = exchange(*_psk_pair((b"smb",)))
    client, server = _complete(result.client), _complete(result.server)
    _assert_retried(result)
    assert client.alpn == server.alpn == b"smb"
    assert client.psk_identity == server.psk_identity == PSK[0]


def test_server_that_asks_for_a_group_the_client_lacks_fails_cleanly(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    result = exchange(
        make_client(alpn=(b"smb",), groups=("SECP256R1",)),
        make_server(alpn=(b"smb",), groups=("SECP521R1",)),
    )
    failure = result.server.failure
    assert failure is not None and result.client.failure is not None
    assert "ALPN" not in failure.reason, failure.reason
    assert failure.alert == 40  # handshake_failure: nothing in common, not no_application_protocol


def _early_data_retry(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange, ticket_key: bytes
) -> PairResult:
    """A resumption offering 0-RTT, answered with a HelloRetryRequest."""
    # A ticket that allows early data, from a full handshake with GnuTLS's groups.
    first = exchange(
        make_client(alpn=(b"smb",)),
        make_server(alpn=(b"smb",), ticket_key=ticket_key, early_data=True),
    )
    _complete(first.client)
    ticket = first.client.ticket
    assert ticket is not None
    anti_replay = AntiReplay()
    client = make_client(alpn=(b"smb",), session_data=ticket, early_data=True, groups=CLIENT_GROUPS)
    server = make_server(
        alpn=(b"smb",),
        ticket_key=ticket_key,
        early_data=True,
        anti_replay=anti_replay,
        groups=SERVER_GROUPS,
    )
    return exchange(client, server)


def _assert_early_data_refused_by_the_server(result: PairResult) -> None:
    hellos = _server_hellos(result.server)
    assert _is_hrr(hellos[0]) and not _is_hrr(hellos[1])
    # The client offered 0-RTT (one key, although GnuTLS derives a second one after
    # the retry: a level's key is installed once) ...
    early = [e for e in result.client.of(InstallSecret) if e.level == EARLY]
    assert [(e.level, e.send) for e in early] == [(EARLY, True)]
    # ... and the server, having asked for a retry, never reads it (RFC 8446 §4.2.10).
    assert (EARLY, False) not in result.server.secrets


@pytest.mark.skipif(
    not HRR_AFTER_EARLY_DATA, reason=f"GnuTLS {gnutls_version()}: the branch before 3.8.13 runs"
)
def test_early_data_offered_before_a_retry_is_refused_and_the_resumption_completes(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ticket_key: bytes,
) -> None:
    result = _early_data_retry(make_client, make_server, exchange, ticket_key)
    c, s = _complete(result.client), _complete(result.server)
    _assert_early_data_refused_by_the_server(result)
    assert not c.early_data_accepted and not s.early_data_accepted
    assert c.resumed and s.resumed
    assert c.alpn == s.alpn == b"smb"
    assert isinstance(result.client.ticket, bytes)


@pytest.mark.skipif(
    HRR_AFTER_EARLY_DATA, reason=f"GnuTLS {gnutls_version()}: the 3.8.13 branch runs"
)
def test_early_data_offered_before_a_retry_old_gnutls_client_fails_and_says_why(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ticket_key: bytes,
) -> None:
    """A GnuTLS client before 3.8.13 cannot go on after such a retry; our server does its part."""
    result = _early_data_retry(make_client, make_server, exchange, ticket_key)
    _assert_early_data_refused_by_the_server(result)
    # The server's flight after the retry went out complete (ServerHello ... Finished).
    assert [e.level for e in result.server.of(SendHandshake)] == [INITIAL, INITIAL, HANDSHAKE]
    failure = result.client.failure
    assert failure is not None
    assert "retry without the session ticket" in failure.reason


def test_unknown_group_name_is_a_setup_error(make_client: EngineFactory) -> None:
    with pytest.raises(TlsSetupError, match="key-exchange groups or signatures NO-SUCH-GROUP"):
        make_client(groups=("NO-SUCH-GROUP",))
