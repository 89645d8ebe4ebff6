# SPDX-License-Identifier: GPL-2.0-only
"""Handshake bytes at the wrong encryption level end the handshake (RFC 9001 §4.1.3-4.1.4).

Each TLS message belongs to one level: the hellos to INITIAL, the rest of the
handshake to HANDSHAKE, tickets to 1-RTT, and nothing to 0-RTT.  A message at
another level, or at a level number the kernel does not have, is a protocol
violation: the engine fails with unexpected_message (EACCES, as every TLS failure), and GnuTLS
never sees the bytes (so nothing of them is answered or keyed).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from quichsd.tls import (
    HandshakeEngine,
    HandshakeFailed,
    InstallSecret,
    Level,
    SendHandshake,
    State,
)
from quichsd.tls.events import Event
from quichsd.tls.failures import ALERT_UNEXPECTED_MESSAGE

EngineFactory = Callable[..., HandshakeEngine]
APP, INITIAL, HANDSHAKE, EARLY = Level.APP, Level.INITIAL, Level.HANDSHAKE, Level.EARLY


def _failure(events: list[Event]) -> HandshakeFailed:
    assert not [e for e in events if isinstance(e, SendHandshake | InstallSecret)], events
    (failure,) = events
    assert isinstance(failure, HandshakeFailed), events
    assert failure.errno == errno.EACCES  # a TLS failure, as GnuTLS's own unexpected_message
    assert failure.alert == ALERT_UNEXPECTED_MESSAGE
    return failure


def _client_hello(make_client: EngineFactory) -> bytes:
    (hello,) = [e for e in make_client().start() if isinstance(e, SendHandshake)]
    return hello.data


@pytest.mark.parametrize(
    ("level", "said"),
    [
        (APP, "ClientHello at the APP (1-RTT) level"),
        (HANDSHAKE, "ClientHello at the HANDSHAKE level"),
        (EARLY, "at the EARLY (0-RTT) level, which carries none"),
        (4, "level 4, which does not exist"),
        (5, "level 5, which does not exist"),  # 5 & 3 == INITIAL: it used to be taken
        (-1, "level -1, which does not exist"),
    ],
)
def test_server_refuses_a_client_hello_at_another_level(
    level: int, said: str, make_client: EngineFactory, make_server: EngineFactory
) -> None:
    server = make_server()
    failure = _failure(server.receive(level, _client_hello(make_client)))
    assert said in failure.reason
    assert server.state is State.FAILED


def test_server_takes_the_client_hello_at_initial(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    events = make_server().receive(INITIAL, _client_hello(make_client))
    assert [e.level for e in events if isinstance(e, SendHandshake)] == [INITIAL, HANDSHAKE]


def _server_flight(
    make_client: EngineFactory, make_server: EngineFactory
) -> tuple[HandshakeEngine, dict[int, bytes]]:
    client, server = make_client(), make_server()
    hello = next(e for e in client.start() if isinstance(e, SendHandshake))
    flight = {
        e.level: e.data for e in server.receive(INITIAL, hello.data) if isinstance(e, SendHandshake)
    }
    return client, flight


def test_client_refuses_a_server_hello_at_handshake_level(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    client, flight = _server_flight(make_client, make_server)
    failure = _failure(client.receive(HANDSHAKE, flight[INITIAL]))
    assert "ServerHello at the HANDSHAKE level" in failure.reason


def test_client_refuses_encrypted_extensions_at_initial(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    client, flight = _server_flight(make_client, make_server)
    failure = _failure(client.receive(INITIAL, flight[HANDSHAKE]))
    assert "EncryptedExtensions at the INITIAL level" in failure.reason


def test_a_wrong_message_after_a_split_header_is_caught(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    """The level's message boundaries are followed across CRYPTO frames."""
    client, flight = _server_flight(make_client, make_server)
    hello = flight[INITIAL]
    assert client.receive(INITIAL, hello[:2]) == []
    assert client.receive(INITIAL, hello[2:-1]) == []
    # The last byte completes the ServerHello; a ClientHello right after it is refused.
    failure = _failure(client.receive(INITIAL, hello[-1:] + b"\x01\x00\x00\x00"))
    assert "ClientHello at the INITIAL level" in failure.reason


def test_after_completion_only_tickets_arrive_at_app_level(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    client, flight = _server_flight(make_client, make_server)
    for level in (INITIAL, HANDSHAKE):
        client.receive(level, flight[level])
    assert client.state is State.COMPLETE
    failure = _failure(client.receive(APP, b"\x14\x00\x00\x20" + bytes(32)))  # a Finished
    assert "Finished at the APP (1-RTT) level" in failure.reason
