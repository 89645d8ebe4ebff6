# SPDX-License-Identifier: GPL-2.0-only
"""Constants and byte layouts of the QUIC module's user ABI (x86_64, LP64).

Source: docs/kernel-abi.md.  Every struct integer is in host
byte order, so formats use ``=`` (native order, standard sizes, no implicit
alignment) with the C compiler's padding written out as ``x``; the offsets are
then exactly the spec's on any LP64 host.  ``check_native_layout`` (run at
import) compares them with what the platform's C alignment would produce, so an
ABI with different padding fails loudly instead of sending shifted bytes.

The dataclasses mirror the C structs with raw integers: the agent passes enums
(``Level``, ``Cipher`` are ``int``), while the userspace model sees exactly what
a caller wrote and can reject it the way the kernel does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from quichsd.tls.levels import Level


class AbiError(ValueError):
    """A value that cannot be represented in (or decoded from) a uapi struct."""


# --- protocol numbers -------------------------------------------------------

IPPROTO_QUIC: Final = 261
SOL_QUIC: Final = 288

QUIC_VERSION_V1: Final = 0x00000001
QUIC_VERSION_V2: Final = 0x6B3343CF

# --- control messages (level SOL_QUIC) --------------------------------------

QUIC_STREAM_INFO: Final = 0
QUIC_HANDSHAKE_INFO: Final = 1

#: ``CMSG_LEN(1)`` / ``CMSG_SPACE(1)`` for the handshake cmsg (16-byte cmsghdr).
HANDSHAKE_CMSG_LEN: Final = 17
HANDSHAKE_CMSG_SPACE: Final = 24
#: ``CMSG_SPACE(16)`` for a stream cmsg.
STREAM_CMSG_SPACE: Final = 32
#: recvmsg control buffer: room for either cmsg kind, so stream data that shows
#: up where handshake data was expected is reported as such, not as MSG_CTRUNC.
RECV_ANCBUF_SIZE: Final = 64

# --- message flags (Linux MSG_* values; the QUIC names alias them) ----------

MSG_DONTWAIT: Final = 0x40
MSG_CTRUNC: Final = 0x8
MSG_TRUNC: Final = 0x20
MSG_EOR: Final = 0x80
MSG_WAITALL: Final = 0x100
MSG_NOSIGNAL: Final = 0x4000
MSG_MORE: Final = 0x8000
MSG_BATCH: Final = 0x40000

MSG_QUIC_STREAM_NEW: Final = 0x400  # MSG_SYN
MSG_QUIC_STREAM_FIN: Final = 0x200  # MSG_FIN
MSG_QUIC_STREAM_UNI: Final = 0x800  # MSG_CONFIRM
MSG_QUIC_STREAM_DONTWAIT: Final = 0x10000  # MSG_WAITFORONE
MSG_QUIC_STREAM_SNDBLOCK: Final = 0x2000  # MSG_ERRQUEUE
MSG_QUIC_DATAGRAM: Final = 0x1000  # MSG_RST
MSG_QUIC_NOTIFICATION: Final = 0x8000  # MSG_MORE, only ever reported by recvmsg

#: Flags valid in ``quic_stream_info.stream_flags``.
STREAM_FLAGS: Final = (
    MSG_QUIC_STREAM_NEW
    | MSG_QUIC_STREAM_FIN
    | MSG_QUIC_STREAM_UNI
    | MSG_QUIC_STREAM_DONTWAIT
    | MSG_QUIC_STREAM_SNDBLOCK
)
#: Everything the kernel's sendmsg accepts; any other bit is EINVAL.
SENDMSG_FLAGS: Final = (
    STREAM_FLAGS
    | MSG_BATCH
    | MSG_MORE
    | MSG_DONTWAIT
    | MSG_NOSIGNAL
    | MSG_WAITALL
    | MSG_QUIC_DATAGRAM
)
#: The subset the agent uses for handshake messages.
HANDSHAKE_SEND_FLAGS: Final = MSG_MORE | MSG_NOSIGNAL | MSG_DONTWAIT

QUIC_STREAM_TYPE_SERVER_MASK: Final = 0x01
QUIC_STREAM_TYPE_UNI_MASK: Final = 0x02
QUIC_STREAM_TYPE_MASK: Final = 0x03

# --- socket options ---------------------------------------------------------


class SockOpt(IntEnum):
    """``QUIC_SOCKOPT_*`` option numbers at level ``SOL_QUIC``."""

    EVENT = 0
    STREAM_OPEN = 1
    STREAM_RESET = 2
    STREAM_STOP_SENDING = 3
    CONNECTION_ID = 4
    CONNECTION_CLOSE = 5
    CONNECTION_MIGRATION = 6
    KEY_UPDATE = 7
    TRANSPORT_PARAM = 8
    CONFIG = 9
    TOKEN = 10
    ALPN = 11
    SESSION_TICKET = 12
    CRYPTO_SECRET = 13
    TRANSPORT_PARAM_EXT = 14

    @property
    def c_name(self) -> str:
        """The uapi macro name, for messages people will grep for."""
        return f"QUIC_SOCKOPT_{self.name}"


#: Kernel limits that shape buffers and argument checks.
MAX_OPTLEN: Final = 4096  # any setsockopt above this is EINVAL
ALPN_MAX_LEN: Final = 128
TOKEN_MAX_LEN: Final = 120
SESSION_TICKET_MIN_LEN: Final = 64
SESSION_TICKET_MAX_LEN: Final = 4096
TRANSPORT_PARAM_EXT_MAX_LEN: Final = 512
CRYPTO_SECRET_BUFFER_SIZE: Final = 48
CLOSE_PHRASE_BUFFER_SIZE: Final = 64


class CongestionAlgo(IntEnum):
    """``enum quic_cong_algo`` (the man page's BBR does not exist in the uapi)."""

    RENO = 0
    CUBIC = 1


class EventType(IntEnum):
    """``enum quic_event_type``; all are disabled until enabled with QUIC_SOCKOPT_EVENT."""

    NONE = 0
    STREAM_UPDATE = 1
    STREAM_MAX_DATA = 2
    STREAM_MAX_STREAM = 3
    CONNECTION_ID = 4
    CONNECTION_CLOSE = 5
    CONNECTION_MIGRATION = 6
    KEY_UPDATE = 7
    NEW_TOKEN = 8
    NEW_SESSION_TICKET = 9


class TransportError(IntEnum):
    """QUIC transport error codes (RFC 9000 §20.1) as the uapi names them."""

    NONE = 0x00
    INTERNAL = 0x01
    CONNECTION_REFUSED = 0x02
    FLOW_CONTROL = 0x03
    STREAM_LIMIT = 0x04
    STREAM_STATE = 0x05
    FINAL_SIZE = 0x06
    FRAME_ENCODING = 0x07
    TRANSPORT_PARAM = 0x08
    CONNECTION_ID_LIMIT = 0x09
    PROTOCOL_VIOLATION = 0x0A
    INVALID_TOKEN = 0x0B
    APPLICATION = 0x0C
    CRYPTO_BUF_EXCEEDED = 0x0D
    KEY_UPDATE = 0x0E
    AEAD_LIMIT_REACHED = 0x0F
    NO_VIABLE_PATH = 0x10
    VERSION_NEGOTIATION = 0x11
    CRYPTO = 0x0100


def crypto_error(alert: int) -> int:
    """CRYPTO_ERROR code carrying a TLS alert (RFC 9001 §4.8: 0x0100 + alert)."""
    if not 0 <= alert <= 0xFF:
        raise AbiError(f"TLS alert {alert} is not 0..255")
    return TransportError.CRYPTO + alert


# --- struct layouts ---------------------------------------------------------

_HANDSHAKE_INFO = struct.Struct("=B")
_STREAM_INFO = struct.Struct("=qI4x")
_TRANSPORT_PARAM = struct.Struct("=8BHHIIHH4Q")
_CONFIG = struct.Struct("=4I5B3xI")
_CONFIG_KTLS = struct.Struct("=4I5B3x")
_CRYPTO_SECRET = struct.Struct(f"=BBHI{CRYPTO_SECRET_BUFFER_SIZE}s")
_ERRINFO = struct.Struct("=qI4x")
_CONNECTION_CLOSE = struct.Struct(f"=IB3x{CLOSE_PHRASE_BUFFER_SIZE}s")
_EVENT_OPTION = struct.Struct("=BB")

HANDSHAKE_INFO_SIZE: Final = 1
STREAM_INFO_SIZE: Final = 16
TRANSPORT_PARAM_SIZE: Final = 56
CONFIG_SIZE: Final = 28
#: ktls-utils' private header stops before ``keepalive_probe_interval``.
CONFIG_SIZE_KTLS: Final = 24
CRYPTO_SECRET_SIZE: Final = 56
ERRINFO_SIZE: Final = 16
CONNECTION_CLOSE_SIZE: Final = 72
EVENT_OPTION_SIZE: Final = 2

#: (our '=' layout, the same fields with C alignment, expected size); a trailing
#: zero-count item makes ``@`` add the struct's tail padding.
_NATIVE_TWINS: Final = (
    (_HANDSHAKE_INFO, "@B", HANDSHAKE_INFO_SIZE),
    (_STREAM_INFO, "@qI0q", STREAM_INFO_SIZE),
    (_TRANSPORT_PARAM, "@8BHHIIHH4Q0q", TRANSPORT_PARAM_SIZE),
    (_CONFIG, "@4I5B3xI0I", CONFIG_SIZE),
    (_CONFIG_KTLS, "@4I5B3x0I", CONFIG_SIZE_KTLS),
    (_CRYPTO_SECRET, f"@BBHI{CRYPTO_SECRET_BUFFER_SIZE}s0I", CRYPTO_SECRET_SIZE),
    (_ERRINFO, "@qI0q", ERRINFO_SIZE),
    (_CONNECTION_CLOSE, f"@IB3x{CLOSE_PHRASE_BUFFER_SIZE}s0I", CONNECTION_CLOSE_SIZE),
    (_EVENT_OPTION, "@BB", EVENT_OPTION_SIZE),
)


def check_native_layout() -> None:
    """Raise ImportError unless the spec's sizes match this platform's C layout."""
    for ours, native, size in _NATIVE_TWINS:
        if ours.size != size or struct.calcsize(native) != size:
            raise ImportError(
                f"QUIC uapi layout {ours.format!r} is {ours.size} bytes here, C alignment "
                f"gives {struct.calcsize(native)}, the kernel expects {size}: unsupported ABI"
            )


check_native_layout()


def _pack(layout: struct.Struct, what: str, *values: object) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as exc:
        raise AbiError(f"struct {what}: {exc}") from exc


def _expect_size(data: bytes, what: str, *sizes: int) -> None:
    if len(data) not in sizes:
        wanted = " or ".join(str(s) for s in sizes)
        raise AbiError(f"struct {what} is {wanted} bytes, got {len(data)}")


def to_level(value: int) -> Level:
    """A kernel crypto level number as ``Level``; AbiError for QUIC_CRYPTO_MAX and above."""
    try:
        return Level(value)
    except ValueError:
        raise AbiError(f"crypto level {value} is not 0..3") from None


def pack_handshake_info(level: int) -> bytes:
    """``struct quic_handshake_info``: the crypto level byte."""
    return _pack(_HANDSHAKE_INFO, "quic_handshake_info", to_level(level))


def unpack_handshake_info(data: bytes) -> Level:
    _expect_size(data, "quic_handshake_info", HANDSHAKE_INFO_SIZE)
    return to_level(data[0])


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """``struct quic_stream_info``; stream_id -1 asks the kernel to pick."""

    stream_id: int = -1
    stream_flags: int = 0

    def pack(self) -> bytes:
        return _pack(_STREAM_INFO, "quic_stream_info", self.stream_id, self.stream_flags)

    @classmethod
    def unpack(cls, data: bytes) -> StreamInfo:
        _expect_size(data, "quic_stream_info", STREAM_INFO_SIZE)
        stream_id, flags = _STREAM_INFO.unpack(data)
        return cls(stream_id, flags)


@dataclass(frozen=True, slots=True)
class TransportParam:
    """``struct quic_transport_param`` with the man page's defaults.

    ``remote`` selects the peer's set: on get it is an input, on set it
    preloads remembered peer values for 0-RTT.  The kernel applies only
    non-zero fields on set, so a zero here means "leave as is".
    """

    remote: bool = False
    disable_active_migration: bool = False
    grease_quic_bit: bool = False
    stateless_reset: bool = False
    disable_1rtt_encryption: bool = False
    disable_compatible_version: bool = False
    active_connection_id_limit: int = 7
    ack_delay_exponent: int = 3
    max_datagram_frame_size: int = 0
    max_udp_payload_size: int = 65527
    max_idle_timeout: int = 30_000_000
    max_ack_delay: int = 25_000
    max_streams_bidi: int = 100
    max_streams_uni: int = 100
    max_data: int = 2_097_152
    max_stream_data_bidi_local: int = 262_144
    max_stream_data_bidi_remote: int = 262_144
    max_stream_data_uni: int = 262_144

    def pack(self) -> bytes:
        return _pack(
            _TRANSPORT_PARAM,
            "quic_transport_param",
            self.remote,
            self.disable_active_migration,
            self.grease_quic_bit,
            self.stateless_reset,
            self.disable_1rtt_encryption,
            self.disable_compatible_version,
            self.active_connection_id_limit,
            self.ack_delay_exponent,
            self.max_datagram_frame_size,
            self.max_udp_payload_size,
            self.max_idle_timeout,
            self.max_ack_delay,
            self.max_streams_bidi,
            self.max_streams_uni,
            self.max_data,
            self.max_stream_data_bidi_local,
            self.max_stream_data_bidi_remote,
            self.max_stream_data_uni,
        )

    @classmethod
    def unpack(cls, data: bytes) -> TransportParam:
        _expect_size(data, "quic_transport_param", TRANSPORT_PARAM_SIZE)
        v = _TRANSPORT_PARAM.unpack(data)
        return cls(bool(v[0]), bool(v[1]), bool(v[2]), bool(v[3]), bool(v[4]), bool(v[5]), *v[6:])


@dataclass(frozen=True, slots=True)
class Config:
    """``struct quic_config`` (upstream, 28 bytes).

    Defaults are all zero because the kernel applies only non-zero fields:
    ``Config()`` set on a socket changes nothing.  ``payload_cipher_type``,
    ``receive_session_ticket`` and ``certificate_request`` are read only by
    the handshake agent.
    """

    version: int = 0
    plpmtud_probe_interval: int = 0
    initial_smoothed_rtt: int = 0
    payload_cipher_type: int = 0
    congestion_control_algo: int = 0
    validate_peer_address: bool = False
    stream_data_nodelay: bool = False
    receive_session_ticket: int = 0
    certificate_request: int = 0
    keepalive_probe_interval: int = 0

    def pack(self) -> bytes:
        return _pack(
            _CONFIG,
            "quic_config",
            self.version,
            self.plpmtud_probe_interval,
            self.initial_smoothed_rtt,
            self.payload_cipher_type,
            self.congestion_control_algo,
            self.validate_peer_address,
            self.stream_data_nodelay,
            self.receive_session_ticket,
            self.certificate_request,
            self.keepalive_probe_interval,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Config:
        """Accepts 28 bytes or ktls-utils' 24 (then keepalive_probe_interval is 0)."""
        _expect_size(data, "quic_config", CONFIG_SIZE, CONFIG_SIZE_KTLS)
        full = len(data) == CONFIG_SIZE
        v = _CONFIG.unpack(data) if full else (*_CONFIG_KTLS.unpack(data), 0)
        return cls(v[0], v[1], v[2], v[3], v[4], bool(v[5]), bool(v[6]), v[7], v[8], v[9])


@dataclass(frozen=True, slots=True)
class CryptoSecret:
    """``struct quic_crypto_secret``: one traffic secret for one level and direction."""

    level: int
    send: bool
    cipher: int
    secret: bytes = b""

    def __repr__(self) -> str:  # never log key material
        return (
            f"CryptoSecret(level={self.level}, send={self.send}, cipher={self.cipher}, "
            f"secret=<{len(self.secret)} bytes>)"
        )

    def pack(self) -> bytearray:
        """Zero-padded to 48 bytes; a bytearray so the caller can wipe it after use."""
        if len(self.secret) > CRYPTO_SECRET_BUFFER_SIZE:
            raise AbiError(
                f"struct quic_crypto_secret: a {len(self.secret)}-byte secret does not fit "
                f"in {CRYPTO_SECRET_BUFFER_SIZE} bytes"
            )
        buf = bytearray(CRYPTO_SECRET_SIZE)
        try:
            _CRYPTO_SECRET.pack_into(buf, 0, self.send, self.level, 0, self.cipher, self.secret)
        except struct.error as exc:
            raise AbiError(f"struct quic_crypto_secret: {exc}") from exc
        return buf

    @classmethod
    def unpack(cls, data: bytes, secret_len: int = CRYPTO_SECRET_BUFFER_SIZE) -> CryptoSecret:
        """``secret_len`` trims the buffer to the cipher's secret size (32 or 48)."""
        _expect_size(data, "quic_crypto_secret", CRYPTO_SECRET_SIZE)
        send, level, _reserved, cipher, secret = _CRYPTO_SECRET.unpack(data)
        return cls(level, bool(send), cipher, secret[:secret_len])


@dataclass(frozen=True, slots=True)
class ErrInfo:
    """``struct quic_errinfo`` for STREAM_RESET / STREAM_STOP_SENDING."""

    stream_id: int
    errcode: int

    def pack(self) -> bytes:
        return _pack(_ERRINFO, "quic_errinfo", self.stream_id, self.errcode)

    @classmethod
    def unpack(cls, data: bytes) -> ErrInfo:
        _expect_size(data, "quic_errinfo", ERRINFO_SIZE)
        stream_id, errcode = _ERRINFO.unpack(data)
        return cls(stream_id, errcode)


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """``struct quic_connection_close`` (upstream, 72 bytes; not ktls-utils' copy).

    The kernel treats ``phrase`` as a C string in a 64-byte array, so at most
    63 bytes fit and none may be NUL.  ``frame`` is only reported, never set.
    """

    errcode: int = 0
    frame: int = 0
    phrase: bytes = b""

    def pack(self) -> bytes:
        limit = CLOSE_PHRASE_BUFFER_SIZE - 1
        if len(self.phrase) > limit or b"\0" in self.phrase:
            raise AbiError(f"close phrase must be at most {limit} bytes without NUL")
        return _pack(
            _CONNECTION_CLOSE, "quic_connection_close", self.errcode, self.frame, self.phrase
        )

    @classmethod
    def unpack(cls, data: bytes) -> ConnectionClose:
        _expect_size(data, "quic_connection_close", CONNECTION_CLOSE_SIZE)
        errcode, frame, phrase = _CONNECTION_CLOSE.unpack(data)
        return cls(errcode, frame, phrase.split(b"\0", 1)[0])


@dataclass(frozen=True, slots=True)
class EventOption:
    """``struct quic_event_option``: enable or disable one event type."""

    type: int
    on: bool

    def pack(self) -> bytes:
        return _pack(_EVENT_OPTION, "quic_event_option", self.type, self.on)

    @classmethod
    def unpack(cls, data: bytes) -> EventOption:
        _expect_size(data, "quic_event_option", EVENT_OPTION_SIZE)
        return cls(data[0], bool(data[1]))


# --- control messages -------------------------------------------------------

Cmsg = tuple[int, int, bytes]


def handshake_cmsg(level: int) -> list[Cmsg]:
    """The ``ancdata`` for ``socket.sendmsg`` of one handshake message at ``level``."""
    return [(SOL_QUIC, QUIC_HANDSHAKE_INFO, pack_handshake_info(level))]


def stream_cmsg(stream_id: int, flags: int) -> list[Cmsg]:
    """The ``ancdata`` for ``socket.sendmsg`` of stream data (``QUIC_STREAM_INFO``).

    ``stream_id`` -1 with ``MSG_QUIC_STREAM_NEW`` lets the kernel open the next
    stream; ``flags`` are stream flags (``STREAM_FLAGS``), e.g. NEW | FIN.
    """
    if flags & ~STREAM_FLAGS:
        raise AbiError(f"stream flags {flags & ~STREAM_FLAGS:#x} are not stream flags")
    return [(SOL_QUIC, QUIC_STREAM_INFO, StreamInfo(stream_id, flags).pack())]


def parse_stream_info(ancdata: Iterable[tuple[int, int, bytes]]) -> StreamInfo | None:
    """The ``QUIC_STREAM_INFO`` of received stream data; None when there is none."""
    data = _only_cmsg(ancdata, QUIC_STREAM_INFO, "QUIC_STREAM_INFO")
    return None if data is None else StreamInfo.unpack(data)


def parse_handshake_level(ancdata: Iterable[tuple[int, int, bytes]]) -> Level | None:
    """The level from ``socket.recvmsg``'s ancdata; None when no handshake cmsg came.

    Other cmsgs are ignored (the caller decides what their presence means);
    a malformed or repeated handshake cmsg is an AbiError, never a guess.
    """
    data = _only_cmsg(ancdata, QUIC_HANDSHAKE_INFO, "QUIC_HANDSHAKE_INFO")
    return None if data is None else unpack_handshake_info(data)


def _only_cmsg(ancdata: Iterable[tuple[int, int, bytes]], kind: int, name: str) -> bytes | None:
    """The payload of the one SOL_QUIC cmsg of ``kind``; AbiError when repeated."""
    found: bytes | None = None
    for cmsg_level, cmsg_type, data in ancdata:
        if cmsg_level != SOL_QUIC or cmsg_type != kind:
            continue
        if found is not None:
            raise AbiError(f"more than one {name} cmsg")
        found = bytes(data)
    return found


# --- ALPN list encoding -----------------------------------------------------


def parse_alpn(raw: bytes) -> tuple[bytes, ...]:
    """Split the kernel's comma list; ends at the first NUL, leading spaces skipped."""
    text = raw.split(b"\0", 1)[0]
    return tuple(entry for entry in (p.lstrip(b" ") for p in text.split(b",")) if entry)


def encode_alpn(protocols: Iterable[bytes | str]) -> bytes:
    """The comma-joined ASCII list QUIC_SOCKOPT_ALPN takes (1..128 bytes, no NUL).

    Entries the kernel would split or alter (commas, leading spaces) are
    refused rather than silently changed.
    """
    entries: list[bytes] = []
    for proto in protocols:
        try:
            entry = proto.encode("ascii") if isinstance(proto, str) else bytes(proto)
        except UnicodeEncodeError:
            raise AbiError(f"ALPN entry {proto!r} is not ASCII") from None
        if not entry or entry.startswith(b" ") or b"," in entry:
            raise AbiError(f"ALPN entry {entry!r} is empty, starts with a space or has a comma")
        if any(not 0x20 <= b < 0x7F for b in entry):
            raise AbiError(f"ALPN entry {entry!r} is not printable ASCII")
        entries.append(entry)
    joined = b",".join(entries)
    if not 0 < len(joined) <= ALPN_MAX_LEN:
        raise AbiError(f"ALPN list is {len(joined)} bytes; the kernel takes 1..{ALPN_MAX_LEN}")
    return joined
