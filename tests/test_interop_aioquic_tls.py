# SPDX-License-Identifier: GPL-2.0-only
"""Our engine against aioquic's TLS 1.3 stack (``aioquic.tls.Context``), in memory.

aioquic's TLS code is an independent implementation (Python, on
``cryptography``), so agreement with it checks GnuTLS-through-our-engine
against RFC 8446 / RFC 9001 rather than against itself: equal traffic secrets
per level and direction, the negotiated cipher, byte-exact transport
parameters, ALPN, resumption both ways, 0-RTT both ways, and what happens when
either side refuses the other.

aioquic offers only TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 and
TLS_CHACHA20_POLY1305_SHA256: it has no AES-128-CCM, so cipher 53 can only be
checked here as a failure to agree.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pytest
from aioquic.tls import (
    Alert,
    AlertBadCertificate,
    AlertCertificateExpired,
    AlertHandshakeFailure,
    AlertNoApplicationProtocol,
    CipherSuite,
    Context,
)
from aioquic.tls import SessionTicket as AioquicTicket
from aioquic.tls import State as AioquicState
from aioquic_peer import (
    CIPHER_TO_SUITE,
    AioquicPeer,
    Exchange,
    run_exchange,
    set_transport_parameters,
)

from quichsd.tls import (
    AntiReplay,
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    Cipher,
    EngineConfig,
    HandshakeComplete,
    HandshakeEngine,
    InstallSecret,
    Level,
    Role,
    SendHandshake,
    State,
    new_ticket_key,
)
from quichsd.tls.events import Event
from quichsd.tls.levels import SECRET_LENGTH
from quichsd.tls.selfsigned import Issued, issue, make_ca

NAME = "localhost"
ALPN = "h3"
QUIC_MAX_EARLY_DATA = 0xFFFFFFFF  # RFC 9001 §4.6.1
ALERT_HANDSHAKE_FAILURE = 40
ALERT_BAD_CERTIFICATE = 42
ALERT_CERTIFICATE_REQUIRED = 116
ALERT_NO_APPLICATION_PROTOCOL = 120
GCM_AND_CHACHA = (Cipher.AES_128_GCM, Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305)


# -- certificates ---------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Issued
    stranger: Issued  # a CA nobody here trusts
    leaves: dict[str, Issued]  # server leaves for NAME, by key kind
    expired: Issued
    client_leaves: dict[str, Issued]
    trust: CertificateCredentials  # trusts ``ca`` only
    trust_stranger: CertificateCredentials
    servers: dict[str, CertificateCredentials]  # our server credentials, by key kind


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = make_ca()
    stranger = make_ca("a CA nobody trusts")
    leaves = {kind: issue(ca, (NAME,), kind) for kind in ("ecdsa", "rsa")}
    expired = issue(ca, (NAME,), expired=True)
    clients = {kind: issue(ca, ("client.test",), kind) for kind in ("ecdsa", "rsa")}
    servers = {
        kind: CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem, trust=ca.cert_pem)
        for kind, leaf in leaves.items()
    }
    servers["expired"] = CertificateCredentials(chain=expired.cert_pem, key=expired.key_pem)
    return Pki(
        ca=ca,
        stranger=stranger,
        leaves=leaves,
        expired=expired,
        client_leaves=clients,
        trust=CertificateCredentials(trust=ca.cert_pem),
        trust_stranger=CertificateCredentials(trust=stranger.cert_pem),
        servers=servers,
    )


# -- our side -------------------------------------------------------------------


def our_client(
    pki: Pki,
    *,
    tp: bytes,
    name: str = NAME,
    alpn: tuple[bytes, ...] = (ALPN.encode(),),
    cipher: int = 0,
    early_data: bool = False,
    session: bytes | None = None,
    trust: CertificateCredentials | None = None,
) -> HandshakeEngine:
    config = EngineConfig(
        role=Role.CLIENT,
        auth=AuthMode.X509,
        certificates=trust or pki.trust,
        peer_name=name,
        alpn=alpn,
        cipher=cipher,
        early_data=early_data,
    )
    return HandshakeEngine(config, tp, session_data=session)


def our_server(
    pki: Pki,
    *,
    tp: bytes,
    kind: str = "ecdsa",
    alpn: tuple[bytes, ...] = (ALPN.encode(),),
    cipher: int = 0,
    ticket_key: bytes | None = None,
    early_data: bool = False,
    anti_replay: AntiReplay | None = None,
    certificate_request: CertificateRequest = CertificateRequest.IGNORE,
) -> HandshakeEngine:
    config = EngineConfig(
        role=Role.SERVER,
        auth=AuthMode.X509,
        certificates=pki.servers[kind],
        alpn=alpn,
        cipher=cipher,
        ticket_key=ticket_key,
        early_data=early_data,
        anti_replay=anti_replay,
        certificate_request=certificate_request,
    )
    return HandshakeEngine(config, tp)


# -- aioquic's side ---------------------------------------------------------------


class TicketStore:
    """An aioquic server's session-ticket database."""

    def __init__(self) -> None:
        self.tickets: dict[bytes, AioquicTicket] = {}

    def add(self, ticket: AioquicTicket) -> None:
        self.tickets[ticket.ticket] = ticket

    def get(self, label: bytes) -> AioquicTicket | None:
        return self.tickets.get(label)


def aioquic_server(
    leaf: Issued,
    *,
    tp: bytes,
    alpn: list[str] | None = None,
    suites: list[CipherSuite] | None = None,
    store: TicketStore | None = None,
    max_early_data: int | None = None,
) -> AioquicPeer:
    context = Context(
        is_client=False,
        alpn_protocols=[ALPN] if alpn is None else alpn or None,
        cipher_suites=suites,
        max_early_data=max_early_data,
    )
    context.certificate = leaf.cert
    context.certificate_private_key = leaf.key
    set_transport_parameters(context, tp)
    if store is not None:
        context.new_session_ticket_cb = store.add
        context.get_session_ticket_cb = store.get
    return AioquicPeer(context)


def aioquic_client(
    pki: Pki,
    *,
    tp: bytes,
    name: str = NAME,
    alpn: list[str] | None = None,
    suites: list[CipherSuite] | None = None,
    cadata: bytes | None = None,
    tickets: list[AioquicTicket] | None = None,
    ticket: AioquicTicket | None = None,
    certificate: Issued | None = None,
) -> AioquicPeer:
    context = Context(
        is_client=True,
        alpn_protocols=[ALPN] if alpn is None else alpn or None,
        cadata=cadata or pki.ca.cert_pem,
        cipher_suites=suites,
        server_name=name,
    )
    set_transport_parameters(context, tp)
    if tickets is not None:
        context.new_session_ticket_cb = tickets.append
    context.session_ticket = ticket
    if certificate is not None:
        context.certificate = certificate.cert
        context.certificate_private_key = certificate.key
    return AioquicPeer(context)


# -- checks -----------------------------------------------------------------------

_POST_HANDSHAKE = (AioquicState.CLIENT_POST_HANDSHAKE, AioquicState.SERVER_POST_HANDSHAKE)


def completed(ex: Exchange) -> HandshakeComplete:
    """Both sides finished: our HandshakeComplete, aioquic in its post-handshake state."""
    assert ex.ours.failure is None, ex.ours.failure
    assert ex.peer.alert is None, repr(ex.peer.alert)
    done = ex.ours.complete
    assert done is not None, [type(e).__name__ for e in ex.ours.events]
    assert ex.peer.context.state in _POST_HANDSHAKE
    return done


def our_ciphers(events: list[Event]) -> dict[tuple[int, bool], int]:
    return {(e.level, e.send): e.cipher for e in events if isinstance(e, InstallSecret)}


def assert_same_keys(ex: Exchange, *, our_early: bool | None = None) -> None:
    """Our send secret is aioquic's receive secret and vice versa, as bytes, same cipher.

    Every level but INITIAL (QUIC derives Initial keys itself) in both
    directions, plus EARLY in the direction ``our_early`` (True: we send 0-RTT).
    Nothing else may be installed on either side.
    """
    expected = {(level, send) for level in (Level.HANDSHAKE, Level.APP) for send in (True, False)}
    if our_early is not None:
        expected.add((Level.EARLY, our_early))
    ours = ex.ours.secrets
    theirs = {(level, not send): secret for (level, send), secret in ex.peer.secrets.items()}
    assert set(ours) == expected
    assert set(theirs) == expected
    for key in sorted(expected):
        assert isinstance(ours[key], bytes)
        assert ours[key] == theirs[key], f"secret mismatch at (level, send)={key}"
    their_ciphers = {(level, not send): c for (level, send), c in ex.peer.ciphers.items()}
    assert our_ciphers(ex.ours.events) == their_ciphers


def assert_send_key_first(events: list[Event]) -> None:
    """A level's transmit secret precedes the first bytes we send at it (events.py)."""
    installed: set[int] = {Level.INITIAL}
    for event in events:
        if isinstance(event, InstallSecret) and event.send:
            installed.add(event.level)
        elif isinstance(event, SendHandshake):
            assert event.level in installed, f"bytes at level {event.level} before its send key"


# -- full handshakes ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_our_client_with_aioquic_server(pki: Pki, kind: str) -> None:
    ctp, stp = os.urandom(64), os.urandom(96)
    ex = run_exchange(our_client(pki, tp=ctp), aioquic_server(pki.leaves[kind], tp=stp))

    done = completed(ex)
    assert_same_keys(ex)
    assert done.cipher == ex.peer.ciphers[(Level.APP, True)]
    assert done.peer_certificates[0] == pki.leaves[kind].cert_der
    assert ex.ours.peer_transport_parameters == stp
    assert ex.peer.peer_transport_parameters == ctp
    assert done.alpn == ex.ours.alpn == b"h3"
    assert ex.peer.context.alpn_negotiated == "h3"
    assert not done.resumed
    assert not ex.peer.context.session_resumed
    assert_send_key_first(ex.ours.events)


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_aioquic_client_with_our_server(pki: Pki, kind: str) -> None:
    ctp, stp = os.urandom(80), os.urandom(48)
    ex = run_exchange(our_server(pki, tp=stp, kind=kind), aioquic_client(pki, tp=ctp))

    done = completed(ex)
    assert_same_keys(ex)
    assert done.cipher == ex.peer.ciphers[(Level.APP, False)]
    assert done.peer_certificates == ()  # no client certificate asked for
    assert ex.ours.peer_transport_parameters == ctp
    assert ex.peer.peer_transport_parameters == stp
    assert done.alpn == ex.ours.alpn == b"h3"
    assert ex.peer.context.alpn_negotiated == "h3"
    assert not done.resumed
    assert_send_key_first(ex.ours.events)


# -- ciphers ------------------------------------------------------------------------


@pytest.mark.parametrize("restricted", ["ours", "aioquic"])
@pytest.mark.parametrize("ours_role", ["client", "server"])
@pytest.mark.parametrize("cipher", GCM_AND_CHACHA, ids=lambda c: Cipher(c).name)
def test_cipher_agrees(pki: Pki, cipher: int, ours_role: str, restricted: str) -> None:
    """One side offers a single suite, the other all it has: both must land on it."""
    our_cipher = cipher if restricted == "ours" else 0
    suites = [CIPHER_TO_SUITE[cipher]] if restricted == "aioquic" else None
    ctp, stp = os.urandom(32), os.urandom(32)
    if ours_role == "client":
        ex = run_exchange(
            our_client(pki, tp=ctp, cipher=our_cipher),
            aioquic_server(pki.leaves["ecdsa"], tp=stp, suites=suites),
        )
    else:
        ex = run_exchange(
            our_server(pki, tp=stp, cipher=our_cipher),
            aioquic_client(pki, tp=ctp, suites=suites),
        )

    done = completed(ex)
    assert done.cipher == cipher
    assert set(our_ciphers(ex.ours.events).values()) == {cipher}
    assert set(ex.peer.ciphers.values()) == {cipher}
    assert {len(s) for s in ex.ours.secrets.values()} == {SECRET_LENGTH[cipher]}
    assert_same_keys(ex)


def test_ccm_only_client_finds_no_suite_at_aioquic(pki: Pki) -> None:
    ex = run_exchange(
        our_client(pki, tp=b"c", cipher=Cipher.AES_128_CCM),
        aioquic_server(pki.leaves["ecdsa"], tp=b"s"),
    )
    assert type(ex.peer.alert) is AlertHandshakeFailure
    failure = ex.ours.failure
    assert failure is not None and failure.errno == errno.EACCES
    assert ex.ours.secrets == {}


def test_ccm_only_server_refuses_aioquic(pki: Pki) -> None:
    ex = run_exchange(
        our_server(pki, tp=b"s", cipher=Cipher.AES_128_CCM), aioquic_client(pki, tp=b"c")
    )
    failure = ex.ours.failure
    assert failure is not None and failure.errno == errno.EACCES
    assert failure.alert == ALERT_HANDSHAKE_FAILURE
    assert ex.peer.received_alert == ALERT_HANDSHAKE_FAILURE
    assert ex.peer.received == []  # not even a ServerHello left
    assert ex.peer.secrets == {}


# -- transport parameters -------------------------------------------------------------


@pytest.mark.parametrize("ours_role", ["client", "server"])
@pytest.mark.parametrize(("our_size", "their_size"), [(1, 1), (512, 2000), (37, 300)])
def test_transport_parameters_byte_exact(
    pki: Pki, ours_role: str, our_size: int, their_size: int
) -> None:
    """Opaque random bodies, our maximum (512) and a bigger one from aioquic."""
    ours_tp, theirs_tp = os.urandom(our_size), os.urandom(their_size)
    if ours_role == "client":
        ex = run_exchange(
            our_client(pki, tp=ours_tp), aioquic_server(pki.leaves["ecdsa"], tp=theirs_tp)
        )
    else:
        ex = run_exchange(our_server(pki, tp=ours_tp), aioquic_client(pki, tp=theirs_tp))
    completed(ex)
    assert ex.ours.peer_transport_parameters == theirs_tp
    assert ex.peer.peer_transport_parameters == ours_tp


# -- ALPN ---------------------------------------------------------------------------


def test_alpn_aioquic_server_picks_by_its_preference(pki: Pki) -> None:
    ex = run_exchange(
        our_client(pki, tp=b"c", alpn=(b"h3", b"hq-interop")),
        aioquic_server(pki.leaves["ecdsa"], tp=b"s", alpn=["hq-interop", "h3"]),
    )
    done = completed(ex)
    assert ex.peer.context.alpn_negotiated == "hq-interop"
    assert done.alpn == ex.ours.alpn == b"hq-interop"


def test_alpn_our_server_agrees_with_aioquic_client(pki: Pki) -> None:
    ex = run_exchange(
        our_server(pki, tp=b"s", alpn=(b"hq-interop", b"h3")),
        aioquic_client(pki, tp=b"c", alpn=["h3", "hq-interop"]),
    )
    done = completed(ex)
    # GnuTLS follows the client's order (no GNUTLS_ALPN_SERVER_PRECEDENCE).
    assert ex.peer.context.alpn_negotiated == "h3"
    assert done.alpn == ex.ours.alpn == b"h3"


def test_alpn_mismatch_detected_by_aioquic_server(pki: Pki) -> None:
    engine = our_client(pki, tp=b"c", alpn=(b"h2",))
    ex = run_exchange(engine, aioquic_server(pki.leaves["ecdsa"], tp=b"s"))
    assert type(ex.peer.alert) is AlertNoApplicationProtocol
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert is None  # the peer closed; we have nothing to send back
    assert engine.state is State.FAILED
    assert ex.ours.secrets == {}


def test_alpn_mismatch_detected_by_our_server(pki: Pki) -> None:
    engine = our_server(pki, tp=b"s")
    ex = run_exchange(engine, aioquic_client(pki, tp=b"c", alpn=["h2"]))
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert == ALERT_NO_APPLICATION_PROTOCOL
    assert ex.peer.received_alert == ALERT_NO_APPLICATION_PROTOCOL
    assert ex.peer.received == []
    assert ex.peer.context.state is AioquicState.CLIENT_EXPECT_SERVER_HELLO
    assert engine.state is State.FAILED


def test_aioquic_client_refuses_our_server_without_alpn(pki: Pki) -> None:
    """RFC 9001 §8.1: a client that offered ALPN must get one back; aioquic enforces it."""
    engine = our_server(pki, tp=b"s", alpn=())
    ex = run_exchange(engine, aioquic_client(pki, tp=b"c"))
    assert type(ex.peer.alert) is AlertNoApplicationProtocol
    failure = ex.ours.failure
    assert failure is not None and failure.errno == errno.EACCES
    assert engine.state is State.FAILED


def test_our_client_refuses_server_without_alpn(pki: Pki) -> None:
    """RFC 9001 §8.1 from our side: the server ignored our ALPN offer."""
    engine = our_client(pki, tp=b"c")
    ex = run_exchange(engine, aioquic_server(pki.leaves["ecdsa"], tp=b"s", alpn=[]))
    assert ex.peer.context.alpn_negotiated is None
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert == ALERT_NO_APPLICATION_PROTOCOL
    assert ex.peer.received_alert == ALERT_NO_APPLICATION_PROTOCOL
    assert ex.ours.complete is None
    assert engine.state is State.FAILED
    # Our Finished is never sent: aioquic still waits for it.
    assert ex.peer.context.state is AioquicState.SERVER_EXPECT_FINISHED


def test_our_server_refuses_client_without_alpn(pki: Pki) -> None:
    ex = run_exchange(our_server(pki, tp=b"s"), aioquic_client(pki, tp=b"c", alpn=[]))
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert == ALERT_NO_APPLICATION_PROTOCOL


# -- resumption -----------------------------------------------------------------------


def test_aioquic_client_resumes_with_our_ticket(pki: Pki) -> None:
    key = new_ticket_key()
    tickets: list[AioquicTicket] = []
    ex = run_exchange(
        our_server(pki, tp=b"s1", ticket_key=key), aioquic_client(pki, tp=b"c1", tickets=tickets)
    )
    first = completed(ex)
    # The NewSessionTicket goes out at APP level, after the handshake completed.
    sends = [e for e in ex.ours.events if isinstance(e, SendHandshake)]
    assert sends[-1].level == Level.APP
    assert ex.ours.events.index(first) < ex.ours.events.index(sends[-1])
    assert len(tickets) == 1
    assert tickets[0].max_early_data_size is None  # no early_data on this server
    assert tickets[0].cipher_suite == CIPHER_TO_SUITE[first.cipher]

    ctp, stp = os.urandom(40), os.urandom(40)
    ex2 = run_exchange(
        our_server(pki, tp=stp, ticket_key=key), aioquic_client(pki, tp=ctp, ticket=tickets[0])
    )
    done = completed(ex2)
    assert done.resumed
    assert ex2.peer.context.session_resumed
    assert not done.early_data_accepted
    assert_same_keys(ex2)
    assert ex2.ours.peer_transport_parameters == ctp
    assert ex2.peer.peer_transport_parameters == stp
    assert done.alpn == b"h3"
    assert_send_key_first(ex2.ours.events)


def test_ticket_under_another_key_means_full_handshake(pki: Pki) -> None:
    tickets: list[AioquicTicket] = []
    completed(
        run_exchange(
            our_server(pki, tp=b"s", ticket_key=new_ticket_key()),
            aioquic_client(pki, tp=b"c", tickets=tickets),
        )
    )
    ex = run_exchange(
        our_server(pki, tp=b"s", ticket_key=new_ticket_key()),
        aioquic_client(pki, tp=b"c", ticket=tickets[0]),
    )
    done = completed(ex)
    assert not done.resumed
    assert not ex.peer.context.session_resumed
    assert_same_keys(ex)


def test_our_client_resumes_with_aioquic_ticket(pki: Pki) -> None:
    store = TicketStore()
    leaf = pki.leaves["ecdsa"]
    ex = run_exchange(our_client(pki, tp=b"c1"), aioquic_server(leaf, tp=b"s1", store=store))
    completed(ex)
    assert len(store.tickets) == 1
    # aioquic sends the NewSessionTicket in 1-RTT; our client turns it into session data.
    assert ex.peer.sent[-1][0] == Level.APP
    session = ex.ours.ticket
    assert session

    ctp, stp = os.urandom(40), os.urandom(40)
    ex2 = run_exchange(
        our_client(pki, tp=ctp, session=session), aioquic_server(leaf, tp=stp, store=store)
    )
    done = completed(ex2)
    assert done.resumed
    assert ex2.peer.context.session_resumed
    assert not done.early_data_accepted
    assert_same_keys(ex2)
    assert ex2.ours.peer_transport_parameters == stp
    assert ex2.peer.peer_transport_parameters == ctp


# -- 0-RTT ----------------------------------------------------------------------------


def test_zero_rtt_from_our_client_to_aioquic(pki: Pki) -> None:
    store = TicketStore()
    leaf = pki.leaves["ecdsa"]
    ex = run_exchange(
        our_client(pki, tp=b"c1", early_data=True),
        aioquic_server(leaf, tp=b"s1", store=store, max_early_data=QUIC_MAX_EARLY_DATA),
    )
    completed(ex)
    session = ex.ours.ticket
    assert session

    ex2 = run_exchange(
        our_client(pki, tp=b"c2", early_data=True, session=session),
        aioquic_server(leaf, tp=b"s2", store=store, max_early_data=QUIC_MAX_EARLY_DATA),
    )
    done = completed(ex2)
    assert done.resumed and done.early_data_accepted
    assert ex2.peer.context.early_data_accepted
    assert_same_keys(ex2, our_early=True)
    # The 0-RTT key comes with the ClientHello, before anything from the server.
    keys = [(e.level, e.send) for e in ex2.ours.events if isinstance(e, InstallSecret)]
    assert keys[0] == (Level.EARLY, True)


def test_our_client_without_early_data_does_not_offer_it(pki: Pki) -> None:
    """A 0-RTT-capable aioquic ticket, but early_data off in our config: plain resumption."""
    store = TicketStore()
    leaf = pki.leaves["ecdsa"]
    ex = run_exchange(
        our_client(pki, tp=b"c1", early_data=True),
        aioquic_server(leaf, tp=b"s1", store=store, max_early_data=QUIC_MAX_EARLY_DATA),
    )
    completed(ex)
    session = ex.ours.ticket
    assert session

    ex2 = run_exchange(
        our_client(pki, tp=b"c2", session=session),
        aioquic_server(leaf, tp=b"s2", store=store, max_early_data=QUIC_MAX_EARLY_DATA),
    )
    done = completed(ex2)
    assert done.resumed and not done.early_data_accepted
    assert not ex2.peer.context.early_data_accepted
    assert_same_keys(ex2)


def test_zero_rtt_from_aioquic_to_our_server(pki: Pki) -> None:
    key, guard = new_ticket_key(), AntiReplay()
    tickets: list[AioquicTicket] = []
    completed(
        run_exchange(
            our_server(pki, tp=b"s1", ticket_key=key, early_data=True, anti_replay=guard),
            aioquic_client(pki, tp=b"c1", tickets=tickets),
        )
    )
    assert tickets[0].max_early_data_size == QUIC_MAX_EARLY_DATA

    ex = run_exchange(
        our_server(pki, tp=b"s2", ticket_key=key, early_data=True, anti_replay=guard),
        aioquic_client(pki, tp=b"c2", ticket=tickets[0]),
    )
    done = completed(ex)
    assert done.resumed and done.early_data_accepted
    assert ex.peer.context.early_data_accepted
    assert_same_keys(ex, our_early=False)
    assert guard.refused == 0


def test_replayed_zero_rtt_client_hello_falls_back_to_one_rtt(pki: Pki) -> None:
    """The same aioquic ClientHello twice: the second server refuses its 0-RTT.

    aioquic's client then learns from EncryptedExtensions that early data was
    rejected and finishes a resumed 1-RTT handshake with identical keys.
    """
    key, guard = new_ticket_key(), AntiReplay()
    tickets: list[AioquicTicket] = []
    completed(
        run_exchange(
            our_server(pki, tp=b"s1", ticket_key=key, early_data=True, anti_replay=guard),
            aioquic_client(pki, tp=b"c1", tickets=tickets),
        )
    )
    peer = aioquic_client(pki, tp=b"c2", ticket=tickets[0])
    hello = peer.start()
    assert (Level.EARLY, True) in peer.secrets

    original = our_server(pki, tp=b"s2", ticket_key=key, early_data=True, anti_replay=guard)
    first = [e for level, data in hello for e in original.receive(level, data)]
    assert any(isinstance(e, InstallSecret) and e.level == Level.EARLY for e in first)
    original.close()

    replayed = our_server(pki, tp=b"s2", ticket_key=key, early_data=True, anti_replay=guard)
    ex = run_exchange(replayed, peer, client_hello=hello)
    done = completed(ex)
    assert guard.refused == 1
    assert done.resumed and not done.early_data_accepted
    assert ex.peer.context.session_resumed and not ex.peer.context.early_data_accepted
    assert (Level.EARLY, False) not in ex.ours.secrets
    # aioquic derived a 0-RTT key it will never use; every other key matches.
    del ex.peer.secrets[(Level.EARLY, True)]
    del ex.peer.ciphers[(Level.EARLY, True)]
    assert_same_keys(ex)


# -- certificate failures -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong-name", "unknown-ca", "expired"])
def test_our_client_rejects_aioquic_server_certificate(pki: Pki, case: str) -> None:
    leaf = pki.expired if case == "expired" else pki.leaves["ecdsa"]
    engine = our_client(
        pki,
        tp=b"c",
        name="www.example.org" if case == "wrong-name" else NAME,
        trust=pki.trust_stranger if case == "unknown-ca" else None,
    )
    ex = run_exchange(engine, aioquic_server(leaf, tp=b"s"))
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    # GnuTLS answers every verification failure with bad_certificate.
    assert failure.alert == ALERT_BAD_CERTIFICATE
    assert ex.peer.received_alert == ALERT_BAD_CERTIFICATE
    assert engine.state is State.FAILED
    assert ex.ours.complete is None
    assert (Level.APP, True) not in ex.ours.secrets
    # aioquic is left waiting for a Finished that never comes.
    assert ex.peer.context.state is AioquicState.SERVER_EXPECT_FINISHED


@pytest.mark.parametrize(
    ("case", "alert"),
    [
        ("wrong-name", AlertBadCertificate),
        ("unknown-ca", AlertBadCertificate),
        ("expired", AlertCertificateExpired),
    ],
)
def test_aioquic_client_rejects_our_certificate(pki: Pki, case: str, alert: type[Alert]) -> None:
    engine = our_server(pki, tp=b"s", kind="expired" if case == "expired" else "ecdsa")
    peer = aioquic_client(
        pki,
        tp=b"c",
        name="www.example.org" if case == "wrong-name" else NAME,
        cadata=pki.stranger.cert_pem if case == "unknown-ca" else None,
    )
    ex = run_exchange(engine, peer)
    assert type(ex.peer.alert) is alert
    assert ex.peer.context.state is AioquicState.CLIENT_EXPECT_CERTIFICATE_VERIFY
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert is None
    assert str(int(alert.description)) in failure.reason
    assert engine.state is State.FAILED
    assert ex.ours.complete is None


# -- client certificates (our server) ---------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_our_server_verifies_aioquic_client_certificate(pki: Pki, kind: str) -> None:
    leaf = pki.client_leaves[kind]
    ex = run_exchange(
        our_server(pki, tp=b"s", certificate_request=CertificateRequest.REQUIRE),
        aioquic_client(pki, tp=b"c", certificate=leaf),
    )
    done = completed(ex)
    assert done.peer_certificates[0] == leaf.cert_der
    assert_same_keys(ex)


def test_our_server_requires_a_client_certificate(pki: Pki) -> None:
    ex = run_exchange(
        our_server(pki, tp=b"s", certificate_request=CertificateRequest.REQUIRE),
        aioquic_client(pki, tp=b"c"),
    )
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert == ALERT_CERTIFICATE_REQUIRED
    # In TLS 1.3 the client is done before the server reads its (empty) Certificate.
    assert ex.peer.context.state is AioquicState.CLIENT_POST_HANDSHAKE
    assert ex.peer.received_alert == ALERT_CERTIFICATE_REQUIRED


def test_our_server_optional_client_certificate_may_be_absent(pki: Pki) -> None:
    """REQUEST mode: aioquic answers with an empty Certificate; RFC 8446 §4.4.2.4 allows it."""
    ex = run_exchange(
        our_server(pki, tp=b"s", certificate_request=CertificateRequest.REQUEST),
        aioquic_client(pki, tp=b"c"),
    )
    done = completed(ex)
    assert done.peer_certificates == ()
    assert_same_keys(ex)


@pytest.mark.parametrize("request_mode", [CertificateRequest.REQUEST, CertificateRequest.REQUIRE])
def test_our_server_rejects_untrusted_aioquic_client_certificate(
    pki: Pki, request_mode: CertificateRequest
) -> None:
    stranger_leaf = issue(pki.stranger, ("client.test",))
    engine = our_server(pki, tp=b"s", certificate_request=request_mode)
    ex = run_exchange(engine, aioquic_client(pki, tp=b"c", certificate=stranger_leaf))
    failure = ex.ours.failure
    assert failure is not None
    assert failure.errno == errno.EACCES
    assert failure.alert == ALERT_BAD_CERTIFICATE
    assert ex.peer.received_alert == ALERT_BAD_CERTIFICATE
    assert engine.state is State.FAILED
