# SPDX-License-Identifier: GPL-2.0-only
"""The engine's state machine, object lifetimes, configuration checks and event hygiene."""

from __future__ import annotations

import errno
import gc
import os
import weakref
from collections.abc import Callable

import pytest

from quichsd.tls import (
    AntiReplay,
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    EngineConfig,
    EngineStateError,
    HandshakeComplete,
    HandshakeEngine,
    HandshakeFailed,
    InstallSecret,
    Level,
    PskClientCredentials,
    Role,
    SendHandshake,
    SessionTicket,
    State,
    TlsSetupError,
    new_ticket_key,
    session_setup,
)
from quichsd.tls.events import Event
from quichsd.tls.memory import PairResult
from quichsd.tls.selfsigned import Issued

EngineFactory = Callable[..., HandshakeEngine]  # conftest's make_client / make_server
Exchange = Callable[..., PairResult]  # conftest's exchange

ALERT_BAD_CERTIFICATE = 42
ALERT_UNKNOWN_PSK_IDENTITY = 115


def _first_send(events: list[Event]) -> SendHandshake:
    return next(e for e in events if isinstance(e, SendHandshake))


# -- the state machine -------------------------------------------------------------


def test_states_of_a_successful_handshake(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = make_client(), make_server()
    before = (client.state, server.state)
    exchange(client, server)
    # A server starts HANDSHAKING: its first input is the ClientHello.
    assert before == (State.IDLE, State.HANDSHAKING)
    assert (client.state, server.state) == (State.COMPLETE, State.COMPLETE)


def test_start_twice_raises(make_client: EngineFactory) -> None:
    client = make_client()
    client.start()
    with pytest.raises(EngineStateError):
        client.start()
    assert client.state is State.HANDSHAKING  # the misuse changed nothing


def test_server_start_raises(make_server: EngineFactory) -> None:
    server = make_server()
    with pytest.raises(EngineStateError):
        server.start()
    assert server.state is State.HANDSHAKING


def test_client_receive_before_start_raises(make_client: EngineFactory) -> None:
    client = make_client()
    with pytest.raises(EngineStateError):
        client.receive(Level.INITIAL, b"\x02\x00\x00\x00")
    assert client.state is State.IDLE


def test_empty_input_is_a_no_op(make_client: EngineFactory, make_server: EngineFactory) -> None:
    client, server = make_client(), make_server()
    client.start()
    assert client.receive(Level.INITIAL, b"") == []
    assert server.receive(Level.INITIAL, b"") == []
    assert client.state is State.HANDSHAKING and server.state is State.HANDSHAKING


def test_receive_after_failure_raises(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = make_client(peer_name="wrong.test"), make_server()
    exchange(client, server)
    assert client.state is State.FAILED and server.state is State.FAILED
    for engine, level in (
        (client, Level.HANDSHAKE),
        (server, Level.HANDSHAKE),
        (client, Level.APP),
    ):
        with pytest.raises(EngineStateError):
            engine.receive(level, b"\x14\x00\x00\x20" + bytes(32))


def test_complete_engines_take_only_a_ticket(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = make_client(), make_server()
    exchange(client, server)
    with pytest.raises(EngineStateError):
        server.receive(Level.APP, b"\x04\x00\x00\x00")  # servers take no post-handshake input
    with pytest.raises(EngineStateError):
        client.receive(Level.HANDSHAKE, b"\x14\x00\x00\x00")  # only APP level after the end
    assert client.state is State.COMPLETE


def test_bad_ticket_is_reported_and_leaves_the_handshake_complete(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client = make_client()
    exchange(client, make_server())
    events = client.receive(Level.APP, b"\x04\x00\x00\x05hello")
    assert len(events) == 1 and isinstance(events[0], HandshakeFailed)
    assert events[0].errno == errno.EACCES and "NewSessionTicket" in events[0].reason
    assert client.state is State.COMPLETE  # the handshake itself succeeded earlier


def test_abort_reports_once(make_client: EngineFactory, make_server: EngineFactory) -> None:
    client, server = make_client(), make_server()
    server.receive(Level.INITIAL, _first_send(client.start()).data)
    for engine in (client, server):
        events = engine.abort(errno.ETIMEDOUT, "handshake timer expired", alert=None)
        assert events == [HandshakeFailed(errno.ETIMEDOUT, None, "handshake timer expired")]
        assert engine.state is State.FAILED
        assert engine.abort(errno.ETIMEDOUT, "again") == []
        assert engine.abort(errno.EIO, "and again", alert=80) == []
        assert engine.peer_alert(ALERT_BAD_CERTIFICATE) == []


def test_abort_of_an_idle_client(make_client: EngineFactory) -> None:
    client = make_client()
    events = client.abort(errno.ENOTCONN, "socket closed", alert=80)
    assert events == [HandshakeFailed(errno.ENOTCONN, 80, "socket closed")]
    with pytest.raises(EngineStateError):
        client.start()


@pytest.mark.parametrize(
    ("alert", "code"),
    [
        (ALERT_UNKNOWN_PSK_IDENTITY, errno.EKEYREJECTED),
        (ALERT_BAD_CERTIFICATE, errno.EACCES),
        (40, errno.EACCES),
        (120, errno.EACCES),
    ],
)
def test_peer_alert_maps_to_done_status(
    alert: int, code: int, make_client: EngineFactory, make_server: EngineFactory
) -> None:
    for engine in (make_client(), make_server()):
        (event,) = engine.peer_alert(alert)
        assert isinstance(event, HandshakeFailed)
        assert event.errno == code
        assert event.alert is None  # we were closed; we send no alert of our own
        assert str(alert) in event.reason
        assert engine.state is State.FAILED


def test_close_is_idempotent_and_ends_input(
    make_client: EngineFactory, make_server: EngineFactory
) -> None:
    client, server = make_client(), make_server()
    hello = _first_send(client.start())
    for engine in (client, server):
        engine.close()
        engine.close()
    with pytest.raises(EngineStateError):
        server.receive(Level.INITIAL, hello.data)
    with pytest.raises(EngineStateError):
        client.receive(Level.INITIAL, b"\x02\x00\x00\x00")
    idle = make_client()
    idle.close()
    with pytest.raises(EngineStateError):
        idle.start()
    # abort() after close() still reports the failure, once.
    assert len(client.abort(errno.EIO, "closed early")) == 1
    assert client.abort(errno.EIO, "closed early") == []


def test_close_after_completion_and_failure(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    ok_client, ok_server = make_client(), make_server(ticket_key=new_ticket_key())
    exchange(ok_client, ok_server)
    bad_client, bad_server = make_client(peer_name="wrong.test"), make_server()
    exchange(bad_client, bad_server)
    for engine in (ok_client, ok_server, bad_client, bad_server):
        engine.close()
        engine.close()
    with pytest.raises(EngineStateError):
        ok_client.receive(Level.APP, b"\x04\x00\x00\x00")


# -- lifetimes -------------------------------------------------------------------------


def _engines_with_private_credentials(
    ca: Issued, server_leaf: Issued, client_leaf: Issued, auth: AuthMode
) -> tuple[HandshakeEngine, HandshakeEngine, list[weakref.ref[object]]]:
    """Engines whose credentials, lookup and anti-replay store nobody else references."""
    ticket_key = new_ticket_key()
    if auth is AuthMode.PSK:
        key = os.urandom(32)
        psk = PskClientCredentials(b"gc-test", key)
        table = {b"gc-test": key}

        def lookup(identity: bytes) -> bytes | None:
            return table.get(identity)

        client_config = EngineConfig(Role.CLIENT, AuthMode.PSK, psk=psk, alpn=(b"gc",))
        server_config = EngineConfig(Role.SERVER, AuthMode.PSK, psk_lookup=lookup, alpn=(b"gc",))
        owned: list[object] = [psk, lookup]
    else:
        client_creds = CertificateCredentials(
            chain=client_leaf.cert_pem, key=client_leaf.key_pem, trust=ca.cert_pem
        )
        server_creds = CertificateCredentials(
            chain=server_leaf.cert_pem, key=server_leaf.key_pem, trust=ca.cert_pem
        )
        anti_replay = AntiReplay()
        client_config = EngineConfig(
            Role.CLIENT,
            AuthMode.X509,
            certificates=client_creds,
            peer_name="server.test",
            alpn=(b"gc",),
        )
        server_config = EngineConfig(
            Role.SERVER,
            AuthMode.X509,
            certificates=server_creds,
            alpn=(b"gc",),
            certificate_request=CertificateRequest.REQUIRE,
            ticket_key=ticket_key,
            early_data=True,
            anti_replay=anti_replay,
        )
        owned = [client_creds, server_creds, anti_replay]
    refs = [weakref.ref(o) for o in owned]
    return (
        HandshakeEngine(client_config, os.urandom(40)),
        HandshakeEngine(server_config, os.urandom(40)),
        refs,
    )


@pytest.mark.parametrize("auth", [AuthMode.X509, AuthMode.PSK])
def test_engines_own_what_gnutls_points_to(
    auth: AuthMode, ca: Issued, server_leaf: Issued, client_leaf: Issued, exchange: Exchange
) -> None:
    client, server = _engines_with_private_credentials(ca, server_leaf, client_leaf, auth)[:2]
    gc.collect()
    # GnuTLS holds raw pointers into these objects: a handshake after a collection
    # would crash (or fail oddly) if the engines did not keep them alive.
    result = exchange(client, server)
    c, s = result.client.complete, result.server.complete
    assert c is not None and s is not None, (result.client.failure, result.server.failure)
    assert c.alpn == s.alpn == b"gc"
    del client, server, result
    gc.collect()


@pytest.mark.parametrize("auth", [AuthMode.X509, AuthMode.PSK])
def test_engines_release_what_they_own(
    auth: AuthMode, ca: Issued, server_leaf: Issued, client_leaf: Issued, exchange: Exchange
) -> None:
    client, server, refs = _engines_with_private_credentials(ca, server_leaf, client_leaf, auth)
    gc.collect()
    assert all(r() is not None for r in refs)  # alive: the engines hold them
    exchange(client, server)
    del client, server
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)  # and nothing else does


# -- configuration checks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"role": Role.CLIENT, "auth": AuthMode.X509, "cipher": 50}, errno.EINVAL),
        ({"role": Role.CLIENT, "auth": AuthMode.X509, "alpn": (b"",)}, errno.EINVAL),
        ({"role": Role.CLIENT, "auth": AuthMode.X509, "alpn": (b"x" * 256,)}, errno.EINVAL),
        ({"role": Role.CLIENT, "auth": AuthMode.PSK}, errno.ENOKEY),
        ({"role": Role.SERVER, "auth": AuthMode.PSK}, errno.ENOKEY),
        ({"role": Role.SERVER, "auth": AuthMode.UNAUTH}, errno.EIO),
        ({"role": Role.CLIENT, "auth": AuthMode.X509, "certificates": None}, errno.EIO),
        ({"role": Role.SERVER, "auth": AuthMode.X509, "ticket_key": b"short"}, errno.EINVAL),
        ({"role": Role.SERVER, "auth": AuthMode.X509, "certificates": "trust-only"}, errno.ENOKEY),
        ({"role": Role.CLIENT, "auth": AuthMode.UNSPEC}, errno.EINVAL),
    ],
)
def test_impossible_configurations_are_refused(
    fields: dict[str, object],
    code: int,
    server_creds: CertificateCredentials,
    trust_creds: CertificateCredentials,
) -> None:
    fields = dict(fields)
    if fields.get("certificates") == "trust-only":
        fields["certificates"] = trust_creds
    else:
        fields.setdefault("certificates", server_creds)
    config = EngineConfig(**fields)  # type: ignore[arg-type]
    with pytest.raises(TlsSetupError) as caught:
        HandshakeEngine(config, b"tp")
    assert caught.value.errno == code


def test_a_config_is_a_plain_value_and_its_engines_share_one_plan(
    server_creds: CertificateCredentials,
) -> None:
    """Making a config builds nothing (no C state, no check: an impossible one is only
    refused by an engine); the first engine plans it, later ones reuse that plan, and
    the plan goes with the config."""
    impossible = EngineConfig(Role.SERVER, AuthMode.X509, certificates=server_creds, cipher=50)
    config = EngineConfig(Role.SERVER, AuthMode.X509, certificates=server_creds)
    assert config == EngineConfig(Role.SERVER, AuthMode.X509, certificates=server_creds)
    assert id(config) not in session_setup._plans and id(impossible) not in session_setup._plans
    first, second = HandshakeEngine(config, b"tp"), HandshakeEngine(config, b"tp")
    plan = session_setup._plans[id(config)]
    assert first._plan is second._plan is plan
    for _ in range(2):  # refused at every engine, never cached
        with pytest.raises(TlsSetupError):
            HandshakeEngine(impossible, b"tp")
    assert id(impossible) not in session_setup._plans
    key = id(config)
    first.close()
    second.close()
    del first, second, config, plan
    gc.collect()
    assert key not in session_setup._plans


# -- secrets stay out of repr() ----------------------------------------------------------


def test_secrets_never_appear_in_repr(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    client_cert_creds: CertificateCredentials,
) -> None:
    ticket_key = new_ticket_key()
    anti_replay = AntiReplay()
    server_fields = {
        "ticket_key": ticket_key,
        "early_data": True,
        "anti_replay": anti_replay,
        "certificate_request": CertificateRequest.REQUIRE,
    }
    first = exchange(make_client(certificates=client_cert_creds), make_server(**server_fields))
    ticket = first.client.ticket
    assert ticket is not None
    second = exchange(
        make_client(certificates=client_cert_creds, session_data=ticket, early_data=True),
        make_server(**server_fields),
    )
    psk_key = os.urandom(32)
    third = exchange(
        make_client(auth=AuthMode.PSK, psk=PskClientCredentials(b"id", psk_key)),
        make_server(auth=AuthMode.PSK, psk_lookup={b"id": psk_key}.get),
    )
    runs = (first, second, third)
    events = [e for r in runs for side in (r.client, r.server) for e in side.events]
    secrets = [e.secret for e in events if isinstance(e, InstallSecret)]
    secrets += [e.data for e in events if isinstance(e, SessionTicket)]
    secrets += [ticket_key, psk_key]
    levels = {(e.level, e.send) for e in events if isinstance(e, InstallSecret)}
    assert (Level.EARLY, True) in levels and (Level.EARLY, False) in levels  # 0-RTT ran
    assert sum(isinstance(e, SessionTicket) for e in events) >= 2
    assert any(isinstance(e, HandshakeComplete) and e.psk_identity for e in events)

    def leaks(text: str) -> list[bytes]:
        return [s for s in secrets if s.hex() in text or repr(s)[2:-1] in text]

    for event in events:
        assert leaks(repr(event)) == [], type(event).__name__
        assert leaks(str(event)) == [], type(event).__name__
    config = make_server(ticket_key=ticket_key).config
    assert leaks(repr(config)) == []
    assert "ticket_key" not in repr(config)
