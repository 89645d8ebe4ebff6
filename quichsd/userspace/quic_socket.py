# SPDX-License-Identifier: GPL-2.0-only
"""``ModelQuicSocket``: one QUIC socket with the kernel's user ABI, in userspace.

It satisfies ``quichsd.quic.sockopt.QuicSocket`` (plus ``getsockopt_inout``),
so the agent's typed socket operations run on it unchanged.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from quichsd.quic.abi import (
    HANDSHAKE_CMSG_SPACE,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_EOR,
    MSG_MORE,
    MSG_QUIC_DATAGRAM,
    MSG_QUIC_STREAM_FIN,
    MSG_QUIC_STREAM_UNI,
    QUIC_HANDSHAKE_INFO,
    QUIC_STREAM_INFO,
    SENDMSG_FLAGS,
    SOL_QUIC,
    STREAM_CMSG_SPACE,
    AbiError,
    Config,
    StreamInfo,
    TransportParam,
    pack_handshake_info,
    parse_handshake_level,
)
from quichsd.tls.levels import Level
from quichsd.userspace import options
from quichsd.userspace.endpoint import Endpoint, check_loopback
from quichsd.userspace.errors import fail
from quichsd.userspace.session import Session, Settings, SockState

Ancillary = list[tuple[int, int, bytes]]


class ModelQuicSocket:
    """A client socket (``connect``) or a server socket (``ModelQuicListener.accept``).

    ``server_name`` is what the handshake upcall would carry as the peer's
    name; the kernel socket has no such option.
    """

    def __init__(self, session: Session, *, server_name: str | None = None) -> None:
        self._session = session
        self._timeout: float | None = None
        self._closed = False
        self.server_name = server_name

    @classmethod
    def client(cls, *, server_name: str | None = None) -> ModelQuicSocket:
        """An unconnected client socket: set options, then ``connect_to``."""
        return cls(
            Session(threading.RLock(), server=False, settings=Settings()), server_name=server_name
        )

    @classmethod
    def connect(
        cls,
        address: tuple[str, int],
        *,
        alpn: Iterable[bytes | str] = (),
        config: Config | None = None,
        transport_param: TransportParam | None = None,
        session_ticket: bytes | None = None,
        token: bytes | None = None,
        server_name: str | None = None,
    ) -> ModelQuicSocket:
        """What a kernel consumer does before the handshake upcall: options, then connect()."""
        sock = cls.client(server_name=server_name)
        try:
            with sock._session.lock:
                options.preset(
                    sock._session,
                    alpn=tuple(alpn),
                    config=config,
                    transport_param=transport_param,
                    session_ticket=session_ticket,
                    token=token,
                )
            sock.connect_to(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect_to(self, address: tuple[str, int]) -> None:
        """connect(2): derive Initial keys; nothing is sent until the agent's ClientHello."""
        peer = check_loopback(address)
        self._check_open()
        session = self._session
        with session.lock:
            if session.conn is not None or session.state is not SockState.CLOSED:
                raise fail(errno.EISCONN, "already connected")
            conn = session.new_connection()
            endpoint = Endpoint(session.lock, name="quic-model-client")
            session.start(endpoint, peer, conn)
            conn.connect(peer, time.monotonic())
            session.after_io()

    # -- what the kernel consumer and the agent see ------------------------------------

    @property
    def state(self) -> SockState:
        return self._session.state

    @property
    def is_server(self) -> bool:
        return self._session.server

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return self._session.peer

    @property
    def local_address(self) -> tuple[str, int] | None:
        endpoint = self._session.endpoint
        return None if endpoint is None else endpoint.address

    @property
    def io_failures(self) -> list[Exception]:
        """Exceptions the I/O thread caught while processing input (should stay empty)."""
        endpoint = self._session.endpoint
        return [] if endpoint is None else list(endpoint.failures)

    @property
    def installed_keys(self) -> frozenset[tuple[int, bool]]:
        """(level, send) of each secret the agent installed; a server that accepted 0-RTT
        holds the EARLY receive key."""
        with self._session.lock:
            return frozenset((int(level), send) for level, send in self._session.keys)

    def kept_packets(self, level: int) -> int:
        """Packets received at ``level`` that wait for its receive key."""
        with self._session.lock:
            conn = self._session.conn
            return 0 if conn is None else conn.kept_packets(Level(level))

    def fileno(self) -> int:
        """An eventfd, readable exactly while ``recvmsg`` would not block."""
        return self._session.readiness.fileno()

    def settimeout(self, timeout: float | None) -> None:
        """Blocking recvmsg/recv_stream give up after this long (EAGAIN, like SO_RCVTIMEO)."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray, /) -> None:
        self._check_open()
        with self._session.lock:
            options.set_option(self._session, level, optname, bytes(value))

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        self._check_open()
        with self._session.lock:
            return options.get_option(self._session, level, optname, buflen)

    def getsockopt_inout(self, level: int, optname: int, data: bytes, /) -> bytes:
        self._check_open()
        with self._session.lock:
            return options.get_option(self._session, level, optname, len(data), bytes(data))

    def sendmsg(
        self,
        buffers: Iterable[bytes],
        ancdata: Iterable[tuple[int, int, bytes]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        self._check_open()
        data = b"".join(bytes(b) for b in buffers)
        cmsgs = [(lvl, typ, bytes(payload)) for lvl, typ, payload in ancdata]
        if flags & ~SENDMSG_FLAGS:
            raise fail(errno.EINVAL, f"sendmsg flags {flags & ~SENDMSG_FLAGS:#x}")
        if flags & MSG_QUIC_DATAGRAM:
            raise fail(errno.EOPNOTSUPP, "DATAGRAM frames are not emulated")
        try:
            level = parse_handshake_level(cmsgs)
        except AbiError as exc:
            raise fail(errno.EINVAL, str(exc)) from exc
        session = self._session
        with session.lock:
            if level is not None:
                session.send_handshake(level, data, more=bool(flags & MSG_MORE))
                return len(data)
            info = _stream_info(cmsgs)
            stream_flags = info.stream_flags | flags
            stream_id = info.stream_id
            if stream_id < 0:
                stream_id = self.next_stream_id(
                    unidirectional=bool(stream_flags & MSG_QUIC_STREAM_UNI)
                )
            session.send_stream(stream_id, data, fin=bool(stream_flags & MSG_QUIC_STREAM_FIN))
            return len(data)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, Ancillary, int, None]:
        """One CRYPTO run (with a QUIC_HANDSHAKE_INFO cmsg) or one piece of stream data."""
        self._check_open()
        session = self._session
        with session.lock:
            self._wait(lambda: bool(session.queue), bool(flags & MSG_DONTWAIT), self._timeout)
            piece = session.queue.take(bufsize)
            assert piece is not None
            session.readiness.update(bool(session.queue) or session.state is SockState.CLOSED)
        item = piece.item
        msg_flags = MSG_EOR if piece.complete and (item.level is not None or item.fin) else 0
        if item.level is not None:
            cmsg = (SOL_QUIC, QUIC_HANDSHAKE_INFO, pack_handshake_info(item.level))
            space = HANDSHAKE_CMSG_SPACE
        else:
            fin = MSG_QUIC_STREAM_FIN if piece.complete and item.fin else 0
            cmsg = (SOL_QUIC, QUIC_STREAM_INFO, StreamInfo(item.stream_id, fin).pack())
            space = STREAM_CMSG_SPACE
        if ancbufsize < space:
            return piece.data, [], msg_flags | MSG_CTRUNC, None
        return piece.data, [cmsg], msg_flags, None

    def _wait(self, ready: Callable[[], bool], dontwait: bool, timeout: float | None) -> None:
        """Waits (lock held) until ``ready()``; ENOTCONN once closed, EAGAIN when not waiting."""
        session = self._session
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if session.state is SockState.CLOSED:
                raise fail(errno.ENOTCONN, "the connection is closed")
            remaining = None if deadline is None else deadline - time.monotonic()
            if dontwait or (remaining is not None and remaining <= 0):
                raise fail(errno.EAGAIN, "nothing to receive")
            session.cond.wait(remaining)

    def _check_open(self) -> None:
        if self._closed:
            raise fail(errno.EBADF, "the socket is closed")

    # -- streams, after the handshake ------------------------------------------------------

    def next_stream_id(self, unidirectional: bool = False) -> int:
        with self._session.lock:
            conn = self._session.conn
            if conn is None:
                raise fail(errno.ENOTCONN, "the socket is not connected")
            return conn.get_next_available_stream_id(is_unidirectional=unidirectional)

    def send_stream(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self._check_open()
        with self._session.lock:
            self._session.send_stream(stream_id, bytes(data), fin)

    def recv_stream(self, timeout: float | None = None) -> tuple[int, bytes, bool]:
        """The next stream delivery: (stream id, bytes, FIN); handshake data stays queued."""
        self._check_open()
        session = self._session
        with session.lock:
            self._wait(lambda: session.queue.has_stream_data, timeout == 0, timeout)
            item = session.queue.take_stream()
            assert item is not None
            session.readiness.update(bool(session.queue) or session.state is SockState.CLOSED)
        return item.stream_id, item.data, item.fin

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Sends CONNECTION_CLOSE (the CONNECTION_CLOSE option's code, if set) and stops I/O."""
        self._closed = True
        with self._session.lock:
            endpoint = self._session.release()
        if endpoint is not None:
            endpoint.close()

    def __enter__(self) -> ModelQuicSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stream_info(cmsgs: Ancillary) -> StreamInfo:
    for level, kind, payload in cmsgs:
        if level == SOL_QUIC and kind == QUIC_STREAM_INFO:
            try:
                return StreamInfo.unpack(payload)
            except AbiError as exc:
                raise fail(errno.EINVAL, str(exc)) from exc
    raise fail(errno.EINVAL, "stream data needs a QUIC_STREAM_INFO cmsg (the model requires one)")
