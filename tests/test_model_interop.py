# SPDX-License-Identifier: GPL-2.0-only
"""Our engine on the socket model against unmodified aioquic, both ways, over 127.0.0.1.

``run_handshake`` is a minimal agent loop (poll the fd, recv_handshake,
engine.receive, act on the events through ``quichsd.quic.sockopt``): just
enough to prove the model; the real driver lives in ``quichsd.quic.driver``.
"""

from __future__ import annotations

import asyncio
import errno
import select
import threading
import time
from collections.abc import Iterator

import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket as AioquicTicket
from interop_support import AioquicServer, LoopThread

from quichsd.quic import sockopt
from quichsd.quic.abi import Config, TransportError, crypto_error
from quichsd.tls import (
    AlpnNegotiated,
    AuthMode,
    CertificateCredentials,
    EngineConfig,
    HandshakeComplete,
    HandshakeEngine,
    HandshakeFailed,
    InstallSecret,
    Level,
    PeerTransportParameters,
    Role,
    SendHandshake,
    SessionTicket,
    State,
)
from quichsd.tls.events import Event
from quichsd.tls.selfsigned import Issued
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState
from tests.support import streams

SERVER_NAME = "server.test"
ALPN = b"echo"
DEADLINE = 5.0


# -- the minimal agent loop -----------------------------------------------------------------


def _act(sock: ModelQuicSocket, events: list[Event], log: list[Event]) -> None:
    flight: list[tuple[int, bytes]] = []
    for event in events:
        log.append(event)
        if isinstance(event, InstallSecret):
            sockopt.install_secret(sock, event.level, event.send, event.cipher, event.secret)
        elif isinstance(event, SendHandshake):
            flight.append((event.level, event.data))
        elif isinstance(event, PeerTransportParameters):
            sockopt.set_transport_param_ext(sock, event.data)
        elif isinstance(event, AlpnNegotiated) and sock.is_server:
            sockopt.set_alpn(sock, [event.protocol])
        elif isinstance(event, SessionTicket):
            sockopt.set_session_ticket(sock, event.data)
        elif isinstance(event, HandshakeFailed) and event.alert is not None:
            sockopt.set_connection_close(sock, crypto_error(event.alert))
    if flight:
        sockopt.send_flight(sock, flight)


def run_handshake(
    sock: ModelQuicSocket, engine: HandshakeEngine, *, ticket_wait: float = 0.0
) -> list[Event]:
    """Drives ``engine`` over ``sock`` until it completes or fails; returns its events."""
    log: list[Event] = []
    if engine.config.role is Role.CLIENT:
        _act(sock, engine.start(), log)
    deadline = time.monotonic() + DEADLINE
    while engine.state is State.HANDSHAKING:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"handshake stuck; events so far: {log}"
        ready, _, _ = select.select([sock], [], [], remaining)
        while ready and engine.state is State.HANDSHAKING:
            try:
                level, data = sockopt.recv_handshake(sock, dontwait=True)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise
                code = sockopt.get_connection_close(sock).errcode  # the peer's
                if TransportError.CRYPTO <= code < TransportError.CRYPTO + 0x100:
                    log.extend(engine.peer_alert(code - TransportError.CRYPTO))
                else:
                    log.extend(engine.abort(errno.ENOTCONN, f"peer closed with {code:#x}"))
                break
            _act(sock, engine.receive(level, data), log)
    if engine.state is State.COMPLETE and not sock.is_server and ticket_wait:
        stop = time.monotonic() + ticket_wait
        while time.monotonic() < stop:  # tlshd's poll of SESSION_TICKET, every 10 ms here
            ticket = sockopt.get_session_ticket(sock)
            if ticket:
                _act(sock, engine.receive(Level.APP, ticket), log)
                break
            time.sleep(0.01)
    return log


def _client_engine(
    trust: CertificateCredentials, tp: bytes, session: bytes | None = None
) -> HandshakeEngine:
    config = EngineConfig(
        role=Role.CLIENT,
        auth=AuthMode.X509,
        certificates=trust,
        peer_name=SERVER_NAME,
        alpn=(ALPN,),
    )
    return HandshakeEngine(config, tp, session or None)


def _server_engine(creds: CertificateCredentials, tp: bytes, ticket_key: bytes) -> HandshakeEngine:
    config = EngineConfig(
        role=Role.SERVER,
        auth=AuthMode.X509,
        certificates=creds,
        alpn=(ALPN,),
        ticket_key=ticket_key,
    )
    return HandshakeEngine(config, tp)


def _complete(log: list[Event]) -> HandshakeComplete:
    done = [e for e in log if isinstance(e, HandshakeComplete)]
    assert done, f"no HandshakeComplete in {log}"
    return done[0]


# -- an asyncio loop in a thread, for aioquic -----------------------------------------------


@pytest.fixture
def aio() -> Iterator[LoopThread]:
    loop = LoopThread("aioquic", wait=DEADLINE)
    yield loop
    loop.stop()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    before = threading.active_count()
    yield
    deadline = time.monotonic() + DEADLINE
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


# -- our client on the model, aioquic server ----------------------------------------------------


def _echo_over(sock: ModelQuicSocket, message: bytes) -> bytes:
    return streams.echo_over(sock, message, DEADLINE)


@pytest.mark.parametrize("retry", [False, True], ids=["plain", "retry"])
def test_our_client_on_model_against_aioquic_server(
    no_leaks: None,
    aio: LoopThread,
    server_leaf: Issued,
    ca: Issued,
    trust_creds: CertificateCredentials,
    retry: bool,
) -> None:
    server = AioquicServer(aio, server_leaf, ca, retry=retry)
    try:
        with ModelQuicSocket.connect(server.address, alpn=[ALPN], server_name=SERVER_NAME) as sock:
            assert sockopt.get_session_ticket(sock) == b""
            engine = _client_engine(trust_creds, sockopt.get_transport_param_ext(sock))
            log = run_handshake(sock, engine, ticket_wait=DEADLINE)
            done = _complete(log)
            assert done.alpn == ALPN
            assert sock.state is SockState.ESTABLISHED
            assert sock._session.conn is not None
            assert sock._session.conn._retry_count == int(retry)  # the ClientHello went twice
            assert _echo_over(sock, b"hello over the model") == b"hello over the model"
            tickets = [e for e in log if isinstance(e, SessionTicket)]
            assert tickets, "the aioquic server's NewSessionTicket never reached the engine"
            assert sockopt.get_session_ticket(sock) == tickets[0].data  # the agent's refresh
            session_data = tickets[0].data
            assert sock.io_failures == []
            engine.close()
        # Resumption: the stored session data goes in through SESSION_TICKET.
        with ModelQuicSocket.connect(
            server.address, alpn=[ALPN], session_ticket=session_data, server_name=SERVER_NAME
        ) as sock:
            stored = sockopt.get_session_ticket(sock)
            assert stored == session_data
            engine = _client_engine(trust_creds, sockopt.get_transport_param_ext(sock), stored)
            done = _complete(run_handshake(sock, engine))
            assert done.resumed
            assert _echo_over(sock, b"again") == b"again"
            engine.close()
    finally:
        server.close()


# -- aioquic client, our server on the model ----------------------------------------------------


async def _aioquic_echo_client(
    port: int, ca: Issued, message: bytes, tickets: list[AioquicTicket]
) -> bytes:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN.decode()], server_name=SERVER_NAME, cadata=ca.cert_pem
    )
    async with connect(
        "127.0.0.1", port, configuration=config, session_ticket_handler=tickets.append
    ) as client:
        assert isinstance(client, QuicConnectionProtocol)
        reader, writer = await client.create_stream()
        writer.write(message)
        writer.write_eof()
        reply = await reader.read()
        for _ in range(100):  # give the ticket a moment, it follows HANDSHAKE_DONE
            if tickets:
                break
            await asyncio.sleep(0.01)
        return reply


def _serve_one(listener: ModelQuicListener, creds: CertificateCredentials) -> ModelQuicSocket:
    sock = listener.accept(timeout=DEADLINE)
    assert sockopt.get_alpn(sock) == (ALPN,)
    key = sockopt.get_session_ticket(sock)
    assert len(key) == 64
    engine = _server_engine(creds, sockopt.get_transport_param_ext(sock), key)
    log = run_handshake(sock, engine)
    assert _complete(log).alpn == ALPN
    assert sock.state is SockState.ESTABLISHED
    assert sockopt.get_alpn(sock) == (ALPN,)
    engine.close()
    sid, data, fin = sock.recv_stream(timeout=DEADLINE)
    while not fin:
        more_sid, more, fin = sock.recv_stream(timeout=DEADLINE)
        assert more_sid == sid
        data += more
    sock.send_stream(sid, data, fin=True)
    return sock


def test_aioquic_client_against_our_server_on_model(
    no_leaks: None, aio: LoopThread, ca: Issued, server_creds: CertificateCredentials
) -> None:
    with ModelQuicListener(alpn=[ALPN], config=Config(receive_session_ticket=1)) as listener:
        tickets: list[AioquicTicket] = []
        reply = aio.submit(_aioquic_echo_client(listener.address[1], ca, b"ping", tickets))
        with _serve_one(listener, server_creds) as sock:
            assert reply.result(DEADLINE) == b"ping"
            assert tickets, "aioquic got no NewSessionTicket from our server"
            assert sock.io_failures == []
        # A second connection resumes with the ticket our engine issued.
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN.decode()],
            server_name=SERVER_NAME,
            cadata=ca.cert_pem,
            session_ticket=tickets[0],
        )

        async def resume() -> bool:
            async with connect("127.0.0.1", listener.address[1], configuration=config) as client:
                reader, writer = await client.create_stream()
                writer.write(b"pong")
                writer.write_eof()
                assert await reader.read() == b"pong"
                assert client._quic.tls is not None
                return bool(client._quic.tls.session_resumed)

        resumed = aio.submit(resume())
        with _serve_one(listener, server_creds):
            assert resumed.result(DEADLINE)
        assert listener.io_failures == []


def test_aioquic_client_refusing_our_certificate(
    no_leaks: None, aio: LoopThread, other_ca: Issued, server_creds: CertificateCredentials
) -> None:
    """aioquic closes with CRYPTO_ERROR: the model says ENOTCONN and keeps the code."""
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = aio.submit(_aioquic_echo_client(listener.address[1], other_ca, b"x", []))
        with listener.accept(timeout=DEADLINE) as sock:
            key = sockopt.get_session_ticket(sock)
            engine = _server_engine(server_creds, sockopt.get_transport_param_ext(sock), key)
            log = run_handshake(sock, engine)
            failed = [e for e in log if isinstance(e, HandshakeFailed)]
            assert failed, log
            assert sock.state is SockState.CLOSED
            close = sockopt.get_connection_close(sock)
            assert close.errcode == crypto_error(42)  # aioquic: bad_certificate
            engine.close()
        with pytest.raises(ConnectionError):
            client.result(DEADLINE)
