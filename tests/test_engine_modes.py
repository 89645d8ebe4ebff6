# SPDX-License-Identifier: GPL-2.0-only
"""Our client engine against our server engine in memory, for every mode that succeeds."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from quichsd.tls import (
    AlpnNegotiated,
    AntiReplay,
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    Cipher,
    HandshakeComplete,
    HandshakeEngine,
    HandshakeFailed,
    InstallSecret,
    Level,
    PeerTransportParameters,
    PskClientCredentials,
    SendHandshake,
    SessionTicket,
    State,
    TlsSetupError,
    new_ticket_key,
)
from quichsd.tls.binding import psk_binder_hash_supported
from quichsd.tls.events import Event
from quichsd.tls.levels import SECRET_LENGTH
from quichsd.tls.memory import PairResult, Side, run_pair
from quichsd.tls.selfsigned import Issued, issue

EngineFactory = Callable[..., HandshakeEngine]  # conftest's make_client / make_server
Exchange = Callable[..., PairResult]  # conftest's exchange

# conftest's default transport parameters
CLIENT_TP = b"\x01\x02client transport parameters"
SERVER_TP = b"\x03\x04server transport parameters"

HANDSHAKE, APP, INITIAL, EARLY = Level.HANDSHAKE, Level.APP, Level.INITIAL, Level.EARLY


def _complete(side: Side) -> HandshakeComplete:
    assert side.failure is None, side.failure
    done = side.complete
    assert done is not None, side.events
    return done


def _both_complete(result: PairResult) -> tuple[HandshakeComplete, HandshakeComplete]:
    return _complete(result.client), _complete(result.server)


def _sends(events: list[Event], level: int | None = None) -> list[SendHandshake]:
    return [
        e for e in events if isinstance(e, SendHandshake) and (level is None or e.level == level)
    ]


def _assert_secrets_mirror(result: PairResult, levels: tuple[int, ...]) -> None:
    client, server = result.client.secrets, result.server.secrets
    for level in levels:
        assert client[(level, True)] == server[(level, False)], f"client->server at {level}"
        assert client[(level, False)] == server[(level, True)], f"server->client at {level}"


# -- X.509 -------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["run_pair", "exchange"])
def test_x509_client_verifies_server_and_both_report_the_handshake(
    driver: str,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    server_leaf: Issued,
    ca: Issued,
) -> None:
    client, server = make_client(), make_server()
    result = run_pair(client, server) if driver == "run_pair" else exchange(client, server)
    c, s = _both_complete(result)
    assert client.state is State.COMPLETE
    assert server.state is State.COMPLETE
    # The client gets the server's chain in the order it was sent: leaf, then CA.
    assert c.peer_certificates == (server_leaf.cert_der, ca.cert_der)
    # Certificate requests are off by default: the server learns nothing of the client.
    assert s.peer_certificates == ()
    assert c.psk_identity is None and s.psk_identity is None
    assert not c.resumed and not s.resumed
    assert c.cipher == s.cipher
    assert result.client.peer_transport_parameters == SERVER_TP
    assert result.server.peer_transport_parameters == CLIENT_TP


@pytest.mark.parametrize(
    ("request_mode", "client_has_cert"),
    [
        (CertificateRequest.IGNORE, True),
        (CertificateRequest.REQUEST, True),
        (CertificateRequest.REQUEST, False),
        (CertificateRequest.REQUIRE, True),
    ],
)
def test_certificate_request_modes(
    request_mode: CertificateRequest,
    client_has_cert: bool,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    client_cert_creds: CertificateCredentials,
    trust_creds: CertificateCredentials,
    client_leaf: Issued,
    server_leaf: Issued,
    ca: Issued,
) -> None:
    creds = client_cert_creds if client_has_cert else trust_creds
    result = exchange(
        make_client(certificates=creds), make_server(certificate_request=request_mode)
    )
    c, s = _both_complete(result)
    assert c.peer_certificates == (server_leaf.cert_der, ca.cert_der)
    if client_has_cert and request_mode is not CertificateRequest.IGNORE:
        assert s.peer_certificates == (client_leaf.cert_der, ca.cert_der)
    else:
        assert s.peer_certificates == ()


def test_client_presents_its_certificate_even_from_an_issuer_the_server_does_not_list(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ca: Issued,
    other_ca: Issued,
) -> None:
    # GnuTLS servers name their trusted CAs in CertificateRequest (certificate_authorities)
    # and GnuTLS's own selection offers only a certificate from a listed issuer.  Like
    # tlshd, our client presents the configured certificate whenever asked, and the server
    # decides: in REQUEST mode a presented certificate must verify, this one does not.
    stranger = issue(other_ca, ("client.test",))
    creds = CertificateCredentials(chain=stranger.cert_pem, key=stranger.key_pem, trust=ca.cert_pem)
    result = exchange(
        make_client(certificates=creds),
        make_server(certificate_request=CertificateRequest.REQUEST),
    )
    failure = result.server.failure
    assert failure is not None, result.server.events
    assert failure.errno == errno.EACCES
    assert "peer certificate rejected" in failure.reason


# -- PSK ---------------------------------------------------------------------------


def test_psk_both_sides_report_the_identity(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    identity, key = b"nvme-host-" + os.urandom(4).hex().encode(), os.urandom(32)
    asked: list[bytes] = []

    def lookup(name: bytes) -> bytes | None:
        asked.append(name)
        return key if name == identity else None

    result = exchange(
        make_client(auth=AuthMode.PSK, psk=PskClientCredentials(identity, key), alpn=(b"nvme",)),
        make_server(auth=AuthMode.PSK, psk_lookup=lookup, alpn=(b"nvme",)),
    )
    c, s = _both_complete(result)
    # GnuTLS >= 3.8.11 (server credentials that try both binder hashes) asks twice.
    assert asked == [identity] * (2 if psk_binder_hash_supported() else 1)
    assert c.psk_identity == identity
    assert s.psk_identity == identity
    assert c.peer_certificates == () and s.peer_certificates == ()
    assert c.alpn == s.alpn == b"nvme"
    _assert_secrets_mirror(result, (HANDSHAKE, APP))
    assert result.client.peer_transport_parameters == SERVER_TP
    assert result.server.peer_transport_parameters == CLIENT_TP


def test_psk_lookup_is_per_engine(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    # All PSK servers share one GnuTLS credentials object; each engine must still
    # reach its own lookup (the handle lives in the session's journal).
    identity = b"shared-name"
    key_a, key_b = os.urandom(32), os.urandom(32)
    server_a = make_server(auth=AuthMode.PSK, psk_lookup={identity: key_a}.get)
    server_b = make_server(auth=AuthMode.PSK, psk_lookup={identity: key_b}.get)
    client_b = make_client(auth=AuthMode.PSK, psk=PskClientCredentials(identity, key_b))
    _both_complete(exchange(client_b, server_b))
    client_a = make_client(auth=AuthMode.PSK, psk=PskClientCredentials(identity, key_a))
    _both_complete(exchange(client_a, server_a))


# -- anonymous client ------------------------------------------------------------------


def test_unauth_client_verifies_a_trusted_server(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    server_leaf: Issued,
    ca: Issued,
) -> None:
    c, s = _both_complete(exchange(make_client(auth=AuthMode.UNAUTH), make_server()))
    assert c.peer_certificates == (server_leaf.cert_der, ca.cert_der)
    assert s.peer_certificates == ()


def test_unauth_client_without_verification_accepts_an_untrusted_server(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    untrusted_server_creds: CertificateCredentials,
    untrusted_server_leaf: Issued,
    other_ca: Issued,
) -> None:
    result = exchange(
        make_client(auth=AuthMode.UNAUTH, verify_peer=False, peer_name="not-the-server.test"),
        make_server(certificates=untrusted_server_creds),
    )
    c, _ = _both_complete(result)
    # Unverified, but still reported: the kernel consumer may decide for itself.
    assert c.peer_certificates == (untrusted_server_leaf.cert_der, other_ca.cert_der)


# -- ALPN --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_alpn", "server_alpn", "chosen"),
    [
        ((b"h3",), (b"h3",), b"h3"),
        # The server picks from the intersection; GnuTLS honours the client's order
        # unless GNUTLS_ALPN_SERVER_PRECEDENCE is set (the engine does not set it).
        ((b"smb", b"nfs"), (b"nfs", b"smb"), b"smb"),
        ((b"x-unknown", b"nfs"), (b"smb", b"nfs"), b"nfs"),
    ],
)
def test_alpn_selection_is_reported_on_both_sides(
    client_alpn: tuple[bytes, ...],
    server_alpn: tuple[bytes, ...],
    chosen: bytes,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    result = exchange(make_client(alpn=client_alpn), make_server(alpn=server_alpn))
    c, s = _both_complete(result)
    assert c.alpn == s.alpn == chosen
    for side in (result.client, result.server):
        negotiated = side.of(AlpnNegotiated)
        assert negotiated == [AlpnNegotiated(chosen)]
        # Announced before completion, so the caller can act on it first.
        done = _complete(side)
        assert side.events.index(negotiated[0]) < side.events.index(done)


def test_no_alpn_configured_means_none_negotiated(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    result = exchange(make_client(), make_server())
    c, s = _both_complete(result)
    assert c.alpn is None and s.alpn is None
    assert result.client.of(AlpnNegotiated) == [] == result.server.of(AlpnNegotiated)


# -- transport parameters ----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 97, 256, 511, 512])
def test_transport_parameters_arrive_byte_exact(
    size: int, make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client_tp, server_tp = os.urandom(size), os.urandom(size)
    result = exchange(make_client(tp=client_tp), make_server(tp=server_tp))
    _both_complete(result)
    assert [e.data for e in result.server.of(PeerTransportParameters)] == [client_tp]  # type: ignore[union-attr]
    assert [e.data for e in result.client.of(PeerTransportParameters)] == [server_tp]  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 513, 4096])
@pytest.mark.parametrize("role", ["client", "server"])
def test_transport_parameters_out_of_range_are_refused(
    size: int, role: str, make_client: EngineFactory, make_server: EngineFactory
) -> None:
    factory = make_client if role == "client" else make_server
    with pytest.raises(TlsSetupError) as caught:
        factory(tp=os.urandom(size))
    assert caught.value.errno == errno.EINVAL


# -- secrets and ciphers -------------------------------------------------------------

KERNEL_CIPHERS = [
    Cipher.AES_128_GCM,
    Cipher.AES_256_GCM,
    Cipher.CHACHA20_POLY1305,
    Cipher.AES_128_CCM,
]
#: TLS 1.3 traffic secrets are as long as the suite's hash: SHA-384 only for AES-256-GCM.
EXPECTED_SECRET_LENGTH = {51: 32, 52: 48, 53: 32, 54: 32}


@pytest.mark.parametrize("restricted", ["client", "server"])
@pytest.mark.parametrize("cipher", KERNEL_CIPHERS, ids=lambda c: c.name)
def test_each_cipher_is_selectable_and_secrets_mirror(
    cipher: Cipher,
    restricted: str,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    client_cipher = int(cipher) if restricted == "client" else 0
    server_cipher = int(cipher) if restricted == "server" else 0
    result = exchange(make_client(cipher=client_cipher), make_server(cipher=server_cipher))
    c, s = _both_complete(result)
    assert c.cipher == s.cipher == int(cipher)
    expected_len = EXPECTED_SECRET_LENGTH[int(cipher)]
    assert SECRET_LENGTH[int(cipher)] == expected_len  # the table the kernel glue relies on
    for side in (result.client, result.server):
        installs = side.of(InstallSecret)
        assert {(e.level, e.send) for e in installs} == {  # type: ignore[union-attr]
            (HANDSHAKE, True),
            (HANDSHAKE, False),
            (APP, True),
            (APP, False),
        }
        for event in installs:
            assert isinstance(event, InstallSecret)
            assert event.cipher == int(cipher)
            assert len(event.secret) == expected_len
        # Four different secrets: no direction or level reuses another's bytes.
        assert len(set(side.secrets.values())) == 4
    _assert_secrets_mirror(result, (HANDSHAKE, APP))


def test_default_cipher_is_aes_128_gcm(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    c, s = _both_complete(exchange(make_client(), make_server()))
    assert c.cipher == s.cipher == Cipher.AES_128_GCM


# -- ordering and levels -------------------------------------------------------------


def test_level_numbers_are_the_kernels() -> None:
    assert (Level.APP, Level.INITIAL, Level.HANDSHAKE, Level.EARLY) == (0, 1, 2, 3)


def _assert_send_secret_first(events: list[Event], level: int) -> None:
    first_send = next(
        i for i, e in enumerate(events) if isinstance(e, SendHandshake) and e.level == level
    )
    installs = [
        i
        for i, e in enumerate(events)
        if isinstance(e, InstallSecret) and e.level == level and e.send
    ]
    assert installs, f"no transmit secret for level {level}"
    assert installs[0] < first_send, f"level {level}: bytes queued before the transmit secret"


def test_transmit_secret_precedes_first_bytes_at_its_level(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    client_cert_creds: CertificateCredentials,
    ticket_key: bytes,
) -> None:
    result = exchange(
        make_client(certificates=client_cert_creds),
        make_server(certificate_request=CertificateRequest.REQUIRE, ticket_key=ticket_key),
    )
    _both_complete(result)
    client_events, server_events = result.client.events, result.server.events
    # The client speaks at INITIAL (ClientHello) and HANDSHAKE (Certificate..Finished);
    # the server at INITIAL, HANDSHAKE and APP (the NewSessionTicket).
    assert {e.level for e in _sends(client_events)} == {INITIAL, HANDSHAKE}
    assert {e.level for e in _sends(server_events)} == {INITIAL, HANDSHAKE, APP}
    _assert_send_secret_first(client_events, HANDSHAKE)
    _assert_send_secret_first(server_events, HANDSHAKE)
    _assert_send_secret_first(server_events, APP)
    # QUIC derives Initial keys itself: no INITIAL secret is ever reported.
    for side in (result.client, result.server):
        assert all(e.level != INITIAL for e in side.of(InstallSecret))  # type: ignore[union-attr]


def test_receive_secret_precedes_peer_bytes_at_its_level(
    make_client: EngineFactory, make_server: EngineFactory, ticket_key: bytes
) -> None:
    """What the kernel needs: it cannot decrypt a level's packets before its receive key."""
    client, server = make_client(), make_server(ticket_key=ticket_key)
    seen: dict[int, list[Event]] = {id(client): [], id(server): []}
    checked: set[tuple[str, int]] = set()

    def feed(events: list[Event], receiver: HandshakeEngine) -> list[Event]:
        out: list[Event] = []
        for e in _sends(events):
            if e.level != INITIAL:
                have = seen[id(receiver)]
                assert InstallSecret in {type(x) for x in have}
                assert any(
                    isinstance(x, InstallSecret) and x.level == e.level and not x.send for x in have
                ), f"{receiver.config.role.value} got level-{e.level} bytes before its key"
                checked.add((receiver.config.role.value, e.level))
            produced = receiver.receive(e.level, e.data)
            seen[id(receiver)].extend(produced)
            out.extend(produced)
        return out

    to_server = client.start()
    seen[id(client)].extend(to_server)
    while to_server:
        to_client = feed(to_server, server)
        to_server = feed(to_client, client)
    assert client.state is State.COMPLETE and server.state is State.COMPLETE
    assert checked == {("client", HANDSHAKE), ("server", HANDSHAKE), ("client", APP)}


def test_flights_use_kernel_levels(
    make_client: EngineFactory, make_server: EngineFactory, ticket_key: bytes
) -> None:
    client, server = make_client(), make_server(ticket_key=ticket_key)
    hello = client.start()
    assert [(type(e), e.level) for e in _sends(hello)] == [(SendHandshake, INITIAL)]
    assert hello[0].data[0] == 1  # type: ignore[union-attr]  # client_hello
    flight = server.receive(INITIAL, _sends(hello)[0].data)
    assert [e.level for e in _sends(flight)] == [INITIAL, HANDSHAKE]
    assert _sends(flight)[0].data[0] == 2  # server_hello
    assert _sends(flight)[1].data[0] == 8  # encrypted_extensions
    answer: list[Event] = []
    for e in _sends(flight):
        answer += client.receive(e.level, e.data)
    assert [e.level for e in _sends(answer)] == [HANDSHAKE]
    assert _sends(answer)[0].data[0] == 20  # finished
    final = server.receive(HANDSHAKE, _sends(answer)[0].data)
    assert [e.level for e in _sends(final)] == [APP]
    assert _sends(final)[0].data[0] == 4  # new_session_ticket


# -- resumption ------------------------------------------------------------------------


def _full_handshake_ticket(
    make_client: EngineFactory,
    make_server: EngineFactory,
    alpn: tuple[bytes, ...] = (),
    **server_fields: object,
) -> bytes:
    """Runs a handshake step by step and returns the client's SessionTicket data."""
    client, server = make_client(alpn=alpn), make_server(alpn=alpn, **server_fields)
    flight = server.receive(INITIAL, _sends(client.start())[0].data)
    answer: list[Event] = []
    for e in _sends(flight):
        answer += client.receive(e.level, e.data)
    assert client.state is State.COMPLETE
    assert not [e for e in answer if isinstance(e, SessionTicket)]
    final = server.receive(HANDSHAKE, _sends(answer, HANDSHAKE)[0].data)
    assert server.state is State.COMPLETE
    tickets = _sends(final, APP)
    assert len(tickets) == 1
    got = client.receive(APP, tickets[0].data)
    assert len(got) == 1 and isinstance(got[0], SessionTicket), got
    assert client.state is State.COMPLETE
    return got[0].data


def test_resumption_from_a_session_ticket(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange, ticket_key: bytes
) -> None:
    ticket = _full_handshake_ticket(make_client, make_server, ticket_key=ticket_key, alpn=(b"h3",))
    result = exchange(
        make_client(session_data=ticket, alpn=(b"h3",)),
        make_server(ticket_key=ticket_key, alpn=(b"h3",)),
    )
    c, s = _both_complete(result)
    assert c.resumed and s.resumed
    assert c.alpn == s.alpn == b"h3"
    assert not c.early_data_accepted and not s.early_data_accepted
    _assert_secrets_mirror(result, (HANDSHAKE, APP))
    assert result.server.peer_transport_parameters == CLIENT_TP
    assert result.client.peer_transport_parameters == SERVER_TP
    # A resumed server sends no Certificate: its HANDSHAKE flight is EE + Finished only.
    (server_flight,) = _sends(result.server.events, HANDSHAKE)
    assert [server_flight.data[0], server_flight.data[4 + _u24(server_flight.data, 1)]] == [8, 20]
    # And it hands out a fresh ticket for next time.
    assert result.client.ticket is not None and result.client.ticket != ticket


def _u24(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 3], "big")


def test_ticket_from_another_ticket_key_falls_back_to_a_full_handshake(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange, ticket_key: bytes
) -> None:
    ticket = _full_handshake_ticket(make_client, make_server, ticket_key=ticket_key)
    result = exchange(make_client(session_data=ticket), make_server(ticket_key=new_ticket_key()))
    c, s = _both_complete(result)
    assert not c.resumed and not s.resumed


def test_no_ticket_without_a_ticket_key(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    result = exchange(make_client(), make_server())
    _both_complete(result)
    assert _sends(result.server.events, APP) == []
    assert result.client.ticket is None


# -- 0-RTT ---------------------------------------------------------------------------


@pytest.fixture
def early_ticket(
    make_client: EngineFactory, make_server: EngineFactory, ticket_key: bytes
) -> tuple[bytes, AntiReplay]:
    """A ticket that allows early data, and an anti-replay store older than it.

    GnuTLS refuses 0-RTT for tickets issued before the anti-replay store's
    window started, so each test gets a fresh pair.
    """
    anti_replay = AntiReplay()
    ticket = _full_handshake_ticket(
        make_client, make_server, ticket_key=ticket_key, early_data=True
    )
    return ticket, anti_replay


def test_client_offers_early_data_when_resuming(
    make_client: EngineFactory, early_ticket: tuple[bytes, AntiReplay]
) -> None:
    ticket, _ = early_ticket
    events = make_client(session_data=ticket, early_data=True).start()
    assert [type(e) for e in events] == [SendHandshake, InstallSecret]
    secret = events[1]
    assert isinstance(secret, InstallSecret)
    assert (secret.level, secret.send) == (EARLY, True)
    assert secret.cipher == Cipher.AES_128_GCM
    assert len(secret.secret) == 32


@pytest.mark.parametrize(("early_data", "resuming"), [(False, True), (True, False)])
def test_client_offers_no_early_data_without_flag_or_ticket(
    early_data: bool,
    resuming: bool,
    make_client: EngineFactory,
    early_ticket: tuple[bytes, AntiReplay],
) -> None:
    ticket, _ = early_ticket
    client = make_client(session_data=ticket if resuming else None, early_data=early_data)
    assert [type(e) for e in client.start()] == [SendHandshake]


def test_server_accepts_early_data(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ticket_key: bytes,
    early_ticket: tuple[bytes, AntiReplay],
) -> None:
    ticket, anti_replay = early_ticket
    result = exchange(
        make_client(session_data=ticket, early_data=True),
        make_server(ticket_key=ticket_key, early_data=True, anti_replay=anti_replay),
    )
    c, s = _both_complete(result)
    assert c.resumed and s.resumed
    assert c.early_data_accepted and s.early_data_accepted
    client_secrets, server_secrets = result.client.secrets, result.server.secrets
    assert (EARLY, False) not in client_secrets and (EARLY, True) not in server_secrets
    assert server_secrets[(EARLY, False)] == client_secrets[(EARLY, True)]
    _assert_secrets_mirror(result, (HANDSHAKE, APP))
    assert anti_replay.refused == 0


def test_server_without_early_data_rejects_it_and_completes(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ticket_key: bytes,
    early_ticket: tuple[bytes, AntiReplay],
) -> None:
    ticket, _ = early_ticket
    result = exchange(
        make_client(session_data=ticket, early_data=True),
        make_server(ticket_key=ticket_key, early_data=False),
    )
    c, s = _both_complete(result)
    assert c.resumed and s.resumed
    assert not c.early_data_accepted and not s.early_data_accepted
    assert (EARLY, True) in result.client.secrets  # offered...
    assert (EARLY, False) not in result.server.secrets  # ...but never decrypted
    _assert_secrets_mirror(result, (HANDSHAKE, APP))


def test_replayed_client_hello_gets_no_early_data(
    make_client: EngineFactory,
    make_server: EngineFactory,
    ticket_key: bytes,
    early_ticket: tuple[bytes, AntiReplay],
) -> None:
    """The same 0-RTT ClientHello delivered to two servers sharing one AntiReplay."""
    ticket, anti_replay = early_ticket
    client = make_client(session_data=ticket, early_data=True)
    hello = _sends(client.start())[0].data

    def server() -> HandshakeEngine:
        return make_server(ticket_key=ticket_key, early_data=True, anti_replay=anti_replay)

    first, replayed = server(), server()
    first_flight = first.receive(INITIAL, hello)
    assert any(
        isinstance(e, InstallSecret) and e.level == EARLY and not e.send for e in first_flight
    )
    assert anti_replay.refused == 0
    second_flight = replayed.receive(INITIAL, hello)
    assert anti_replay.refused == 1
    assert not any(isinstance(e, InstallSecret) and e.level == EARLY for e in second_flight)
    # Not an error: the replayed handshake goes on as 1-RTT.  Completing it with the
    # client shows the client learns its early data was refused.
    first.close()
    answer: list[Event] = []
    for e in _sends(second_flight):
        answer += client.receive(e.level, e.data)
    final = replayed.receive(HANDSHAKE, _sends(answer, HANDSHAKE)[0].data)
    client_done = [e for e in answer if isinstance(e, HandshakeComplete)]
    server_done = [e for e in final if isinstance(e, HandshakeComplete)]
    assert len(client_done) == len(server_done) == 1
    assert client_done[0].resumed and server_done[0].resumed
    assert not client_done[0].early_data_accepted and not server_done[0].early_data_accepted


# -- fragmentation ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7])
def test_flights_delivered_in_small_chunks(
    chunk: int,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    client_cert_creds: CertificateCredentials,
    client_leaf: Issued,
    ca: Issued,
    ticket_key: bytes,
) -> None:
    result = exchange(
        make_client(certificates=client_cert_creds, alpn=(b"h3",)),
        make_server(
            certificate_request=CertificateRequest.REQUIRE, ticket_key=ticket_key, alpn=(b"h3",)
        ),
        chunk=chunk,
    )
    c, s = _both_complete(result)
    assert s.peer_certificates == (client_leaf.cert_der, ca.cert_der)
    assert c.alpn == s.alpn == b"h3"
    _assert_secrets_mirror(result, (HANDSHAKE, APP))
    for side in (result.client, result.server):
        assert side.of(HandshakeFailed) == []
    # The NewSessionTicket arrives in pieces too: one ticket, only once it is whole.
    assert len(result.client.of(SessionTicket)) == 1
    ticket = result.client.ticket
    assert ticket is not None
    resumed = exchange(
        make_client(session_data=ticket), make_server(ticket_key=ticket_key), chunk=chunk
    )
    c2, s2 = _both_complete(resumed)
    assert c2.resumed and s2.resumed


def test_resumed_server_still_knows_the_client_certificate(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    client_cert_creds: CertificateCredentials,
    client_leaf: Issued,
    server_leaf: Issued,
    ca: Issued,
    ticket_key: bytes,
) -> None:
    # A resumed handshake carries no Certificate messages; the identities come from the
    # ticket (the server's) and the session data (the client's), as DONE must report them.
    def server() -> HandshakeEngine:
        return make_server(certificate_request=CertificateRequest.REQUIRE, ticket_key=ticket_key)

    first = exchange(make_client(certificates=client_cert_creds), server())
    ticket = first.client.ticket
    assert ticket is not None
    result = exchange(make_client(certificates=client_cert_creds, session_data=ticket), server())
    c, s = _both_complete(result)
    assert c.resumed and s.resumed
    assert s.peer_certificates == (client_leaf.cert_der, ca.cert_der)
    assert c.peer_certificates == (server_leaf.cert_der, ca.cert_der)
