# SPDX-License-Identifier: GPL-2.0-only
"""The socket model's option semantics and refusals
(docs/kernel-abi.md §QUIC-OPTIONS, §QUIC-HANDSHAKE-IO and §QUIC-SECRETS).

Most checks need no peer handshake: a client connected to a model listener is
ESTABLISHING, which is where the agent works.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Iterator

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.packet import pull_quic_transport_parameters

from quichsd.quic import sockopt
from quichsd.quic.abi import (
    MSG_DONTWAIT,
    MSG_MORE,
    QUIC_HANDSHAKE_INFO,
    QUIC_VERSION_V2,
    SOL_QUIC,
    Config,
    ConnectionClose,
    CryptoSecret,
    SockOpt,
    TransportParam,
    handshake_cmsg,
)
from quichsd.tls.levels import Cipher, Level
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState

DEADLINE = 5.0


@pytest.fixture
def listener() -> Iterator[ModelQuicListener]:
    before = threading.active_count()
    with ModelQuicListener(alpn=[b"h3", b"echo"]) as lst:
        yield lst
    assert threading.active_count() == before


@pytest.fixture
def client(listener: ModelQuicListener) -> Iterator[ModelQuicSocket]:
    with ModelQuicSocket.connect(listener.address, alpn=[b"echo"]) as sock:
        yield sock
        assert sock.io_failures == []


def _errno_of(exc: pytest.ExceptionInfo[OSError]) -> int | None:
    return exc.value.errno


def _raw_set(sock: ModelQuicSocket | ModelQuicListener, option: SockOpt, value: bytes) -> int:
    """setsockopt straight on the object; returns 0 or the errno."""
    try:
        sock.setsockopt(SOL_QUIC, int(option), value)
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno
    return 0


def _secret(level: int, send: bool, cipher: int, size: int) -> bytes:
    return bytes(CryptoSecret(level, send, cipher, os.urandom(size)).pack())


# -- generic ---------------------------------------------------------------------------------


def test_unknown_and_unemulated_options(client: ModelQuicSocket) -> None:
    with pytest.raises(OSError) as exc:
        client.getsockopt(SOL_QUIC, 99, 16)
    assert _errno_of(exc) == errno.ENOPROTOOPT
    with pytest.raises(OSError) as exc:
        client.getsockopt(1, int(SockOpt.ALPN), 16)  # SOL_SOCKET
    assert _errno_of(exc) == errno.ENOPROTOOPT
    assert _raw_set(client, SockOpt.EVENT, b"\x01\x01") == errno.EOPNOTSUPP
    assert _raw_set(client, SockOpt.ALPN, b"a" * 4097) == errno.EINVAL
    with pytest.raises(OSError) as exc:  # set-only
        client.getsockopt(SOL_QUIC, int(SockOpt.CRYPTO_SECRET), 56)
    assert _errno_of(exc) == errno.ENOPROTOOPT


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        ModelQuicSocket.connect(("0.0.0.0", 4433))
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        ModelQuicListener(("::1", 0))


# -- CRYPTO_SECRET --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "cipher", "size", "err"),
    [
        (Level.INITIAL, Cipher.AES_128_GCM, 32, errno.EINVAL),
        (4, Cipher.AES_128_GCM, 32, errno.EINVAL),
        (Level.HANDSHAKE, 50, 32, errno.EINVAL),
        (Level.HANDSHAKE, 55, 32, errno.EINVAL),
        (Level.HANDSHAKE, Cipher.AES_128_GCM, 48, errno.EINVAL),
        (Level.HANDSHAKE, Cipher.CHACHA20_POLY1305, 48, errno.EINVAL),
        (Level.HANDSHAKE, Cipher.AES_256_GCM, 32, errno.EINVAL),
        (Level.HANDSHAKE, Cipher.AES_128_CCM, 32, errno.EOPNOTSUPP),
        (Level.HANDSHAKE, Cipher.AES_256_GCM, 48, 0),
        (Level.APP, Cipher.CHACHA20_POLY1305, 32, 0),
        (Level.EARLY, Cipher.AES_128_GCM, 32, 0),
    ],
)
def test_crypto_secret_checks(
    client: ModelQuicSocket, level: int, cipher: int, size: int, err: int
) -> None:
    assert _raw_set(client, SockOpt.CRYPTO_SECRET, _secret(level, True, cipher, size)) == err


def test_crypto_secret_state_and_level_rules(listener: ModelQuicListener) -> None:
    with ModelQuicSocket.client() as unconnected:  # CLOSED
        value = _secret(Level.HANDSHAKE, True, Cipher.AES_128_GCM, 32)
        assert _raw_set(unconnected, SockOpt.CRYPTO_SECRET, value) == errno.EINVAL
    assert _raw_set(listener, SockOpt.CRYPTO_SECRET, value) == errno.EINVAL
    with ModelQuicSocket.connect(listener.address) as sock:
        assert _raw_set(sock, SockOpt.CRYPTO_SECRET, value[:55]) == errno.EINVAL
        assert _raw_set(sock, SockOpt.CRYPTO_SECRET, value) == 0
        assert _raw_set(sock, SockOpt.CRYPTO_SECRET, value) == errno.EINVAL  # twice
        other = _secret(Level.HANDSHAKE, False, Cipher.CHACHA20_POLY1305, 32)
        assert _raw_set(sock, SockOpt.CRYPTO_SECRET, other) == errno.EINVAL  # cipher is fixed
        same = _secret(Level.HANDSHAKE, False, Cipher.AES_128_GCM, 32)
        assert _raw_set(sock, SockOpt.CRYPTO_SECRET, same) == 0


# -- the handshake send path -----------------------------------------------------------------


def test_sendmsg_refusals(client: ModelQuicSocket) -> None:
    def send(level: int, data: bytes, flags: int = 0) -> int:
        try:
            client.sendmsg([data], handshake_cmsg(level), flags)
        except OSError as exc:
            assert exc.errno is not None
            return exc.errno
        return 0

    assert send(Level.EARLY, b"x") == errno.EINVAL
    assert send(Level.HANDSHAKE, b"x") == errno.EINVAL  # no HANDSHAKE send key yet
    assert send(Level.APP, b"x") == errno.EINVAL
    assert send(Level.INITIAL, b"") == errno.EMSGSIZE
    assert send(Level.INITIAL, b"x", 0x1) == errno.EINVAL  # MSG_OOB is not allowed
    with pytest.raises(OSError) as exc:
        client.sendmsg([b"x"], [(SOL_QUIC, QUIC_HANDSHAKE_INFO, b"\x07")], 0)
    assert _errno_of(exc) == errno.EINVAL
    assert send(Level.INITIAL, b"x", MSG_MORE) == 0
    client.setsockopt(SOL_QUIC, int(SockOpt.CRYPTO_SECRET), _secret(2, True, 51, 32))
    assert send(Level.HANDSHAKE, b"y", MSG_MORE) == 0


def test_recvmsg_would_block(client: ModelQuicSocket) -> None:
    with pytest.raises(BlockingIOError):
        client.recvmsg(100, 64, MSG_DONTWAIT)
    with pytest.raises(BlockingIOError):
        sockopt.recv_handshake(client, dontwait=True)
    client.settimeout(0.05)
    start = time.monotonic()
    with pytest.raises(BlockingIOError):
        client.recvmsg(100, 64, 0)
    assert time.monotonic() - start >= 0.04
    assert select.select([client], [], [], 0) == ([], [], [])


# -- CONFIG, ALPN, TOKEN, SESSION_TICKET --------------------------------------------------------


def test_config_applies_only_nonzero_fields(client: ModelQuicSocket) -> None:
    start = sockopt.get_config(client)
    assert start.version == 1
    assert start.initial_smoothed_rtt == 333_000
    sockopt.set_config(client, Config(receive_session_ticket=5, certificate_request=2))
    sockopt.set_config(client, Config(payload_cipher_type=Cipher.AES_256_GCM))
    got = sockopt.get_config(client)
    assert (got.receive_session_ticket, got.certificate_request) == (5, 2)
    assert got.payload_cipher_type == Cipher.AES_256_GCM
    assert got.version == 1
    ktls = client.getsockopt(SOL_QUIC, int(SockOpt.CONFIG), 24)
    assert Config.unpack(ktls).receive_session_ticket == 5
    for bad in (
        Config(version=7),
        Config(payload_cipher_type=50),
        Config(initial_smoothed_rtt=999),
        Config(plpmtud_probe_interval=1000),
        Config(keepalive_probe_interval=10),
        Config(congestion_control_algo=2),
    ):
        assert _raw_set(client, SockOpt.CONFIG, bad.pack()) == errno.EINVAL


def test_listener_options_are_inherited() -> None:
    config = Config(certificate_request=1, receive_session_ticket=3)
    local = TransportParam(max_streams_bidi=3)
    key = os.urandom(64)
    with ModelQuicListener(
        alpn=["smb"], config=config, transport_param=local, session_ticket=key
    ) as listener:
        assert sockopt.get_config(listener).certificate_request == 1
        sockopt.set_config(listener, Config(stream_data_nodelay=True))
        with ModelQuicSocket.connect(listener.address) as sock:
            sockopt.send_flight(sock, [(Level.INITIAL, b"hello")])
            with listener.accept(timeout=DEADLINE) as server:
                got = sockopt.get_config(server)
                assert (got.certificate_request, got.stream_data_nodelay) == (1, True)
                assert sockopt.get_alpn(server) == (b"smb",)
                assert sockopt.get_transport_param(server).max_streams_bidi == 3
                assert sockopt.get_session_ticket(server) == key
                sockopt.set_alpn(server, ["smb"])  # the agent reports the selected one


def test_config_version_reaches_the_wire(listener: ModelQuicListener) -> None:
    with ModelQuicSocket.connect(listener.address, config=Config(version=QUIC_VERSION_V2)) as sock:
        assert sockopt.get_config(sock).version == QUIC_VERSION_V2
        sockopt.send_flight(sock, [(Level.INITIAL, b"hello v2")])
        with listener.accept(timeout=DEADLINE) as server:
            assert sockopt.recv_handshake(server, dontwait=True) == (Level.INITIAL, b"hello v2")


def test_alpn(listener: ModelQuicListener, client: ModelQuicSocket) -> None:
    assert sockopt.get_alpn(listener) == (b"h3", b"echo")
    assert _raw_set(listener, SockOpt.ALPN, b"h2") == errno.EINVAL  # LISTENING
    client.setsockopt(SOL_QUIC, int(SockOpt.ALPN), b"h3, smb,  nfs")
    assert client.getsockopt(SOL_QUIC, int(SockOpt.ALPN), 64) == b"h3,smb,nfs"
    with pytest.raises(OSError) as exc:
        client.getsockopt(SOL_QUIC, int(SockOpt.ALPN), 10)  # internal: 3 + 4 + 4 bytes
    assert _errno_of(exc) == errno.EINVAL
    assert client.getsockopt(SOL_QUIC, int(SockOpt.ALPN), 11) == b"h3,smb,nfs"
    assert _raw_set(client, SockOpt.ALPN, b"") == errno.EINVAL
    assert _raw_set(client, SockOpt.ALPN, b"a" * 129) == errno.EINVAL
    with ModelQuicSocket.client() as fresh:
        assert fresh.getsockopt(SOL_QUIC, int(SockOpt.ALPN), 0) == b""


def test_token(listener: ModelQuicListener) -> None:
    with ModelQuicSocket.connect(listener.address, token=b"T" * 120) as sock:
        assert sockopt.get_token(sock) == b"T" * 120
        assert _raw_set(sock, SockOpt.TOKEN, b"T" * 121) == errno.EINVAL
        assert _raw_set(sock, SockOpt.TOKEN, b"") == errno.EINVAL
        with pytest.raises(OSError) as exc:
            sock.getsockopt(SOL_QUIC, int(SockOpt.TOKEN), 100)
        assert _errno_of(exc) == errno.EINVAL
        sockopt.send_flight(sock, [(Level.INITIAL, b"hello")])
        with listener.accept(timeout=DEADLINE) as server:
            with pytest.raises(OSError) as exc:
                sockopt.get_token(server)
            assert _errno_of(exc) == errno.EINVAL
            assert _raw_set(server, SockOpt.TOKEN, b"new") == errno.EINVAL  # not established
    with pytest.raises(OSError) as exc:
        sockopt.get_token(listener)
    assert _errno_of(exc) == errno.EINVAL


def test_session_ticket(listener: ModelQuicListener) -> None:
    data = os.urandom(300)
    with ModelQuicSocket.connect(listener.address, session_ticket=data) as sock:
        assert sockopt.get_session_ticket(sock) == data
        assert _raw_set(sock, SockOpt.SESSION_TICKET, b"x" * 63) == errno.EINVAL
        assert _raw_set(sock, SockOpt.SESSION_TICKET, b"x" * 4097) == errno.EINVAL
        with pytest.raises(OSError) as exc:
            sock.getsockopt(SOL_QUIC, int(SockOpt.SESSION_TICKET), 299)
        assert _errno_of(exc) == errno.EINVAL
        sockopt.send_flight(sock, [(Level.INITIAL, b"hello")])
        with listener.accept(timeout=DEADLINE) as server:
            key = sockopt.get_session_ticket(server)
            assert len(key) == 64
            override = os.urandom(64)
            sockopt.set_session_ticket(server, override)
            assert sockopt.get_session_ticket(server) == override
    with pytest.raises(OSError) as exc:
        sockopt.get_session_ticket(listener)
    assert _errno_of(exc) == errno.EPIPE
    with ModelQuicSocket.connect(listener.address) as again:  # same address: same derived key
        sockopt.send_flight(again, [(Level.INITIAL, b"hello")])
        with listener.accept(timeout=DEADLINE) as server:
            assert sockopt.get_session_ticket(server) == key


# -- transport parameters ------------------------------------------------------------------


def test_transport_param_local_and_remote(client: ModelQuicSocket) -> None:
    assert sockopt.get_transport_param(client) == TransportParam()
    peer = sockopt.get_transport_param(client, remote=True)
    assert peer.remote
    assert peer.max_data == 0
    sockopt.set_transport_param(client, TransportParam(max_data=0, max_streams_bidi=7))
    local = sockopt.get_transport_param(client)
    assert (local.max_data, local.max_streams_bidi) == (2_097_152, 7)
    for bad in (
        TransportParam(max_udp_payload_size=1199),
        TransportParam(ack_delay_exponent=21),
        TransportParam(max_ack_delay=16_384_000),
        TransportParam(active_connection_id_limit=9),
        TransportParam(max_idle_timeout=999_999),
        TransportParam(max_data=0x20000000),
        TransportParam(max_stream_data_uni=1000),
        TransportParam(max_streams_uni=4097),
        TransportParam(max_datagram_frame_size=1000),
    ):
        assert _raw_set(client, SockOpt.TRANSPORT_PARAM, bad.pack()) == errno.EINVAL, bad
    sockopt.set_transport_param(client, TransportParam(remote=True, max_streams_uni=5000))
    assert sockopt.get_transport_param(client, remote=True).max_streams_uni == 4096  # clamped
    with ModelQuicSocket.client() as fresh:  # remote only while ESTABLISHING
        assert _raw_set(fresh, SockOpt.TRANSPORT_PARAM, TransportParam(remote=True).pack()) == (
            errno.EINVAL
        )


def test_transport_param_ext_encodes_local_parameters(listener: ModelQuicListener) -> None:
    local = TransportParam(
        max_data=123_456,
        max_streams_bidi=9,
        max_idle_timeout=5_000_000,
        max_ack_delay=40_000,
        max_udp_payload_size=1500,
        grease_quic_bit=True,
    )
    with ModelQuicSocket.client() as sock:
        with pytest.raises(OSError) as exc:  # only while ESTABLISHING
            sockopt.get_transport_param_ext(sock)
        assert _errno_of(exc) == errno.EINVAL
        sockopt.set_transport_param(sock, local)
        sock.connect_to(listener.address)
        body = sockopt.get_transport_param_ext(sock)
        with pytest.raises(OSError) as exc:
            sock.getsockopt(SOL_QUIC, int(SockOpt.TRANSPORT_PARAM_EXT), len(body) - 1)
        assert _errno_of(exc) == errno.EINVAL
    params = pull_quic_transport_parameters(Buffer(data=body))
    assert params.initial_max_data == 123_456
    assert params.initial_max_streams_bidi == 9
    assert params.max_idle_timeout == 5000
    assert params.max_ack_delay == 40
    assert params.max_udp_payload_size == 1500
    assert params.initial_max_stream_data_bidi_local == 262_144
    assert params.initial_source_connection_id
    assert body.endswith(bytes.fromhex("6ab200"))  # grease_quic_bit, empty


def test_connection_close_round_trip(client: ModelQuicSocket) -> None:
    assert sockopt.get_connection_close(client) == ConnectionClose()
    sockopt.set_connection_close(client, 0x100 + 42, "bad certificate")
    assert sockopt.get_connection_close(client) == ConnectionClose(0x12A, 0, b"bad certificate")
    assert _raw_set(client, SockOpt.CONNECTION_CLOSE, b"\0" * 4) == errno.EINVAL


def test_key_update_needs_established(client: ModelQuicSocket) -> None:
    assert client.state is SockState.ESTABLISHING
    assert _raw_set(client, SockOpt.KEY_UPDATE, b"") == errno.EPIPE
