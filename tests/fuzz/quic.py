# SPDX-License-Identifier: GPL-2.0-only
"""The QUIC path's handling of what the socket hands it: transport parameters, ALPN,
session tickets (resumption data or the server's ticket key), ``quic_config``, and the
handshake data with its level cmsg.

``QuicHandshake`` (quic/driver.py) runs on an in-memory socket whose getsockopt
answers and recvmsg results come from the input, the way a kernel (or a peer through
it) would hand them over.  Input: a flags byte (bit 0: server, bit 1: PSK, bit 2:
SESSION_TICKET is session data this process sealed), then
fields, each a 2-byte little-endian length and its bytes: ALPN, SESSION_TICKET,
CONFIG, TRANSPORT_PARAM_EXT, then per received message its msg_flags (4 bytes),
its cmsg level field and its data.

Expected: the driver documents no exception: every failure ends in ``result`` (a
status for DONE); ``AbiError`` is what the struct and ALPN codecs document.
Whatever the input, once the deadline has passed the handshake has a result.
"""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Iterator
from typing import Any

from fuzz.engine import CLIENT_TP, SERVER_TP, Scenario, recorded_flight, scenarios
from fuzz.harness import Target
from quichsd.quic import abi
from quichsd.quic.abi import AbiError, SockOpt
from quichsd.quic.driver import Credentials, QuicHandshake
from quichsd.tls import HandshakeEngine, Level, Role, SessionTicket
from quichsd.tls.memory import run_pair

EXPECTED = (AbiError,)
_FIELDS = (SockOpt.ALPN, SockOpt.SESSION_TICKET, SockOpt.CONFIG, SockOpt.TRANSPORT_PARAM_EXT)


class MemorySocket:
    """A QUIC socket as the driver sees it, answering from the fuzzer's bytes."""

    def __init__(self, options: dict[int, bytes], incoming: list[tuple[bytes, Any, int]]):
        self.options = options
        self.incoming = incoming

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray, /) -> None:
        if optname == SockOpt.SESSION_TICKET and not 64 <= len(value) <= 4096:
            raise OSError(errno.EINVAL, "session ticket size")  # as the kernel says

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        return self.options.get(optname, b"")[:buflen]

    def sendmsg(self, buffers: Any, ancdata: Any, flags: int, /) -> int:
        return sum(len(b) for b in buffers)

    def recvmsg(self, bufsize: int, ancbufsize: int, flags: int, /) -> tuple[Any, ...]:
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        data, ancdata, msg_flags = self.incoming.pop(0)
        return data[:bufsize], ancdata, msg_flags, None

    def fileno(self) -> int:
        return -1


def _fields(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "little")
        yield data[offset + 2 : offset + 2 + size]
        offset += 2 + size


def _codecs(options: dict[int, bytes]) -> None:
    """Each struct and list codec: what decodes and encodes again decodes the same.

    Encoding may refuse what decoding took (a close phrase filling all 64 bytes, an
    ALPN entry the kernel would split): refusing is documented, changing is not.
    """
    entries = abi.parse_alpn(options.get(SockOpt.ALPN, b""))
    with contextlib.suppress(EXPECTED):
        assert abi.parse_alpn(abi.encode_alpn(entries)) == entries, entries
    for raw in options.values():
        for codec in (abi.TransportParam, abi.Config, abi.ConnectionClose, abi.StreamInfo):
            try:
                value = codec.unpack(raw)
                packed = value.pack()
            except EXPECTED:
                continue
            assert codec.unpack(packed) == value, value
        with contextlib.suppress(EXPECTED):
            abi.unpack_handshake_info(raw[:1])


def one_input(data: bytes) -> None:
    if not data:
        return
    fields = list(_fields(data[1:]))
    options = dict(zip(_FIELDS, fields, strict=False))
    rest = fields[len(_FIELDS) :]
    incoming = []
    for index in range(0, len(rest) - 2, 3):
        flags, level, payload = rest[index : index + 3]
        cmsgs = [(abi.SOL_QUIC, abi.QUIC_HANDSHAKE_INFO, level)] if level else []
        incoming.append((payload, cmsgs, int.from_bytes(flags[:4], "little")))
    _codecs(options)
    if data[0] & 4:  # resumption data this process made: the path a real ticket takes
        options[SockOpt.SESSION_TICKET] = session_ticket()
    scenario = scenarios()[2 if data[0] & 2 else 0]
    server = bool(data[0] & 1)
    handshake = QuicHandshake(
        MemorySocket(options, incoming),
        Role.SERVER if server else Role.CLIENT,
        _credentials(scenario, server),
        deadline=100.0,
    )
    handshake.begin()
    handshake.on_readable()
    handshake.on_tick(1e9)
    result = handshake.result
    assert result is not None, "no result after the deadline"
    assert result.status >= 0 and (result.status == 0) == (result.complete is not None), result


def _credentials(scenario: Scenario, server: bool) -> Credentials:
    config = scenario.server if server else scenario.client
    return Credentials(
        auth=config.auth,
        certificates=config.certificates,
        psk=config.psk,
        psk_lookup=config.psk_lookup,
        peer_name=config.peer_name,
    )


def encode_input(flags: int, options: dict[int, bytes], received: list[tuple[int, int, bytes]]):
    """An input from named parts (for seeds and regression tests)."""
    out = bytearray([flags])
    parts = [options.get(option, b"") for option in _FIELDS]
    for msg_flags, level, payload in received:
        level_field = b"" if level < 0 else bytes([level])
        parts += [msg_flags.to_bytes(4, "little"), level_field, payload]
    for part in parts:
        out += len(part).to_bytes(2, "little") + part
    return bytes(out)


@functools.cache
def session_ticket() -> bytes:
    """A client's session data from a full X.509 handshake of this process."""
    x509 = scenarios()[0]
    pair = run_pair(
        HandshakeEngine(x509.client, CLIENT_TP), HandshakeEngine(x509.server, SERVER_TP)
    )
    return [e.data for e in pair.client.events if isinstance(e, SessionTicket)][-1]


def _seeds() -> Iterator[bytes]:
    ticket = session_ticket()
    config = abi.Config(payload_cipher_type=52, receive_session_ticket=1).pack()
    alpn = b"smb, h3,\0"
    client_hello = recorded_flight("engine_server_initial", 0) or b""
    server_hello = recorded_flight("engine_client_initial", 0) or b""
    base = {SockOpt.ALPN: alpn, SockOpt.CONFIG: config, SockOpt.TRANSPORT_PARAM_EXT: CLIENT_TP}
    yield encode_input(0, base, [(0, Level.INITIAL, server_hello)])
    yield encode_input(0, {**base, SockOpt.SESSION_TICKET: ticket}, [])  # another key's
    yield encode_input(4, base, [(0, Level.INITIAL, server_hello)])  # resuming, 0-RTT
    yield encode_input(2, base, [(0, Level.INITIAL, server_hello), (0x8000, -1, b"event")])
    yield encode_input(1, {**base, SockOpt.SESSION_TICKET: bytes(range(64))},
                       [(0, Level.INITIAL, client_hello)])  # fmt: skip
    yield encode_input(1, {**base, SockOpt.CONFIG: config[:24]}, [(0, 7, client_hello)])
    tp = abi.TransportParam().pack()
    close = abi.ConnectionClose(0x100 + 40, 0, b"bye").pack()
    yield encode_input(0, {SockOpt.ALPN: tp, SockOpt.SESSION_TICKET: close}, [])


TARGETS = (
    Target(
        name="quic_params",
        one_input=one_input,
        expected=EXPECTED,
        seeds=_seeds,
    ),
)
