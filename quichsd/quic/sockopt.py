# SPDX-License-Identifier: GPL-2.0-only
"""Typed QUIC socket operations for the handshake agent.

Each function is one system call on a socket-like object (``QuicSocket``):
a real ``socket.socket`` opened with IPPROTO_QUIC, or the userspace model.
Failures become ``QuicSocketError``, which keeps the errno (and the builtin
subclass, so ``except BlockingIOError`` still works) and names the option and
the step, because "Invalid argument" alone does not say which of a dozen
setsockopt calls the kernel refused.

Two CPython limits are worked around for kernel sockets only:
``socket.getsockopt`` caps ``buflen`` at 1024 (session tickets need 4096) and
cannot pass input bytes (QUIC_SOCKOPT_TRANSPORT_PARAM reads ``remote`` from
the buffer).  Those calls go to libc's getsockopt on ``fileno()``.  Other
objects get the full ``buflen``, and in/out calls through their
``getsockopt_inout(level, optname, data) -> bytes`` method.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from quichsd.quic.abi import (
    CONFIG_SIZE,
    CONNECTION_CLOSE_SIZE,
    HANDSHAKE_SEND_FLAGS,
    MAX_OPTLEN,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_MORE,
    MSG_NOSIGNAL,
    MSG_QUIC_DATAGRAM,
    MSG_QUIC_NOTIFICATION,
    MSG_QUIC_STREAM_FIN,
    MSG_QUIC_STREAM_NEW,
    MSG_TRUNC,
    RECV_ANCBUF_SIZE,
    SESSION_TICKET_MAX_LEN,
    SOL_QUIC,
    TRANSPORT_PARAM_EXT_MAX_LEN,
    TRANSPORT_PARAM_SIZE,
    AbiError,
    Config,
    ConnectionClose,
    CryptoSecret,
    SockOpt,
    TransportParam,
    encode_alpn,
    handshake_cmsg,
    parse_alpn,
    parse_handshake_level,
    parse_stream_info,
    stream_cmsg,
    to_level,
)
from quichsd.tls.levels import Level

#: getsockopt buffer sizes.  ALPN: the kernel refuses a buffer smaller than its
#: internal encoding (one length byte per entry, up to 129 bytes for a full
#: 128-byte list), so 128 as in tlshd can fail on a full list.
ALPN_BUFFER: int = 256
TRANSPORT_PARAM_EXT_BUFFER: int = TRANSPORT_PARAM_EXT_MAX_LEN
SESSION_TICKET_BUFFER: int = SESSION_TICKET_MAX_LEN
TOKEN_BUFFER: int = MAX_OPTLEN
CONNECTION_CLOSE_BUFFER: int = CONNECTION_CLOSE_SIZE
CONFIG_BUFFER: int = CONFIG_SIZE
#: One CRYPTO frame per recvmsg; 64 KiB holds any frame a UDP datagram can carry.
RECV_BUFFER: int = 65536

#: Levels the kernel sends handshake data at (EARLY has no CRYPTO frames).
SEND_LEVELS = frozenset({Level.INITIAL, Level.HANDSHAKE, Level.APP})
#: Levels QUIC_SOCKOPT_CRYPTO_SECRET accepts (INITIAL keys are derived in-kernel).
SECRET_LEVELS = frozenset({Level.EARLY, Level.HANDSHAKE, Level.APP})

_CPYTHON_GETSOCKOPT_MAX = 1024
_T = TypeVar("_T")


class QuicSocket(Protocol):
    """The socket methods these operations use (``socket.socket`` satisfies it)."""

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray, /) -> None: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def sendmsg(
        self, buffers: Iterable[bytes], ancdata: Iterable[tuple[int, int, bytes]], flags: int, /
    ) -> int: ...

    def recvmsg(
        self, bufsize: int, ancbufsize: int, flags: int, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]: ...

    def fileno(self) -> int: ...


if TYPE_CHECKING:

    def _kernel_sockets_qualify(sock: socket.socket) -> QuicSocket:
        return sock


class QuicSocketError(OSError):
    """An OSError from (or about) one QUIC socket operation.

    ``option`` is the socket option involved (None for handshake send/receive),
    ``step`` the call or check that failed, e.g. "getsockopt" or "recvmsg".
    """

    option: SockOpt | None
    step: str

    def __init__(
        self, err: int | None, message: str, *, option: SockOpt | None = None, step: str = ""
    ) -> None:
        if err is None:  # e.g. a socket timeout: keep "[Errno None]" out of the text
            super().__init__(message)
        else:
            super().__init__(err, message)
        self.option = option
        self.step = step


_ERROR_CLASSES: dict[type[OSError], type[QuicSocketError]] = {OSError: QuicSocketError}


def _error_class(base: type[OSError]) -> type[QuicSocketError]:
    """QuicSocketError mixed with a builtin OSError subclass (BlockingIOError, ...)."""
    cls = _ERROR_CLASSES.get(base)
    if cls is None:
        cls = type(f"Quic{base.__name__}", (QuicSocketError, base), {"__module__": __name__})
        _ERROR_CLASSES[base] = cls
    return cls


def _subject(option: SockOpt | None) -> str:
    return option.c_name if option is not None else "QUIC handshake data"


@contextmanager
def _step(option: SockOpt | None, step: str, detail: str = "") -> Iterator[None]:
    """Re-raise OSError as QuicSocketError naming the option and step."""
    try:
        yield
    except QuicSocketError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f"{_subject(option)}: {step}" + (f" ({detail})" if detail else "")
        cls = _error_class(type(exc))
        raise cls(exc.errno, f"{where}: {reason}", option=option, step=step) from exc


def _fail(err: int, option: SockOpt | None, step: str, what: str) -> QuicSocketError:
    return QuicSocketError(err, f"{_subject(option)}: {step}: {what}", option=option, step=step)


# --- raw getsockopt for kernel sockets ---------------------------------------


@functools.cache
def _libc_getsockopt() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.getsockopt
    fn.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
    ]
    fn.restype = ctypes.c_int
    result: Callable[..., int] = fn
    return result


def _kernel_getsockopt(
    sock: socket.socket, level: int, optname: int, buflen: int, data: bytes = b""
) -> bytes:
    """getsockopt(2) on the descriptor: any buffer size, optional input bytes."""
    if len(data) > buflen:
        raise ValueError(f"{len(data)} input bytes do not fit a {buflen}-byte buffer")
    buf = ctypes.create_string_buffer(data, buflen)
    optlen = ctypes.c_uint32(buflen)
    if _libc_getsockopt()(sock.fileno(), level, optname, buf, ctypes.byref(optlen)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[: optlen.value]


def _getsockopt(sock: QuicSocket, option: SockOpt, buflen: int) -> bytes:
    with _step(option, "getsockopt", f"{buflen}-byte buffer"):
        if isinstance(sock, socket.socket) and buflen > _CPYTHON_GETSOCKOPT_MAX:
            return _kernel_getsockopt(sock, SOL_QUIC, int(option), buflen)
        return bytes(sock.getsockopt(SOL_QUIC, int(option), buflen))


def getsockopt_inout(sock: QuicSocket, option: SockOpt, data: bytes) -> bytes:
    """A getsockopt whose buffer carries input (``remote``, stream id, event type)."""
    with _step(option, "getsockopt", f"in/out, {len(data)} bytes"):
        if isinstance(sock, socket.socket):
            return _kernel_getsockopt(sock, SOL_QUIC, int(option), len(data), data)
        method = getattr(sock, "getsockopt_inout", None)
        if method is None:
            raise TypeError(f"{type(sock).__name__} has no getsockopt_inout()")
        return bytes(method(SOL_QUIC, int(option), data))


def _setsockopt(sock: QuicSocket, option: SockOpt, value: bytes | bytearray) -> None:
    if len(value) > MAX_OPTLEN:
        raise _fail(errno.EINVAL, option, "setsockopt", f"{len(value)} bytes exceed {MAX_OPTLEN}")
    with _step(option, "setsockopt", f"{len(value)} bytes"):
        sock.setsockopt(SOL_QUIC, int(option), value)


def _unpack(option: SockOpt, parse: Callable[[bytes], _T], raw: bytes) -> _T:
    try:
        return parse(raw)
    except AbiError as exc:
        raise _fail(errno.EPROTO, option, "decode", str(exc)) from exc


# --- handshake data ----------------------------------------------------------


def send_handshake(
    sock: QuicSocket, level: int, data: bytes, more: bool, *, dontwait: bool = False
) -> None:
    """Queue one handshake message at ``level`` (a ``Level``) in CRYPTO frames.

    ``more`` (MSG_MORE) lets the kernel coalesce the flight; it must be False
    on the flight's last message or nothing is transmitted.  MSG_NOSIGNAL is
    always set: a dead connection should be an error here, not a signal.
    """
    level = to_level(level)
    if level not in SEND_LEVELS:
        raise ValueError(f"handshake data cannot be sent at level {level.name}")
    if not data:
        raise ValueError("an empty handshake message (the kernel says EMSGSIZE)")
    flags = MSG_NOSIGNAL | (MSG_MORE if more else 0) | (MSG_DONTWAIT if dontwait else 0)
    assert flags & ~HANDSHAKE_SEND_FLAGS == 0
    _sendmsg(sock, data, handshake_cmsg(level), flags, f"{len(data)} bytes at {level.name}")


def _sendmsg(
    sock: QuicSocket, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, detail: str
) -> None:
    """One sendmsg of all of ``data``; anything less is an error naming ``detail``."""
    with _step(None, "sendmsg", detail):
        sent = sock.sendmsg([bytes(data)], ancdata, flags)
    if sent != len(data):
        raise _fail(errno.EIO, None, "sendmsg", f"{detail}: only {sent} accepted")


def send_flight(
    sock: QuicSocket, messages: Sequence[tuple[int, bytes]], *, dontwait: bool = False
) -> None:
    """Send a flight: MSG_MORE on every message except the last, which flushes."""
    last = len(messages) - 1
    for index, (level, data) in enumerate(messages):
        send_handshake(sock, level, data, index < last, dontwait=dontwait)


def recv_handshake(
    sock: QuicSocket, bufsize: int = RECV_BUFFER, *, dontwait: bool = False
) -> tuple[Level, bytes]:
    """Read one chunk of peer handshake data and its level.

    Anything but plain handshake data is an error (EPROTO; EMSGSIZE for
    MSG_TRUNC) rather than something to guess about: reusing a previous
    level, as tlshd does, feeds event or stream bytes to TLS.
    """
    flags = MSG_DONTWAIT if dontwait else 0
    with _step(None, "recvmsg", f"{bufsize}-byte buffer"):
        data, ancdata, msg_flags, _addr = sock.recvmsg(bufsize, RECV_ANCBUF_SIZE, flags)
    if msg_flags & MSG_QUIC_NOTIFICATION:
        raise _fail(errno.EPROTO, None, "recvmsg", "got an event notification, not handshake data")
    if msg_flags & MSG_QUIC_DATAGRAM:
        raise _fail(errno.EPROTO, None, "recvmsg", "got a datagram, not handshake data")
    if msg_flags & MSG_CTRUNC:
        raise _fail(errno.EPROTO, None, "recvmsg", "control data truncated (MSG_CTRUNC)")
    if msg_flags & MSG_TRUNC:
        raise _fail(errno.EMSGSIZE, None, "recvmsg", f"message truncated to {bufsize} bytes")
    if not data:
        raise _fail(errno.EPROTO, None, "recvmsg", "zero-length read")
    try:
        level = parse_handshake_level(ancdata)
    except AbiError as exc:
        raise _fail(errno.EPROTO, None, "recvmsg", str(exc)) from exc
    if level is None:
        kinds = ", ".join(f"({lvl}, {typ})" for lvl, typ, _ in ancdata) or "none"
        raise _fail(
            errno.EPROTO,
            None,
            "recvmsg",
            f"{len(data)} bytes without a QUIC_HANDSHAKE_INFO cmsg (cmsgs: {kinds})",
        )
    return level, bytes(data)


# --- stream data (after the handshake) -------------------------------------------


def send_stream(
    sock: QuicSocket, data: bytes, stream_id: int = -1, *, new: bool = True, fin: bool = True
) -> None:
    """Send ``data`` on a stream with a QUIC_STREAM_INFO cmsg (stream -1: the kernel opens one).

    Before the handshake (a resuming client), the kernel sends it as 0-RTT once
    the EARLY key is installed, else with the 1-RTT key.
    """
    flags = (MSG_QUIC_STREAM_NEW if new else 0) | (MSG_QUIC_STREAM_FIN if fin else 0)
    detail = f"{len(data)} bytes on stream {stream_id}"
    _sendmsg(sock, data, stream_cmsg(stream_id, flags), MSG_NOSIGNAL, detail)


def recv_stream(
    sock: QuicSocket, bufsize: int = RECV_BUFFER, *, dontwait: bool = False
) -> tuple[int, bytes, bool]:
    """One piece of stream data: (stream id, bytes, FIN); event notifications are skipped."""
    while True:
        with _step(None, "recvmsg", f"{bufsize}-byte buffer for stream data"):
            data, ancdata, msg_flags, _addr = sock.recvmsg(
                bufsize, RECV_ANCBUF_SIZE, MSG_DONTWAIT if dontwait else 0
            )
        if msg_flags & MSG_QUIC_NOTIFICATION:
            continue
        if msg_flags & MSG_CTRUNC:
            raise _fail(errno.EPROTO, None, "recvmsg", "control data truncated (MSG_CTRUNC)")
        try:
            info = parse_stream_info(ancdata)
        except AbiError as exc:
            raise _fail(errno.EPROTO, None, "recvmsg", str(exc)) from exc
        if info is None:
            raise _fail(errno.EPROTO, None, "recvmsg", "data without a QUIC_STREAM_INFO cmsg")
        return info.stream_id, bytes(data), bool(info.stream_flags & MSG_QUIC_STREAM_FIN)


# --- secrets -------------------------------------------------------------------


def install_secret(sock: QuicSocket, level: int, send: bool, cipher: int, secret: bytes) -> None:
    """Install one traffic secret (QUIC_SOCKOPT_CRYPTO_SECRET); ``cipher`` is a ``Cipher``.

    The packed copy is wiped after the call; the caller owns ``secret``.
    """
    level = to_level(level)
    if level not in SECRET_LEVELS:
        raise ValueError(f"secrets cannot be installed at level {level.name}")
    buf = CryptoSecret(level, send, cipher, secret).pack()
    try:
        detail = f"{'send' if send else 'receive'} {level.name}, cipher {int(cipher)}"
        with _step(SockOpt.CRYPTO_SECRET, "setsockopt", detail):
            sock.setsockopt(SOL_QUIC, int(SockOpt.CRYPTO_SECRET), buf)
    finally:
        buf[:] = bytes(len(buf))


# --- transport parameters --------------------------------------------------------


def get_transport_param_ext(sock: QuicSocket) -> bytes:
    """The local quic_transport_parameters extension body (only while ESTABLISHING)."""
    return _getsockopt(sock, SockOpt.TRANSPORT_PARAM_EXT, TRANSPORT_PARAM_EXT_BUFFER)


def set_transport_param_ext(sock: QuicSocket, data: bytes) -> None:
    """Hand the peer's extension body to the kernel, which parses and validates it."""
    if len(data) > TRANSPORT_PARAM_EXT_MAX_LEN:
        raise _fail(
            errno.EINVAL,
            SockOpt.TRANSPORT_PARAM_EXT,
            "setsockopt",
            f"{len(data)} bytes exceed {TRANSPORT_PARAM_EXT_MAX_LEN}",
        )
    _setsockopt(sock, SockOpt.TRANSPORT_PARAM_EXT, data)


def get_transport_param(sock: QuicSocket, remote: bool = False) -> TransportParam:
    """Local (or, with ``remote``, the peer's) transport parameters."""
    request = bytearray(TRANSPORT_PARAM_SIZE)
    request[0] = 1 if remote else 0
    raw = getsockopt_inout(sock, SockOpt.TRANSPORT_PARAM, bytes(request))
    return _unpack(SockOpt.TRANSPORT_PARAM, TransportParam.unpack, raw)


def set_transport_param(sock: QuicSocket, param: TransportParam) -> None:
    _setsockopt(sock, SockOpt.TRANSPORT_PARAM, param.pack())


# --- ALPN, config, tickets, tokens ------------------------------------------------


def get_alpn(sock: QuicSocket) -> tuple[bytes, ...]:
    """The socket's ALPN list (empty when none is set)."""
    return parse_alpn(_getsockopt(sock, SockOpt.ALPN, ALPN_BUFFER))


def set_alpn(sock: QuicSocket, protocols: Iterable[bytes | str]) -> None:
    """Set the offered list, or on a server the one selected protocol."""
    try:
        value = encode_alpn(protocols)
    except AbiError as exc:
        raise _fail(errno.EINVAL, SockOpt.ALPN, "encode", str(exc)) from exc
    _setsockopt(sock, SockOpt.ALPN, value)


def get_config(sock: QuicSocket) -> Config:
    return _unpack(SockOpt.CONFIG, Config.unpack, _getsockopt(sock, SockOpt.CONFIG, CONFIG_BUFFER))


def set_config(sock: QuicSocket, config: Config) -> None:
    """Only non-zero fields take effect in the kernel."""
    _setsockopt(sock, SockOpt.CONFIG, config.pack())


def get_session_ticket(sock: QuicSocket) -> bytes:
    """Client: resumption data or the received NewSessionTicket; server: the ticket key."""
    return _getsockopt(sock, SockOpt.SESSION_TICKET, SESSION_TICKET_BUFFER)


def set_session_ticket(sock: QuicSocket, data: bytes) -> None:
    """The kernel takes 64..4096 bytes and says EINVAL otherwise."""
    _setsockopt(sock, SockOpt.SESSION_TICKET, data)


def get_token(sock: QuicSocket) -> bytes:
    """Client only (servers get EINVAL): the address-validation token."""
    return _getsockopt(sock, SockOpt.TOKEN, TOKEN_BUFFER)


def set_token(sock: QuicSocket, token: bytes) -> None:
    _setsockopt(sock, SockOpt.TOKEN, token)


# --- connection close -----------------------------------------------------------


def set_connection_close(sock: QuicSocket, errcode: int, phrase: bytes | str = b"") -> None:
    """Error code and reason phrase (UTF-8, at most 63 bytes) sent when the socket closes."""
    text = phrase.encode() if isinstance(phrase, str) else bytes(phrase)
    try:
        value = ConnectionClose(errcode, 0, text).pack()
    except AbiError as exc:
        raise _fail(errno.EINVAL, SockOpt.CONNECTION_CLOSE, "encode", str(exc)) from exc
    _setsockopt(sock, SockOpt.CONNECTION_CLOSE, value)


def get_connection_close(sock: QuicSocket) -> ConnectionClose:
    """After a close: the peer's error code, frame type and phrase."""
    raw = _getsockopt(sock, SockOpt.CONNECTION_CLOSE, CONNECTION_CLOSE_BUFFER)
    return _unpack(SockOpt.CONNECTION_CLOSE, ConnectionClose.unpack, raw)
