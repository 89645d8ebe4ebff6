# SPDX-License-Identifier: GPL-2.0-only
"""The socket model's handshake data path, key installation, tickets, tokens and close.

Two model sockets talk real QUIC over 127.0.0.1; a scripted "agent" moves
made-up handshake bytes and random secrets, so every kernel rule can be
checked without TLS getting in the way (the engine runs in test_model_interop).
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from quichsd.quic import sockopt
from quichsd.quic.abi import (
    HANDSHAKE_CMSG_SPACE,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_EOR,
    MSG_MORE,
    MSG_QUIC_STREAM_FIN,
    QUIC_STREAM_INFO,
    RECV_ANCBUF_SIZE,
    SOL_QUIC,
    Config,
    SockOpt,
    StreamInfo,
    TransportError,
    crypto_error,
    handshake_cmsg,
    parse_handshake_level,
)
from quichsd.tls.levels import Cipher, Level
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState

DEADLINE = 5.0
GCM = Cipher.AES_128_GCM


def wait_readable(sock: ModelQuicSocket | ModelQuicListener, timeout: float = DEADLINE) -> None:
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "nothing arrived in time"


def recv(sock: ModelQuicSocket) -> tuple[Level, bytes]:
    wait_readable(sock)
    return sockopt.recv_handshake(sock, dontwait=True)


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@dataclass
class Pair:
    listener: ModelQuicListener
    client: ModelQuicSocket
    server: ModelQuicSocket = field(init=False)
    secrets: dict[tuple[Level, bool], bytes] = field(default_factory=dict)

    def secret(self, level: Level, client_sends: bool) -> bytes:
        return self.secrets.setdefault((level, client_sends), os.urandom(32))

    def install(self, sock: ModelQuicSocket, level: Level, send: bool) -> None:
        client_sends = send if sock is self.client else not send
        sockopt.install_secret(sock, level, send, GCM, self.secret(level, client_sends))

    def start(self) -> None:
        """ClientHello out, server accepted and holding it."""
        sockopt.send_flight(self.client, [(Level.INITIAL, b"ClientHello")])
        self.server = self.listener.accept(timeout=DEADLINE)

    def handshake_keys(self) -> None:
        for sock in (self.server, self.client):
            self.install(sock, Level.HANDSHAKE, True)
            self.install(sock, Level.HANDSHAKE, False)

    def establish(self) -> None:
        """The handshake's order of events, with transport parameters carried across."""
        server, client = self.server, self.client
        assert recv(server) == (Level.INITIAL, b"ClientHello")
        self.install(server, Level.HANDSHAKE, True)
        self.install(server, Level.HANDSHAKE, False)
        server_tp = sockopt.get_transport_param_ext(server)
        sockopt.send_flight(server, [(Level.INITIAL, b"ServerHello"), (Level.HANDSHAKE, server_tp)])
        self.install(server, Level.APP, True)
        assert recv(client) == (Level.INITIAL, b"ServerHello")
        client_tp = sockopt.get_transport_param_ext(client)
        self.install(client, Level.HANDSHAKE, False)
        self.install(client, Level.HANDSHAKE, True)
        assert recv(client) == (Level.HANDSHAKE, server_tp)
        sockopt.set_transport_param_ext(client, server_tp)
        self.install(client, Level.APP, True)
        self.install(client, Level.APP, False)
        assert client.state is SockState.ESTABLISHED
        sockopt.send_flight(client, [(Level.HANDSHAKE, client_tp)])
        assert recv(server) == (Level.HANDSHAKE, client_tp)
        sockopt.set_transport_param_ext(server, client_tp)
        self.install(server, Level.APP, False)
        assert server.state is SockState.ESTABLISHED


@pytest.fixture
def pair() -> Iterator[Pair]:
    before = threading.active_count()
    listener = ModelQuicListener(alpn=[b"x"])
    client = ModelQuicSocket.connect(listener.address, alpn=[b"x"], token=b"old token")
    made = Pair(listener, client)
    try:
        yield made
        failures = client.io_failures + listener.io_failures
        assert failures == []
    finally:
        client.close()
        if hasattr(made, "server"):
            made.server.close()
        listener.close()
    assert threading.active_count() == before


# -- CRYPTO delivery -------------------------------------------------------------------------


def test_crypto_delivery_per_level_with_cmsg(pair: Pair) -> None:
    pair.start()
    server, client = pair.server, pair.client
    data, anc, flags, _ = server.recvmsg(1 << 16, RECV_ANCBUF_SIZE, MSG_DONTWAIT)
    assert (parse_handshake_level(anc), data) == (Level.INITIAL, b"ClientHello")
    assert flags & MSG_EOR
    pair.handshake_keys()
    sockopt.send_flight(server, [(Level.INITIAL, b"ServerHello"), (Level.HANDSHAKE, b"Encrypted")])
    wait_for(lambda: client.kept_packets(Level.HANDSHAKE) == 0, "Handshake data")
    assert recv(client) == (Level.INITIAL, b"ServerHello")
    # Partial reads: the rest of the frame comes next, MSG_EOR only with the last byte.
    wait_readable(client)
    data, anc, flags, _ = client.recvmsg(4, HANDSHAKE_CMSG_SPACE, MSG_DONTWAIT)
    assert (data, parse_handshake_level(anc), flags & MSG_EOR) == (b"Encr", Level.HANDSHAKE, 0)
    data, anc, flags, _ = client.recvmsg(100, HANDSHAKE_CMSG_SPACE, MSG_DONTWAIT)
    assert (data, parse_handshake_level(anc), flags & MSG_EOR) == (
        b"ypted",
        Level.HANDSHAKE,
        MSG_EOR,
    )
    # A control buffer too small for the cmsg: MSG_CTRUNC, which recv_handshake refuses.
    sockopt.send_flight(server, [(Level.HANDSHAKE, b"more")])
    wait_readable(client)
    data, anc, flags, _ = client.recvmsg(100, HANDSHAKE_CMSG_SPACE - 1, MSG_DONTWAIT)
    assert (data, anc, flags & MSG_CTRUNC) == (b"more", [], MSG_CTRUNC)
    assert select.select([client], [], [], 0)[0] == []


def test_msg_more_holds_data_back(pair: Pair) -> None:
    client = pair.client
    client.sendmsg([b"Client"], handshake_cmsg(Level.INITIAL), MSG_MORE)
    with pytest.raises(BlockingIOError):
        pair.listener.accept(timeout=0.1)
    client.sendmsg([b"Hello"], handshake_cmsg(Level.INITIAL), 0)
    pair.server = pair.listener.accept(timeout=DEADLINE)
    assert recv(pair.server) == (Level.INITIAL, b"ClientHello")


def test_packets_before_their_key_are_replayed_at_install(pair: Pair) -> None:
    pair.start()
    server, client = pair.server, pair.client
    recv(server)
    pair.install(server, Level.HANDSHAKE, True)
    sockopt.send_flight(server, [(Level.INITIAL, b"ServerHello"), (Level.HANDSHAKE, b"EE+Cert")])
    assert recv(client) == (Level.INITIAL, b"ServerHello")
    wait_for(lambda: client.kept_packets(Level.HANDSHAKE) > 0, "a kept Handshake packet")
    with pytest.raises(BlockingIOError):
        sockopt.recv_handshake(client, dontwait=True)
    assert select.select([client], [], [], 0)[0] == []
    pair.install(client, Level.HANDSHAKE, False)
    # Processed inside the setsockopt call: no waiting needed.
    assert client.kept_packets(Level.HANDSHAKE) == 0
    assert select.select([client], [], [], 0)[0] == [client]
    assert sockopt.recv_handshake(client, dontwait=True) == (Level.HANDSHAKE, b"EE+Cert")


def test_one_rtt_ticket_before_the_key(pair: Pair) -> None:
    """A NewSessionTicket in a 1-RTT packet that beats the client's 1-RTT receive key."""
    pair.start()
    server, client = pair.server, pair.client
    recv(server)
    pair.install(server, Level.APP, True)
    ticket = _ticket(100, 7)
    sockopt.send_flight(server, [(Level.APP, ticket)])
    sockopt.send_flight(server, [(Level.INITIAL, b"ServerHello")])
    assert recv(client) == (Level.INITIAL, b"ServerHello")
    wait_for(lambda: client.kept_packets(Level.APP) > 0, "a kept 1-RTT packet")
    pair.install(client, Level.APP, True)
    pair.install(client, Level.APP, False)  # clears the stored ticket, then replays
    assert client.kept_packets(Level.APP) == 0
    assert sockopt.get_session_ticket(client) == ticket


# -- ESTABLISHED -------------------------------------------------------------------------------


def test_established_rules(pair: Pair) -> None:
    pair.start()
    pair.establish()
    server, client = pair.server, pair.client
    for sock in (server, client):
        with pytest.raises(OSError) as exc:
            sockopt.get_transport_param_ext(sock)
        assert exc.value.errno == errno.EINVAL
        with pytest.raises(OSError) as exc:
            sockopt.set_config(sock, Config(receive_session_ticket=1))
        assert exc.value.errno == errno.EINVAL
        with pytest.raises(OSError) as exc:
            sockopt.install_secret(sock, Level.APP, True, GCM, os.urandom(32))
        assert exc.value.errno == errno.EINVAL
    # A server drops its Handshake keys at completion; a client once HANDSHAKE_DONE came.
    with pytest.raises(OSError) as exc:
        sockopt.send_handshake(server, Level.HANDSHAKE, b"late", more=False)
    assert exc.value.errno == errno.EINVAL
    wait_for(lambda: client._session.conn._handshake_confirmed, "HANDSHAKE_DONE")
    # The server sent NEW_TOKEN too; the token replaces the one the 1-RTT key cleared.
    wait_for(lambda: sockopt.get_token(client) != b"", "NEW_TOKEN")
    first = sockopt.get_token(client)
    assert len(first) == 32

    def second_token_refused() -> bool:
        with server._session.lock:  # deterministic: no ACK is processed in between
            try:  # EAGAIN until the client's ACK of the first NEW_TOKEN is in
                sockopt.set_token(server, b"fresh token")
            except BlockingIOError:
                return False
            with pytest.raises(BlockingIOError):
                sockopt.set_token(server, b"another")
            return True

    wait_for(second_token_refused, "the first NEW_TOKEN's ACK")
    wait_for(lambda: sockopt.get_token(client) == b"fresh token", "the second NEW_TOKEN")


def test_streams_after_the_handshake(pair: Pair) -> None:
    pair.start()
    pair.establish()
    server, client = pair.server, pair.client
    stream = StreamInfo(-1, MSG_QUIC_STREAM_FIN).pack()
    assert client.sendmsg([b"echo me"], [(SOL_QUIC, QUIC_STREAM_INFO, stream)], 0) == 7
    wait_readable(server)
    data, anc, flags, _ = server.recvmsg(100, RECV_ANCBUF_SIZE, MSG_DONTWAIT)
    assert data == b"echo me"
    assert anc[0][:2] == (SOL_QUIC, QUIC_STREAM_INFO)
    info = StreamInfo.unpack(anc[0][2])
    assert (info.stream_id, info.stream_flags, flags & MSG_EOR) == (0, MSG_QUIC_STREAM_FIN, MSG_EOR)
    server.send_stream(0, data, fin=True)
    assert client.recv_stream(timeout=DEADLINE) == (0, b"echo me", True)
    with pytest.raises(OSError) as exc:  # stream data needs a stream cmsg in the model
        client.sendmsg([b"x"], [], 0)
    assert exc.value.errno == errno.EINVAL
    client.setsockopt(SOL_QUIC, int(SockOpt.KEY_UPDATE), b"")
    client.send_stream(4, b"after key update", fin=True)
    assert server.recv_stream(timeout=DEADLINE) == (4, b"after key update", True)


# -- tickets and the 1-RTT receive key ----------------------------------------------------------


def test_app_receive_key_clears_ticket_and_token(pair: Pair) -> None:
    data = os.urandom(100)
    with ModelQuicSocket.connect(pair.listener.address, session_ticket=data, token=b"tok") as sock:
        sockopt.send_flight(sock, [(Level.INITIAL, b"CH")])
        with pair.listener.accept(timeout=DEADLINE) as server:
            recv(server)
            pair.install(sock, Level.APP, True)
            assert sockopt.get_session_ticket(sock) == data  # read it before the receive key
            assert sockopt.get_token(sock) == b"tok"
            pair.install(sock, Level.APP, False)
            assert sock.state is SockState.ESTABLISHED
            assert sockopt.get_session_ticket(sock) == b""
            assert sockopt.get_token(sock) == b""


def _ticket(size: int, tag: int) -> bytes:
    return bytes([4]) + size.to_bytes(3, "big") + bytes([tag]) * size


def test_new_session_ticket_is_stored_not_delivered(pair: Pair) -> None:
    pair.start()
    pair.establish()
    server, client = pair.server, pair.client
    first, second = _ticket(200, 1), _ticket(50, 2)
    sockopt.send_flight(server, [(Level.APP, first[:100])])
    sockopt.send_flight(server, [(Level.APP, first[100:] + second)])
    wait_for(lambda: sockopt.get_session_ticket(client) != b"", "the NewSessionTicket")
    assert sockopt.get_session_ticket(client) == first  # only the first, only once complete
    with pytest.raises(BlockingIOError):  # CRYPTO at 1-RTT never comes out of recvmsg
        sockopt.recv_handshake(client, dontwait=True)
    refreshed = os.urandom(120)
    sockopt.set_session_ticket(client, refreshed)  # the agent's session data
    assert sockopt.get_session_ticket(client) == refreshed
    # The server's key was cleared by its 1-RTT receive key: the derived default is back.
    assert len(sockopt.get_session_ticket(server)) == 64


# -- closing -------------------------------------------------------------------------------------


def test_peer_close_gives_enotconn_and_its_code(pair: Pair) -> None:
    pair.start()
    server, client = pair.server, pair.client
    sockopt.send_flight(server, [(Level.INITIAL, b"ServerHello")])
    sockopt.set_connection_close(server, crypto_error(42), "bad certificate")
    server.close()
    wait_readable(client)
    assert sockopt.recv_handshake(client, dontwait=True) == (Level.INITIAL, b"ServerHello")
    wait_for(lambda: client.state is SockState.CLOSED, "the peer's CONNECTION_CLOSE")
    assert select.select([client], [], [], 0)[0] == [client]
    with pytest.raises(OSError) as exc:
        sockopt.recv_handshake(client, dontwait=True)
    assert exc.value.errno == errno.ENOTCONN
    close = sockopt.get_connection_close(client)
    assert (close.errcode, close.phrase) == (0x100 + 42, b"bad certificate")
    with pytest.raises(OSError) as exc:
        sockopt.send_handshake(client, Level.INITIAL, b"x", more=False)
    assert exc.value.errno == errno.EPIPE


def test_close_while_establishing_defaults_to_application_error(pair: Pair) -> None:
    pair.start()
    pair.client.close()
    server = pair.server
    wait_for(lambda: server.state is SockState.CLOSED, "the client's CONNECTION_CLOSE")
    assert sockopt.recv_handshake(server, dontwait=True) == (Level.INITIAL, b"ClientHello")
    with pytest.raises(OSError) as exc:
        sockopt.recv_handshake(server, dontwait=True)
    assert exc.value.errno == errno.ENOTCONN
    assert sockopt.get_connection_close(server).errcode == TransportError.APPLICATION


def test_bad_peer_transport_parameters_close_with_0x08(pair: Pair) -> None:
    pair.start()
    server, client = pair.server, pair.client
    recv(server)
    with pytest.raises(OSError) as exc:
        sockopt.set_transport_param_ext(server, b"\x01\x08\x01")  # truncated parameter
    assert exc.value.errno == errno.EINVAL
    assert server.state is SockState.CLOSED
    wait_for(lambda: client.state is SockState.CLOSED, "CONNECTION_CLOSE")
    assert sockopt.get_connection_close(client).errcode == TransportError.TRANSPORT_PARAM


def test_accepted_socket_outlives_its_listener(pair: Pair) -> None:
    pair.start()
    pair.establish()
    pair.listener.close()
    with pytest.raises(OSError):
        pair.listener.accept(timeout=0)
    pair.client.send_stream(0, b"still here", fin=True)
    assert pair.server.recv_stream(timeout=DEADLINE) == (0, b"still here", True)


def test_closed_socket_refuses_calls(pair: Pair) -> None:
    client = pair.client
    client.close()
    client.close()  # idempotent
    assert client.fileno() == -1
    for call in (
        lambda: client.recvmsg(10, 64, MSG_DONTWAIT),
        lambda: client.sendmsg([b"x"], handshake_cmsg(Level.INITIAL), 0),
        lambda: sockopt.get_alpn(client),
    ):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EBADF


def test_no_busy_loop_while_an_ack_waits_for_its_send_key(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client installed its Handshake receive key only: the ACK it owes must wait."""
    from quichsd.userspace.endpoint import Endpoint

    pair.start()
    server, client = pair.server, pair.client
    recv(server)
    pair.install(server, Level.HANDSHAKE, True)
    sockopt.send_flight(server, [(Level.INITIAL, b"SH"), (Level.HANDSHAKE, b"EE")])
    assert recv(client) == (Level.INITIAL, b"SH")
    wait_for(lambda: client.kept_packets(Level.HANDSHAKE) > 0, "a kept Handshake packet")
    pair.install(client, Level.HANDSHAKE, False)
    rounds = [0]
    fire = Endpoint._fire_timers

    def counting(self: Endpoint) -> None:
        rounds[0] += 1
        fire(self)

    monkeypatch.setattr(Endpoint, "_fire_timers", counting)
    time.sleep(0.2)
    assert rounds[0] < 50, f"the I/O threads woke {rounds[0]} times in 0.2 s"
