# SPDX-License-Identifier: GPL-2.0-only
"""Shared fixtures for the in-memory engine tests: a test PKI, credentials, engines.

Certificates, keys and credentials are built once per session (key generation
dominates the cost of a handshake); engines are built per test by the
``make_client`` / ``make_server`` factories, and ``exchange`` runs two engines
against each other in memory, optionally in small chunks or with bytes changed
on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quichsd.tls import (
    AuthMode,
    CertificateCredentials,
    EngineConfig,
    HandshakeEngine,
    Role,
    SendHandshake,
    State,
    new_ticket_key,
)
from quichsd.tls.events import Event
from quichsd.tls.memory import PairResult, Side
from quichsd.tls.selfsigned import Issued, issue, make_ca

SERVER_NAME = "server.test"
CLIENT_NAME = "client.test"
CLIENT_TP = b"\x01\x02client transport parameters"
SERVER_TP = b"\x03\x04server transport parameters"

#: (sender role, kernel level, bytes) -> the bytes the receiver gets.
Tamper = Callable[[Role, int, bytes], bytes]
EngineFactory = Callable[..., HandshakeEngine]
Exchange = Callable[..., PairResult]


# -- PKI ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> Issued:
    return make_ca("quichsd test CA")


@pytest.fixture(scope="session")
def other_ca() -> Issued:
    """A CA nobody trusts."""
    return make_ca("quichsd untrusted CA")


@pytest.fixture(scope="session")
def server_leaf(ca: Issued) -> Issued:
    return issue(ca, (SERVER_NAME,))


@pytest.fixture(scope="session")
def client_leaf(ca: Issued) -> Issued:
    return issue(ca, (CLIENT_NAME,))


@pytest.fixture(scope="session")
def expired_server_leaf(ca: Issued) -> Issued:
    return issue(ca, (SERVER_NAME,), expired=True)


@pytest.fixture(scope="session")
def untrusted_server_leaf(other_ca: Issued) -> Issued:
    return issue(other_ca, (SERVER_NAME,))


# -- credentials -----------------------------------------------------------------


@pytest.fixture(scope="session")
def server_creds(ca: Issued, server_leaf: Issued) -> CertificateCredentials:
    """The server's chain is leaf + CA, so peer chains have two entries to compare."""
    return CertificateCredentials(
        chain=server_leaf.cert_pem + ca.cert_pem, key=server_leaf.key_pem, trust=ca.cert_pem
    )


@pytest.fixture(scope="session")
def client_cert_creds(ca: Issued, client_leaf: Issued) -> CertificateCredentials:
    return CertificateCredentials(
        chain=client_leaf.cert_pem + ca.cert_pem, key=client_leaf.key_pem, trust=ca.cert_pem
    )


@pytest.fixture(scope="session")
def trust_creds(ca: Issued) -> CertificateCredentials:
    """A client with no certificate of its own that trusts the test CA."""
    return CertificateCredentials(trust=ca.cert_pem)


@pytest.fixture(scope="session")
def expired_server_creds(ca: Issued, expired_server_leaf: Issued) -> CertificateCredentials:
    return CertificateCredentials(
        chain=expired_server_leaf.cert_pem, key=expired_server_leaf.key_pem, trust=ca.cert_pem
    )


@pytest.fixture(scope="session")
def untrusted_server_creds(
    ca: Issued, other_ca: Issued, untrusted_server_leaf: Issued
) -> CertificateCredentials:
    return CertificateCredentials(
        chain=untrusted_server_leaf.cert_pem + other_ca.cert_pem,
        key=untrusted_server_leaf.key_pem,
        trust=ca.cert_pem,
    )


@pytest.fixture(scope="session")
def ticket_key() -> bytes:
    return new_ticket_key()


# -- engines -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_client(trust_creds: CertificateCredentials) -> EngineFactory:
    """``make_client(tp=..., session_data=..., **EngineConfig fields)``; X.509 by default."""

    def factory(
        *, tp: bytes = CLIENT_TP, session_data: bytes | None = None, **fields: Any
    ) -> HandshakeEngine:
        fields.setdefault("auth", AuthMode.X509)
        if fields["auth"] is not AuthMode.PSK:
            fields.setdefault("certificates", trust_creds)
            fields.setdefault("peer_name", SERVER_NAME)
        return HandshakeEngine(EngineConfig(role=Role.CLIENT, **fields), tp, session_data)

    return factory


@pytest.fixture(scope="session")
def make_server(server_creds: CertificateCredentials) -> EngineFactory:
    """``make_server(tp=..., **EngineConfig fields)``; X.509 by default."""

    def factory(*, tp: bytes = SERVER_TP, **fields: Any) -> HandshakeEngine:
        fields.setdefault("auth", AuthMode.X509)
        if fields["auth"] is not AuthMode.PSK:
            fields.setdefault("certificates", server_creds)
        return HandshakeEngine(EngineConfig(role=Role.SERVER, **fields), tp)

    return factory


# -- the in-memory wire --------------------------------------------------------------


def _deliver(
    events: list[Event],
    sender: Role,
    engine: HandshakeEngine,
    log: Side,
    chunk: int | None,
    tamper: Tamper | None,
) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if not isinstance(event, SendHandshake):
            continue
        data = tamper(sender, event.level, event.data) if tamper else event.data
        step = chunk or len(data)
        for offset in range(0, len(data), step):
            if engine.state not in (State.HANDSHAKING, State.COMPLETE):
                return out  # it failed: the connection is closed, nothing more arrives
            produced = engine.receive(event.level, data[offset : offset + step])
            log.events.extend(produced)
            out.extend(produced)
    return out


def exchange_engines(
    client: HandshakeEngine,
    server: HandshakeEngine,
    *,
    chunk: int | None = None,
    tamper: Tamper | None = None,
    max_rounds: int = 16,
) -> PairResult:
    """Runs a handshake to its end, like ``memory.run_pair``, with chunking and tampering.

    A side that fails with an alert closes the connection; the peer, if still
    handshaking, is told with ``peer_alert`` (QUIC CRYPTO_ERROR 0x100 + alert).
    """
    result = PairResult(Side(), Side())
    to_server = client.start()
    result.client.events.extend(to_server)
    for _ in range(max_rounds):
        to_client = _deliver(to_server, Role.CLIENT, server, result.server, chunk, tamper)
        to_server = _deliver(to_client, Role.SERVER, client, result.client, chunk, tamper)
        sends = (e for e in to_client + to_server if isinstance(e, SendHandshake))
        if next(sends, None) is None:
            break
    else:
        raise AssertionError(f"handshake did not settle in {max_rounds} rounds")
    for failed, other, other_log in (
        (result.client, server, result.server),
        (result.server, client, result.client),
    ):
        failure = failed.failure
        if failure is not None and other.state is State.HANDSHAKING and failure.alert is not None:
            other_log.events.extend(other.peer_alert(failure.alert))
    return result


@pytest.fixture(scope="session")
def exchange() -> Exchange:
    return exchange_engines


@pytest.fixture
def restore_quichsd_logger() -> Iterator[logging.Logger]:
    """The ``quichsd`` logger, given back afterwards with only its earlier handlers and
    level (tests that call ``journal.configure``)."""
    logger = logging.getLogger("quichsd")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)
