# SPDX-License-Identifier: GPL-2.0-only
"""The QUIC socket ABI layer against the layouts in docs/kernel-abi.md.

Offsets are checked by packing distinct values and reading each field back
from its byte slice in host order; on little-endian hosts a few structs are
also compared with literal bytes, since that is what x86_64 kernels read.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import sys
from typing import Any

import pytest

from quichsd.quic import abi, sockopt
from quichsd.quic.abi import (
    AbiError,
    Config,
    ConnectionClose,
    CryptoSecret,
    ErrInfo,
    EventOption,
    SockOpt,
    StreamInfo,
    TransportParam,
)
from quichsd.quic.sockopt import QuicSocketError
from quichsd.tls.levels import Cipher, Level

little_endian_only = pytest.mark.skipif(sys.byteorder != "little", reason="x86_64 byte image")


def field(data: bytes | bytearray, offset: int, size: int, *, signed: bool = False) -> int:
    """The host-order integer at data[offset:offset + size]."""
    return int.from_bytes(data[offset : offset + size], sys.byteorder, signed=signed)


# --- constants ------------------------------------------------------------------


def test_protocol_numbers() -> None:
    assert abi.IPPROTO_QUIC == 261
    assert abi.SOL_QUIC == 288
    assert abi.QUIC_VERSION_V1 == 1
    assert abi.QUIC_VERSION_V2 == 0x6B3343CF
    assert (abi.QUIC_STREAM_INFO, abi.QUIC_HANDSHAKE_INFO) == (0, 1)


def test_socket_option_numbers() -> None:
    expected = [
        "EVENT",
        "STREAM_OPEN",
        "STREAM_RESET",
        "STREAM_STOP_SENDING",
        "CONNECTION_ID",
        "CONNECTION_CLOSE",
        "CONNECTION_MIGRATION",
        "KEY_UPDATE",
        "TRANSPORT_PARAM",
        "CONFIG",
        "TOKEN",
        "ALPN",
        "SESSION_TICKET",
        "CRYPTO_SECRET",
        "TRANSPORT_PARAM_EXT",
    ]
    assert [(o.value, o.name) for o in SockOpt] == list(enumerate(expected))
    assert SockOpt.CRYPTO_SECRET.c_name == "QUIC_SOCKOPT_CRYPTO_SECRET"


def test_message_flags() -> None:
    assert abi.MSG_QUIC_STREAM_NEW == 0x400
    assert abi.MSG_QUIC_STREAM_FIN == 0x200
    assert abi.MSG_QUIC_STREAM_UNI == 0x800
    assert abi.MSG_QUIC_STREAM_DONTWAIT == 0x10000
    assert abi.MSG_QUIC_STREAM_SNDBLOCK == 0x2000
    assert abi.MSG_QUIC_DATAGRAM == 0x1000
    assert abi.MSG_QUIC_NOTIFICATION == abi.MSG_MORE == 0x8000
    assert (abi.MSG_NOSIGNAL, abi.MSG_DONTWAIT, abi.MSG_WAITALL) == (0x4000, 0x40, 0x100)
    assert (abi.MSG_CTRUNC, abi.MSG_TRUNC, abi.MSG_EOR, abi.MSG_BATCH) == (0x8, 0x20, 0x80, 0x40000)
    allowed = 0x400 | 0x200 | 0x800 | 0x10000 | 0x2000 | 0x40000 | 0x8000 | 0x40 | 0x4000
    assert allowed | 0x100 | 0x1000 == abi.SENDMSG_FLAGS
    assert abi.HANDSHAKE_SEND_FLAGS & ~abi.SENDMSG_FLAGS == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux MSG_* values")
def test_message_flags_match_linux() -> None:
    for name in ("MSG_MORE", "MSG_NOSIGNAL", "MSG_DONTWAIT", "MSG_CTRUNC", "MSG_TRUNC", "MSG_EOR"):
        assert getattr(abi, name) == getattr(socket, name), name
    # CPython does not export MSG_FIN / MSG_SYN (0x200 / 0x400 in <linux/socket.h>).
    assert int(socket.MSG_CONFIRM) == abi.MSG_QUIC_STREAM_UNI
    assert int(socket.MSG_ERRQUEUE) == abi.MSG_QUIC_STREAM_SNDBLOCK


def test_transport_errors() -> None:
    assert int(abi.TransportError.TRANSPORT_PARAM) == 0x08
    assert int(abi.TransportError.APPLICATION) == 0x0C
    assert int(abi.TransportError.VERSION_NEGOTIATION) == 0x11
    assert int(abi.TransportError.CRYPTO) == 0x100
    assert abi.crypto_error(40) == 0x128
    with pytest.raises(AbiError):
        abi.crypto_error(256)


def test_other_enums() -> None:
    assert [e.value for e in abi.CongestionAlgo] == [0, 1]
    assert int(abi.EventType.NEW_SESSION_TICKET) == 9
    assert int(abi.EventType.KEY_UPDATE) == 7


def test_native_layout_check_passes_here() -> None:
    abi.check_native_layout()


# --- struct layouts -----------------------------------------------------------------


def test_handshake_info() -> None:
    assert abi.pack_handshake_info(Level.HANDSHAKE) == b"\x02"
    assert abi.unpack_handshake_info(b"\x01") is Level.INITIAL
    with pytest.raises(AbiError):
        abi.pack_handshake_info(4)
    with pytest.raises(AbiError):
        abi.unpack_handshake_info(b"\x01\x00")


def test_stream_info_layout() -> None:
    data = StreamInfo(-2, 0x0A0B0C0D).pack()
    assert len(data) == abi.STREAM_INFO_SIZE == 16
    assert field(data, 0, 8, signed=True) == -2
    assert field(data, 8, 4) == 0x0A0B0C0D
    assert data[12:16] == bytes(4)
    assert StreamInfo.unpack(data) == StreamInfo(-2, 0x0A0B0C0D)
    assert StreamInfo().stream_id == -1


@little_endian_only
def test_stream_info_bytes() -> None:
    assert StreamInfo(-1, abi.MSG_QUIC_STREAM_FIN).pack() == bytes.fromhex(
        "ffffffffffffffff0002000000000000"
    )


TP_FIELDS: list[tuple[str, int, int]] = [
    ("remote", 0, 1),
    ("disable_active_migration", 1, 1),
    ("grease_quic_bit", 2, 1),
    ("stateless_reset", 3, 1),
    ("disable_1rtt_encryption", 4, 1),
    ("disable_compatible_version", 5, 1),
    ("active_connection_id_limit", 6, 1),
    ("ack_delay_exponent", 7, 1),
    ("max_datagram_frame_size", 8, 2),
    ("max_udp_payload_size", 10, 2),
    ("max_idle_timeout", 12, 4),
    ("max_ack_delay", 16, 4),
    ("max_streams_bidi", 20, 2),
    ("max_streams_uni", 22, 2),
    ("max_data", 24, 8),
    ("max_stream_data_bidi_local", 32, 8),
    ("max_stream_data_bidi_remote", 40, 8),
    ("max_stream_data_uni", 48, 8),
]


def test_transport_param_field_table_matches_dataclass() -> None:
    assert [f.name for f in dataclasses.fields(TransportParam)] == [n for n, _, _ in TP_FIELDS]


def test_transport_param_layout() -> None:
    values: dict[str, Any] = {}
    for index, (name, _offset, size) in enumerate(TP_FIELDS):
        if size == 1 and index < 6:
            values[name] = True  # the flags
        else:
            # distinct, and using every byte of the field so a shift shows
            values[name] = int.from_bytes(bytes(range(index + 1, index + 1 + size)), "big")
    param = TransportParam(**values)
    data = param.pack()
    assert len(data) == abi.TRANSPORT_PARAM_SIZE == 56
    for name, offset, size in TP_FIELDS:
        assert field(data, offset, size) == int(values[name]), name
    assert TransportParam.unpack(data) == param


def test_transport_param_defaults() -> None:
    data = TransportParam().pack()
    assert field(data, 0, 1) == 0
    assert field(data, 6, 1) == 7
    assert field(data, 7, 1) == 3
    assert field(data, 10, 2) == 65527
    assert field(data, 12, 4) == 30_000_000
    assert field(data, 16, 4) == 25_000
    assert field(data, 20, 2) == field(data, 22, 2) == 100
    assert field(data, 24, 8) == 2_097_152
    assert field(data, 32, 8) == field(data, 40, 8) == field(data, 48, 8) == 262_144
    assert TransportParam(remote=True).pack()[0] == 1


def test_transport_param_rejects_bad_input() -> None:
    with pytest.raises(AbiError):
        TransportParam(max_udp_payload_size=70000).pack()
    with pytest.raises(AbiError):
        TransportParam.unpack(bytes(64))


CONFIG_FIELDS: list[tuple[str, int, int]] = [
    ("version", 0, 4),
    ("plpmtud_probe_interval", 4, 4),
    ("initial_smoothed_rtt", 8, 4),
    ("payload_cipher_type", 12, 4),
    ("congestion_control_algo", 16, 1),
    ("validate_peer_address", 17, 1),
    ("stream_data_nodelay", 18, 1),
    ("receive_session_ticket", 19, 1),
    ("certificate_request", 20, 1),
    ("keepalive_probe_interval", 24, 4),
]


def test_config_layout() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == [n for n, _, _ in CONFIG_FIELDS]
    config = Config(
        version=abi.QUIC_VERSION_V2,
        plpmtud_probe_interval=0x11223344,
        initial_smoothed_rtt=333000,
        payload_cipher_type=Cipher.CHACHA20_POLY1305,
        congestion_control_algo=abi.CongestionAlgo.CUBIC,
        validate_peer_address=True,
        stream_data_nodelay=True,
        receive_session_ticket=5,
        certificate_request=2,
        keepalive_probe_interval=0x55667788,
    )
    data = config.pack()
    assert len(data) == abi.CONFIG_SIZE == 28
    for name, offset, size in CONFIG_FIELDS:
        assert field(data, offset, size) == int(getattr(config, name)), name
    assert data[21:24] == bytes(3)  # reserved
    assert Config.unpack(data) == config


def test_config_ktls_variant() -> None:
    config = Config(
        version=1, payload_cipher_type=52, receive_session_ticket=3, keepalive_probe_interval=9
    )
    short = config.pack()[: abi.CONFIG_SIZE_KTLS]
    assert abi.CONFIG_SIZE_KTLS == 24
    assert Config.unpack(short) == dataclasses.replace(config, keepalive_probe_interval=0)
    for bad in (20, 27, 32):
        with pytest.raises(AbiError):
            Config.unpack(bytes(bad))


def test_config_default_changes_nothing() -> None:
    assert Config().pack() == bytes(28)


@little_endian_only
def test_config_bytes() -> None:
    data = Config(
        version=abi.QUIC_VERSION_V2, receive_session_ticket=2, certificate_request=1
    ).pack()
    expected = "cf43336b" + "00000000" * 3 + "000000" + "02" + "01" + "000000" + "00000000"
    assert data == bytes.fromhex(expected)


def test_crypto_secret_layout() -> None:
    secret = bytes(range(1, 33))
    data = CryptoSecret(Level.HANDSHAKE, True, Cipher.AES_128_GCM, secret).pack()
    assert isinstance(data, bytearray)
    assert len(data) == abi.CRYPTO_SECRET_SIZE == 56
    assert data[0] == 1  # send
    assert data[1] == 2  # level
    assert data[2:4] == b"\0\0"  # reserved
    assert field(data, 4, 4) == 51
    assert data[8:40] == secret
    assert data[40:56] == bytes(16)  # zero padding
    back = CryptoSecret.unpack(bytes(data), secret_len=32)
    assert back == CryptoSecret(2, True, 51, secret)
    assert CryptoSecret.unpack(bytes(data)).secret == secret + bytes(16)


def test_crypto_secret_48_bytes_and_limits() -> None:
    secret = bytes(range(100, 148))
    data = CryptoSecret(Level.APP, False, Cipher.AES_256_GCM, secret).pack()
    assert data[0] == 0 and data[1] == 0
    assert field(data, 4, 4) == 52
    assert data[8:] == secret
    with pytest.raises(AbiError, match="49-byte"):
        CryptoSecret(Level.APP, True, 52, bytes(49)).pack()
    assert "secret=<48 bytes>" in repr(CryptoSecret(Level.APP, True, 52, secret))
    assert "100" not in repr(CryptoSecret(Level.APP, True, 52, secret)).split("secret=")[1]


def test_errinfo_layout() -> None:
    data = ErrInfo(0x0102030405060708, 0xDEADBEEF).pack()
    assert len(data) == abi.ERRINFO_SIZE == 16
    assert field(data, 0, 8) == 0x0102030405060708
    assert field(data, 8, 4) == 0xDEADBEEF
    assert data[12:] == bytes(4)
    assert ErrInfo.unpack(data) == ErrInfo(0x0102030405060708, 0xDEADBEEF)


def test_connection_close_layout() -> None:
    close = ConnectionClose(0x128, 0x06, b"bad certificate")
    data = close.pack()
    assert len(data) == abi.CONNECTION_CLOSE_SIZE == 72
    assert field(data, 0, 4) == 0x128
    assert data[4] == 0x06
    assert data[5:8] == bytes(3)
    assert data[8 : 8 + 15] == b"bad certificate"
    assert data[8 + 15 :] == bytes(64 - 15)
    assert ConnectionClose.unpack(data) == close


def test_connection_close_phrase_limits() -> None:
    ConnectionClose(1, 0, b"x" * 63).pack()
    with pytest.raises(AbiError):
        ConnectionClose(1, 0, b"x" * 64).pack()
    with pytest.raises(AbiError):
        ConnectionClose(1, 0, b"a\0b").pack()
    raw = bytearray(ConnectionClose(7, 0, b"abc").pack())
    raw[12:14] = b"zz"  # garbage after the terminator is not part of the phrase
    assert ConnectionClose.unpack(bytes(raw)).phrase == b"abc"


def test_event_option_layout() -> None:
    data = EventOption(abi.EventType.NEW_SESSION_TICKET, True).pack()
    assert data == b"\x09\x01"
    assert len(data) == abi.EVENT_OPTION_SIZE == 2
    assert EventOption.unpack(b"\x05\x00") == EventOption(5, False)


# --- cmsg -------------------------------------------------------------------------


def test_handshake_cmsg_encoding() -> None:
    assert abi.handshake_cmsg(Level.INITIAL) == [(288, 1, b"\x01")]
    assert abi.handshake_cmsg(Level.APP) == [(288, 1, b"\x00")]
    with pytest.raises(AbiError):
        abi.handshake_cmsg(7)


@pytest.mark.skipif(not hasattr(socket, "CMSG_SPACE"), reason="no CMSG_SPACE")
def test_cmsg_sizes() -> None:
    assert socket.CMSG_LEN(1) == abi.HANDSHAKE_CMSG_LEN == 17
    assert socket.CMSG_SPACE(1) == abi.HANDSHAKE_CMSG_SPACE == 24
    assert socket.CMSG_SPACE(16) == abi.STREAM_CMSG_SPACE == 32
    assert abi.RECV_ANCBUF_SIZE >= abi.HANDSHAKE_CMSG_SPACE + abi.STREAM_CMSG_SPACE


def test_parse_handshake_level() -> None:
    assert abi.parse_handshake_level([]) is None
    assert abi.parse_handshake_level([(288, 1, b"\x02")]) is Level.HANDSHAKE
    stream = (288, 0, StreamInfo(4, 0).pack())
    assert abi.parse_handshake_level([stream]) is None
    assert abi.parse_handshake_level([(0, 1, b"\x02"), stream, (288, 1, b"\x01")]) is Level.INITIAL
    for bad in ([(288, 1, b"")], [(288, 1, b"\x01\x00")], [(288, 1, b"\x04")]):
        with pytest.raises(AbiError):
            abi.parse_handshake_level(bad)
    with pytest.raises(AbiError, match="more than one"):
        abi.parse_handshake_level([(288, 1, b"\x01"), (288, 1, b"\x02")])


# --- ALPN ---------------------------------------------------------------------------


def test_parse_alpn() -> None:
    assert abi.parse_alpn(b"") == ()
    assert abi.parse_alpn(b"h3") == (b"h3",)
    assert abi.parse_alpn(b"h3, smb,  sunrpc\0\0\0") == (b"h3", b"smb", b"sunrpc")
    assert abi.parse_alpn(b"a,,b\0junk,c") == (b"a", b"b")


def test_encode_alpn() -> None:
    assert abi.encode_alpn([b"h3", "smb"]) == b"h3,smb"
    assert abi.encode_alpn([b"x" * 128]) == b"x" * 128
    for bad in ([], [b""], [b"a,b"], [b" h3"], [b"h\0"], ["é"], [b"\xff"], [b"x" * 129]):
        with pytest.raises(AbiError):
            abi.encode_alpn(bad)


# --- sockopt against a recording fake ------------------------------------------------


class FakeSocket:
    """Records every call; answers getsockopt from ``options`` and recvmsg from ``incoming``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.options: dict[int, bytes] = {}
        self.incoming: list[tuple[bytes, list[tuple[int, int, bytes]], int]] = []
        self.error: OSError | None = None
        self.short_send = False
        self.passed: list[Any] = []

    def last(self) -> tuple[Any, ...]:
        return self.calls[-1]

    def _maybe_fail(self) -> None:
        if self.error is not None:
            raise self.error

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray, /) -> None:
        self.passed.append(value)
        self.calls.append(("setsockopt", level, optname, bytes(value)))
        self._maybe_fail()

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        self.calls.append(("getsockopt", level, optname, buflen))
        self._maybe_fail()
        return self.options.get(optname, b"")[:buflen]

    def getsockopt_inout(self, level: int, optname: int, data: bytes, /) -> bytes:
        self.calls.append(("getsockopt_inout", level, optname, data))
        self._maybe_fail()
        return self.options[optname]

    def sendmsg(self, buffers: Any, ancdata: Any, flags: int, /) -> int:
        buffers = [bytes(b) for b in buffers]
        self.calls.append(("sendmsg", buffers, list(ancdata), flags))
        self._maybe_fail()
        total = sum(len(b) for b in buffers)
        return total - 1 if self.short_send else total

    def recvmsg(
        self, bufsize: int, ancbufsize: int, flags: int, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        self.calls.append(("recvmsg", bufsize, ancbufsize, flags))
        self._maybe_fail()
        data, ancdata, msg_flags = self.incoming.pop(0)
        return data, ancdata, msg_flags, None

    def fileno(self) -> int:
        return -1


def test_send_handshake_flags_and_cmsg() -> None:
    sock = FakeSocket()
    sockopt.send_handshake(sock, Level.INITIAL, b"hello", True)
    sockopt.send_handshake(sock, Level.HANDSHAKE, b"fin", False)
    sockopt.send_handshake(sock, 0, b"ticket", False, dontwait=True)  # engine events carry ints
    assert sock.calls == [
        ("sendmsg", [b"hello"], [(288, 1, b"\x01")], 0x8000 | 0x4000),
        ("sendmsg", [b"fin"], [(288, 1, b"\x02")], 0x4000),
        ("sendmsg", [b"ticket"], [(288, 1, b"\x00")], 0x4000 | 0x40),
    ]
    for call in sock.calls:
        assert call[3] & ~(abi.MSG_MORE | abi.MSG_NOSIGNAL | abi.MSG_DONTWAIT) == 0


def test_send_flight_sets_more_on_all_but_last() -> None:
    sock = FakeSocket()
    flight = [(Level.INITIAL, b"sh"), (Level.HANDSHAKE, b"ee"), (Level.HANDSHAKE, b"fin")]
    sockopt.send_flight(sock, flight)
    assert [c[3] & abi.MSG_MORE for c in sock.calls] == [abi.MSG_MORE, abi.MSG_MORE, 0]
    sockopt.send_flight(sock, [])
    assert len(sock.calls) == 3


def test_send_handshake_refuses_what_the_kernel_would() -> None:
    sock = FakeSocket()
    with pytest.raises(ValueError):
        sockopt.send_handshake(sock, Level.EARLY, b"x", False)
    with pytest.raises(ValueError):
        sockopt.send_handshake(sock, Level.INITIAL, b"", False)
    with pytest.raises(ValueError):
        sockopt.send_handshake(sock, 4, b"x", False)
    assert sock.calls == []


def test_send_handshake_errors() -> None:
    sock = FakeSocket()
    sock.short_send = True
    with pytest.raises(QuicSocketError) as info:
        sockopt.send_handshake(sock, Level.INITIAL, b"abc", False)
    assert info.value.errno == errno.EIO
    sock = FakeSocket()
    sock.error = OSError(errno.EINVAL, "Invalid argument")
    with pytest.raises(QuicSocketError) as info:
        sockopt.send_handshake(sock, Level.HANDSHAKE, b"abc", False)
    assert info.value.errno == errno.EINVAL
    assert info.value.step == "sendmsg" and info.value.option is None
    assert "3 bytes at HANDSHAKE" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_recv_handshake() -> None:
    sock = FakeSocket()
    sock.incoming.append((b"server hello", [(288, 1, b"\x01")], abi.MSG_EOR))
    sock.incoming.append((b"ee", [(288, 1, b"\x02")], abi.MSG_EOR))
    assert sockopt.recv_handshake(sock, 4096) == (Level.INITIAL, b"server hello")
    assert sockopt.recv_handshake(sock, dontwait=True) == (Level.HANDSHAKE, b"ee")
    assert sock.calls[0] == ("recvmsg", 4096, abi.RECV_ANCBUF_SIZE, 0)
    assert sock.calls[1] == ("recvmsg", sockopt.RECV_BUFFER, abi.RECV_ANCBUF_SIZE, abi.MSG_DONTWAIT)
    assert abi.RECV_ANCBUF_SIZE >= abi.HANDSHAKE_CMSG_SPACE


@pytest.mark.parametrize(
    ("data", "ancdata", "flags", "err", "text"),
    [
        (b"x", [], 0, errno.EPROTO, "without a QUIC_HANDSHAKE_INFO"),
        (b"x", [(288, 0, bytes(16))], 0, errno.EPROTO, "(288, 0)"),
        (b"x", [(288, 1, b"\x01")], abi.MSG_CTRUNC, errno.EPROTO, "MSG_CTRUNC"),
        (b"x", [(288, 1, b"\x01")], abi.MSG_TRUNC, errno.EMSGSIZE, "truncated"),
        (b"x", [], abi.MSG_QUIC_NOTIFICATION, errno.EPROTO, "notification"),
        (b"x", [], abi.MSG_QUIC_DATAGRAM, errno.EPROTO, "datagram"),
        (b"", [(288, 1, b"\x01")], 0, errno.EPROTO, "zero-length"),
        (b"x", [(288, 1, b"\x09")], 0, errno.EPROTO, "crypto level"),
    ],
)
def test_recv_handshake_rejects(
    data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, err: int, text: str
) -> None:
    sock = FakeSocket()
    sock.incoming.append((data, ancdata, flags))
    with pytest.raises(QuicSocketError) as info:
        sockopt.recv_handshake(sock)
    assert info.value.errno == err
    assert info.value.step == "recvmsg"
    assert text in str(info.value)


def test_recv_handshake_keeps_blocking_error_class() -> None:
    sock = FakeSocket()
    sock.error = BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    with pytest.raises(BlockingIOError) as info:
        sockopt.recv_handshake(sock, dontwait=True)
    assert isinstance(info.value, QuicSocketError)
    assert info.value.errno == errno.EAGAIN
    sock.error = ConnectionError(errno.ENOTCONN, "Transport endpoint is not connected")
    with pytest.raises(QuicSocketError) as info2:
        sockopt.recv_handshake(sock)
    assert info2.value.errno == errno.ENOTCONN
    sock.error = TimeoutError("timed out")
    with pytest.raises(TimeoutError) as info3:
        sockopt.recv_handshake(sock)
    assert info3.value.errno is None
    assert "Errno None" not in str(info3.value)


def test_install_secret() -> None:
    sock = FakeSocket()
    secret = bytes(range(7, 7 + 48))
    sockopt.install_secret(sock, Level.HANDSHAKE, True, Cipher.AES_256_GCM, secret)
    ((_, level, optname, value),) = sock.calls
    assert (level, optname) == (288, 13)
    assert value == CryptoSecret(Level.HANDSHAKE, True, 52, secret).pack()
    assert value[:8] == b"\x01\x02\x00\x00" + (52).to_bytes(4, sys.byteorder)
    assert sock.passed[0] == bytes(56), "the packed copy is wiped after the call"
    sock = FakeSocket()
    sock.error = OSError(errno.EINVAL, "Invalid argument")
    with pytest.raises(QuicSocketError) as info:
        sockopt.install_secret(sock, Level.APP, False, Cipher.AES_128_GCM, bytes(32))
    assert info.value.errno == errno.EINVAL
    assert info.value.option is SockOpt.CRYPTO_SECRET and info.value.step == "setsockopt"
    assert "QUIC_SOCKOPT_CRYPTO_SECRET" in str(info.value)
    assert "receive APP" in str(info.value)
    assert sock.passed[0] == bytes(56), "wiped on failure too"


def test_install_secret_refuses_initial_and_long_secrets() -> None:
    sock = FakeSocket()
    with pytest.raises(ValueError):
        sockopt.install_secret(sock, Level.INITIAL, True, Cipher.AES_128_GCM, bytes(32))
    with pytest.raises(AbiError):
        sockopt.install_secret(sock, Level.APP, True, Cipher.AES_128_GCM, bytes(49))
    assert sock.calls == []


def test_transport_param_ext() -> None:
    sock = FakeSocket()
    sock.options[14] = b"\x01\x02\x03"
    assert sockopt.get_transport_param_ext(sock) == b"\x01\x02\x03"
    assert sock.last() == ("getsockopt", 288, 14, 512)
    sockopt.set_transport_param_ext(sock, b"\x04" * 512)
    assert sock.last() == ("setsockopt", 288, 14, b"\x04" * 512)
    with pytest.raises(QuicSocketError) as info:
        sockopt.set_transport_param_ext(sock, bytes(513))
    assert info.value.errno == errno.EINVAL
    assert len(sock.calls) == 2


def test_transport_param_get_set() -> None:
    sock = FakeSocket()
    param = TransportParam(max_idle_timeout=5_000_000, grease_quic_bit=True)
    sock.options[8] = param.pack()
    assert sockopt.get_transport_param(sock) == param
    assert sock.last() == ("getsockopt_inout", 288, 8, bytes(56))
    sockopt.get_transport_param(sock, remote=True)
    assert sock.last() == ("getsockopt_inout", 288, 8, b"\x01" + bytes(55))
    sockopt.set_transport_param(sock, dataclasses.replace(param, remote=True))
    assert sock.last()[3][0] == 1 and len(sock.last()[3]) == 56
    sock.options[8] = bytes(40)
    with pytest.raises(QuicSocketError) as info:
        sockopt.get_transport_param(sock)
    assert info.value.errno == errno.EPROTO


def test_alpn() -> None:
    sock = FakeSocket()
    sock.options[11] = b"h3, smb"
    assert sockopt.get_alpn(sock) == (b"h3", b"smb")
    assert sock.last() == ("getsockopt", 288, 11, sockopt.ALPN_BUFFER)
    assert sockopt.ALPN_BUFFER > abi.ALPN_MAX_LEN  # room for the kernel's internal encoding
    sock.options[11] = b""
    assert sockopt.get_alpn(sock) == ()
    sockopt.set_alpn(sock, [b"h3", "smb"])
    assert sock.last() == ("setsockopt", 288, 11, b"h3,smb")
    with pytest.raises(QuicSocketError) as info:
        sockopt.set_alpn(sock, [b"a,b"])
    assert info.value.errno == errno.EINVAL and info.value.option is SockOpt.ALPN


def test_config() -> None:
    sock = FakeSocket()
    config = Config(version=1, receive_session_ticket=2, certificate_request=1)
    sock.options[9] = config.pack()
    assert sockopt.get_config(sock) == config
    assert sock.last() == ("getsockopt", 288, 9, 28)
    sock.options[9] = config.pack()[:24]  # a kernel built against the 24-byte header
    assert sockopt.get_config(sock) == config
    sockopt.set_config(sock, config)
    assert sock.last() == ("setsockopt", 288, 9, config.pack())
    sock.options[9] = bytes(13)
    with pytest.raises(QuicSocketError, match="quic_config"):
        sockopt.get_config(sock)


def test_session_ticket_token_close() -> None:
    sock = FakeSocket()
    sock.options[12] = b"T" * 3000
    assert sockopt.get_session_ticket(sock) == b"T" * 3000
    assert sock.last() == ("getsockopt", 288, 12, 4096)
    sockopt.set_session_ticket(sock, b"s" * 64)
    assert sock.last() == ("setsockopt", 288, 12, b"s" * 64)

    sock.options[10] = b"tok"
    assert sockopt.get_token(sock) == b"tok"
    assert sock.last()[:3] == ("getsockopt", 288, 10)
    sockopt.set_token(sock, b"tok2")
    assert sock.last() == ("setsockopt", 288, 10, b"tok2")

    sockopt.set_connection_close(sock, abi.crypto_error(42), "bad certificate")
    _, _, optname, value = sock.last()
    assert optname == 5 and len(value) == 72
    assert ConnectionClose.unpack(value) == ConnectionClose(0x12A, 0, b"bad certificate")
    with pytest.raises(QuicSocketError):
        sockopt.set_connection_close(sock, 1, "x" * 64)
    sock.options[5] = ConnectionClose(0x0A, 0x06, b"peer said no").pack()
    assert sockopt.get_connection_close(sock) == ConnectionClose(0x0A, 0x06, b"peer said no")
    assert sock.last() == ("getsockopt", 288, 5, 72)


def test_set_refuses_oversized_values() -> None:
    sock = FakeSocket()
    with pytest.raises(QuicSocketError) as info:
        sockopt.set_session_ticket(sock, bytes(4097))
    assert info.value.errno == errno.EINVAL
    assert sock.calls == []


def test_getsockopt_error_keeps_errno_and_names_option() -> None:
    sock = FakeSocket()
    sock.error = OSError(errno.EINVAL, "Invalid argument")
    with pytest.raises(QuicSocketError) as info:
        sockopt.get_session_ticket(sock)
    err = info.value
    assert isinstance(err, OSError)
    assert err.errno == errno.EINVAL
    assert err.option is SockOpt.SESSION_TICKET and err.step == "getsockopt"
    assert "QUIC_SOCKOPT_SESSION_TICKET" in str(err) and "4096-byte buffer" in str(err)


def test_inout_needs_a_method_on_non_sockets() -> None:
    class Plain:
        def fileno(self) -> int:
            return -1

    with pytest.raises(TypeError):
        sockopt.getsockopt_inout(Plain(), SockOpt.TRANSPORT_PARAM, bytes(56))  # type: ignore[arg-type]


# --- real kernel sockets (no QUIC module needed) --------------------------------------


@pytest.fixture
def udp() -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


def test_libc_getsockopt_large_buffer_and_input(udp: socket.socket) -> None:
    sotype = socket.SOCK_DGRAM.to_bytes(4, sys.byteorder)
    assert sockopt._kernel_getsockopt(udp, socket.SOL_SOCKET, socket.SO_TYPE, 4096) == sotype
    assert (
        sockopt._kernel_getsockopt(udp, socket.SOL_SOCKET, socket.SO_TYPE, 4, b"\xff" * 4) == sotype
    )
    with pytest.raises(OSError) as info:
        sockopt._kernel_getsockopt(udp, socket.SOL_SOCKET, 0x7FFF, 4)
    assert info.value.errno == errno.ENOPROTOOPT


def test_non_quic_kernel_socket_errors_are_wrapped(udp: socket.socket) -> None:
    # SOL_QUIC on a UDP socket fails in the kernel; both getsockopt paths
    # (CPython's and libc's) and setsockopt must surface that errno.
    for call in (
        lambda: sockopt.get_alpn(udp),
        lambda: sockopt.get_session_ticket(udp),
        lambda: sockopt.get_transport_param(udp, remote=True),
        lambda: sockopt.set_alpn(udp, [b"h3"]),
    ):
        with pytest.raises(QuicSocketError) as info:
            call()
        assert info.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EINVAL)
