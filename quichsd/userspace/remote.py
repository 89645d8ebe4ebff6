# SPDX-License-Identifier: GPL-2.0-only
"""A ``ModelQuicSocket`` reachable through a real file descriptor, for agents in other processes.

The daemon hands a request's socket to a forked worker by SCM_RIGHTS; a model
socket lives in one process's memory.  ``export_socket(model_socket)`` makes an
AF_UNIX SOCK_SEQPACKET pair, serves the model socket's operations on one end
from a thread, and returns the other end: that fd is what a test submits to
the handshake family model as "the consumer's socket" (it is identified by
``(st_dev, st_ino)`` like any socket).  Where the fd arrives,
``RemoteQuicSocket(fd)`` implements the ``quichsd.quic.sockopt.QuicSocket``
protocol (plus ``getsockopt_inout``, ``getpeername``, ``close``...) by request
and reply over it; errors come back as ``OSError`` with the model's errno and
text, so ``BlockingIOError`` for EAGAIN, ENOTCONN, EINVAL... as from the model.

Readiness: ``RemoteQuicSocket.fileno()`` is the fd itself, readable while a
"readable" notice from the server waits in it.  The server sends a notice when
the model socket becomes readable and none is outstanding (it watches a dup of
the model's eventfd).  The client drops notices (and stale replies) that it
reads while waiting for a reply; so after each request the server re-checks
the model, and if it is readable, flags the reply "notice follows" and sends a
notice right behind it, and the client waits (reading nothing) until that
notice has arrived before returning.  Hence, when any call returns, the fd is
readable if the model socket was readable after the call; later changes
arrive as notices.  Wakeups can be spurious (``recvmsg`` with MSG_DONTWAIT then
raises ``BlockingIOError``) but are never lost, and at most one notice waits
between two calls, so a level-triggered reader does not spin.  ``recvmsg``
without MSG_DONTWAIT blocks on the client side (poll the fd, retry), so the
server never blocks; ``settimeout`` bounds that wait (EAGAIN after it, like
the model's SO_RCVTIMEO).

Identification: the serving end is bound to an abstract address starting with
``PEER_NAME_PREFIX``, so ``is_remote_model_socket(fd)`` is a getsockopt and a
getpeername on the fd, with nothing read from it (another process may be the
one doing RPCs).  ``open_remote_or_kernel`` and ``transport_of_remote_or_kernel``
are the daemon's wiring for these sockets (``serve.py``, daemon/wiring.py).

Lifetime: as with a kernel socket, the fd is a reference, not the socket:
closing a ``RemoteQuicSocket`` (the agent's copy) never closes the model
socket, which stays the test's (the consumer's).  The serving thread ends when
every copy of the exported end is closed (the test's, the family's, the
daemon's, the worker's), on ``ExportedSocket.stop_serving()``, or when the
client cannot be written to; it then closes its end and its dup of the model's
eventfd.  The model socket being closed is seen within ``POLL_INTERVAL`` and
reported readable (recvmsg then fails with the model's EBADF).

Limits: one request at a time per fd (RPCs of one ``RemoteQuicSocket`` are
serialised by a lock; two processes doing RPCs on copies of one fd at once
could take each other's replies and then time out with ETIMEDOUT; nothing here
needs that).  A request larger than the socket's send buffer fails with
EMSGSIZE; ``recvmsg`` returns at most about half the serving end's send buffer
(>= 100 KiB) per call, the rest stays queued as a partial read, as with a
small buffer.  The bytes on the wire are this module's private format
(versioned by the peer name), not an ABI.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from quichsd.daemon.service import transport_of
from quichsd.quic.abi import MSG_DONTWAIT

if TYPE_CHECKING:
    from quichsd.quic.sockopt import QuicSocket
    from quichsd.userspace.quic_socket import ModelQuicSocket

__all__ = [
    "PEER_NAME_PREFIX",
    "ExportedSocket",
    "RemoteQuicSocket",
    "export_socket",
    "is_remote_model_socket",
    "open_remote_or_kernel",
    "transport_of_remote_or_kernel",
]

Ancillary = list[tuple[int, int, bytes]]

#: The abstract-namespace address of every serving end (version 1 of the format).
PEER_NAME_PREFIX = b"\0quichsd-model-quic/1/"
#: How often the serving thread looks for a closed model socket or a stop request (s).
POLL_INTERVAL = 0.2
#: Default bound on waiting for one reply (s); the server answers in microseconds.
RPC_TIMEOUT = 30.0
#: How long the server waits to write a reply to a client that does not read (s).
SEND_TIMEOUT = 10.0
#: Asked for on both ends; the kernel caps it at net.core.wmem_max and doubles it.
_SOCKET_BUFFER = 1 << 20
#: Larger messages are a protocol error (the kernel cannot deliver them anyway).
_MAX_MESSAGE = 16 << 20
_MAX_ERROR_TEXT = 1000

# Requests: one op byte and a sequence number, then the op's fields.
_OP_SETSOCKOPT = 1
_OP_GETSOCKOPT = 2
_OP_GETSOCKOPT_INOUT = 3
_OP_SENDMSG = 4
_OP_RECVMSG = 5
_OP_GETPEERNAME = 6
_OP_GETSOCKNAME = 7
# From the server: a reply (with the request's sequence number) or a notice (0).
_REPLY_OK = 0x80
_REPLY_ERROR = 0x81
_NOTICE_READABLE = 0x82
#: Or'ed into a reply's kind: a readable notice is sent right behind this reply.
_NOTICE_FOLLOWS = 0x40

_HEADER = struct.Struct("<BI")
_I64 = struct.Struct("<q")
_TWO = struct.Struct("<qq")
_THREE = struct.Struct("<qqq")
_COUNT = struct.Struct("<H")
_CMSG = struct.Struct("<qqI")
_ERRNO = struct.Struct("<i")
_PORT = struct.Struct("<H")

_export_ids = itertools.count(1)


class _ProtocolError(Exception):
    """A message this module's peer could not have sent."""


# --- the wire format ------------------------------------------------------------------


def _pack(fmt: struct.Struct, *values: int) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise OverflowError(str(exc)) from None


def _pack_cmsgs(cmsgs: Iterable[tuple[int, int, bytes]]) -> bytes:
    items = [(int(level), int(kind), bytes(data)) for level, kind, data in cmsgs]
    parts = [_pack(_COUNT, len(items))]
    for level, kind, data in items:
        parts.append(_pack(_CMSG, level, kind, len(data)))
        parts.append(data)
    return b"".join(parts)


def _unpack_cmsgs(buf: bytes, offset: int) -> tuple[Ancillary, int]:
    try:
        (count,) = _COUNT.unpack_from(buf, offset)
        offset += _COUNT.size
        cmsgs: Ancillary = []
        for _ in range(count):
            level, kind, size = _CMSG.unpack_from(buf, offset)
            offset += _CMSG.size
            if offset + size > len(buf):
                raise _ProtocolError("control message past the end")
            cmsgs.append((level, kind, buf[offset : offset + size]))
            offset += size
    except struct.error as exc:
        raise _ProtocolError(str(exc)) from None
    return cmsgs, offset


def _pack_address(address: tuple[str, int]) -> bytes:
    return _PORT.pack(address[1]) + address[0].encode()


def _unpack_address(buf: bytes) -> tuple[str, int]:
    try:
        (port,) = _PORT.unpack_from(buf)
        return buf[_PORT.size :].decode(), port
    except (struct.error, UnicodeDecodeError) as exc:
        raise _ProtocolError(f"address: {exc}") from None


def _recv_message(sock: socket.socket, peek: bytearray) -> bytes:
    """One whole message, without blocking: b"" at EOF; BlockingIOError when none waits."""
    size = sock.recv_into(peek, 1, socket.MSG_PEEK | socket.MSG_TRUNC | MSG_DONTWAIT)
    if size > _MAX_MESSAGE:
        raise _ProtocolError(f"a {size}-byte message")
    # Neither side ever sends an empty message, so 0 is the peer's close.
    return sock.recv(size, MSG_DONTWAIT) if size else b""


def _set_buffers(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)


# --- the serving side -------------------------------------------------------------------


class ExportedSocket(socket.socket):
    """The exported end: a plain AF_UNIX SOCK_SEQPACKET socket, plus its server's state.

    ``close()`` closes this copy only; the server stops once every copy is
    closed (or on ``stop_serving()``).
    """

    _server: _Server | None = None

    @property
    def serving(self) -> bool:
        """Whether the serving thread still runs."""
        return self._server is not None and self._server.thread.is_alive()

    @property
    def server_failures(self) -> list[BaseException]:
        """Unexpected exceptions the server caught (answered EIO); should stay empty."""
        return [] if self._server is None else list(self._server.failures)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Waits for the serving thread to end; True when it has."""
        if self._server is None:
            return True
        self._server.thread.join(timeout)
        return not self._server.thread.is_alive()

    def stop_serving(self, timeout: float | None = 5.0) -> bool:
        """Ends the server now (remote ends then see ENOTCONN); True when it has stopped."""
        if self._server is None:
            return True
        self._server.stop()
        return self.wait_stopped(timeout)


def export_socket(model_socket: ModelQuicSocket) -> ExportedSocket:
    """Serves ``model_socket`` from a thread; returns the end to hand out (yours to close)."""
    served, exported = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        _bind_unique(served)
        _set_buffers(served)
        _set_buffers(exported)
        model_fd = model_socket.fileno()
        events = os.dup(model_fd) if model_fd >= 0 else None
        try:
            server = _Server(model_socket, served, events)
        except BaseException:
            if events is not None:
                os.close(events)
            raise
        result = ExportedSocket(fileno=exported.detach())
    except BaseException:
        served.close()
        exported.close()
        raise
    result._server = server
    server.thread.start()
    return result


def _bind_unique(sock: socket.socket) -> None:
    for _ in range(8):
        name = PEER_NAME_PREFIX + f"{os.getpid()}/{next(_export_ids)}/".encode()
        try:
            sock.bind(name + secrets.token_hex(6).encode())
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free abstract address for an exported model socket")


class _Gone(Exception):
    """The client side cannot be written to any more."""


class _Server:
    """One exported model socket: requests in, replies and readiness notices out."""

    def __init__(self, model: ModelQuicSocket, end: socket.socket, events: int | None) -> None:
        self.model = model
        self.end = end
        self.events = events
        self.failures: list[BaseException] = []
        self.notified = False
        self.stopping = False
        sndbuf = end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        #: recvmsg returns at most this much, so that every reply fits one message.
        self.recv_limit = max(4096, sndbuf // 2)
        self._end_lock = threading.Lock()
        self._end_fd = end.fileno()
        self._peek = bytearray(1)
        self._events_poll = select.poll()
        if events is not None:
            self._events_poll.register(events, select.POLLIN)
        self.thread = threading.Thread(
            target=self._run, name=f"quic-model-export-{self._end_fd}", daemon=True
        )

    def stop(self) -> None:
        self.stopping = True
        with self._end_lock:
            if self.end.fileno() >= 0:
                with contextlib.suppress(OSError):
                    self.end.shutdown(socket.SHUT_RDWR)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except _Gone:
            pass
        except BaseException as exc:  # a bug: keep it for the test, and stop serving
            self.failures.append(exc)
        finally:
            with self._end_lock:
                self.end.close()
            if self.events is not None:
                os.close(self.events)
                self.events = None

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._end_fd, select.POLLIN)
        watching = False
        interval = int(POLL_INTERVAL * 1000)
        self._notify_if_readable()
        while not self.stopping:
            want = not self.notified and self.events is not None
            if want != watching:
                assert self.events is not None
                if want:
                    poller.register(self.events, select.POLLIN)
                else:
                    poller.unregister(self.events)
                watching = want
            for fd, mask in poller.poll(interval):
                if fd == self._end_fd and (mask & select.POLLNVAL or not self._serve_requests()):
                    return
            self._notify_if_readable()

    def _model_readable(self) -> bool:
        if self.events is None or self.model.fileno() < 0:
            return True  # closed: recvmsg fails at once
        return bool(self._events_poll.poll(0))

    def _notify_if_readable(self) -> None:
        if not self.notified and self._model_readable():
            self._send(_HEADER.pack(_NOTICE_READABLE, 0))
            self.notified = True

    def _send(self, message: bytes) -> None:
        """Sends one message; _Gone if the client cannot be written to (EMSGSIZE raised)."""
        deadline = time.monotonic() + SEND_TIMEOUT
        while True:
            try:
                self.end.send(message, socket.MSG_NOSIGNAL | MSG_DONTWAIT)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Gone() from None
                poller = select.poll()
                poller.register(self._end_fd, select.POLLOUT)
                poller.poll(int(left * 1000) + 1)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise
                raise _Gone() from exc

    def _serve_requests(self) -> bool:
        """Answers every waiting request; False at EOF (every client copy closed)."""
        while True:
            try:
                message = _recv_message(self.end, self._peek)
            except BlockingIOError:
                return True
            except (OSError, _ProtocolError):
                return False
            if not message:
                return False
            kind, seq, payload = self._answer(message)
            # Any notice sent before this reply is dropped by the client.  If the model
            # is readable now, the reply says a notice follows and the client waits for
            # it, so the fd is readable by the time the call returns.
            follows = self._model_readable()
            flag = _NOTICE_FOLLOWS if follows else 0
            try:
                self._send(_HEADER.pack(kind | flag, seq) + payload)
            except OSError:  # EMSGSIZE
                error = _error_payload(errno.EMSGSIZE, "the reply exceeds the socket buffer")
                self._send(_HEADER.pack(_REPLY_ERROR | flag, seq) + error)
            self.notified = False
            if follows:
                self._send(_HEADER.pack(_NOTICE_READABLE, 0))
                self.notified = True
            else:
                self._notify_if_readable()

    def _answer(self, message: bytes) -> tuple[int, int, bytes]:
        """(reply kind, sequence number, payload) for one request."""
        if len(message) < _HEADER.size:
            return _REPLY_ERROR, 0, _error_payload(errno.EPROTO, "a request without a header")
        op, seq = _HEADER.unpack_from(message)
        try:
            payload = self._dispatch(op, message, _HEADER.size)
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            return _REPLY_ERROR, seq, _error_payload(code, exc.strerror or str(exc))
        except (_ProtocolError, struct.error) as exc:
            return _REPLY_ERROR, seq, _error_payload(errno.EPROTO, f"malformed request: {exc}")
        except Exception as exc:
            self.failures.append(exc)
            return _REPLY_ERROR, seq, _error_payload(errno.EIO, f"model failure: {exc!r}")
        return _REPLY_OK, seq, payload

    def _dispatch(self, op: int, msg: bytes, at: int) -> bytes:
        model = self.model
        if op == _OP_SETSOCKOPT:
            level, opt = _TWO.unpack_from(msg, at)
            model.setsockopt(level, opt, msg[at + _TWO.size :])
            return b""
        if op == _OP_GETSOCKOPT:
            level, opt, buflen = _THREE.unpack_from(msg, at)
            return bytes(model.getsockopt(level, opt, buflen))
        if op == _OP_GETSOCKOPT_INOUT:
            level, opt = _TWO.unpack_from(msg, at)
            return bytes(model.getsockopt_inout(level, opt, msg[at + _TWO.size :]))
        if op == _OP_SENDMSG:
            (flags,) = _I64.unpack_from(msg, at)
            cmsgs, offset = _unpack_cmsgs(msg, at + _I64.size)
            return _I64.pack(model.sendmsg([msg[offset:]], cmsgs, flags))
        if op == _OP_RECVMSG:
            bufsize, ancbufsize, flags = _THREE.unpack_from(msg, at)
            bufsize = min(bufsize, self.recv_limit)
            data, cmsgs, msg_flags, _addr = model.recvmsg(bufsize, ancbufsize, flags | MSG_DONTWAIT)
            return _I64.pack(msg_flags) + _pack_cmsgs(cmsgs) + bytes(data)
        if op == _OP_GETPEERNAME:
            peer = model.peer_address
            if peer is None:
                raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
            return _pack_address(peer)
        if op == _OP_GETSOCKNAME:
            return _pack_address(model.local_address or ("0.0.0.0", 0))
        raise _ProtocolError(f"unknown operation {op}")


def _error_payload(code: int, text: str) -> bytes:
    return _ERRNO.pack(code) + text[:_MAX_ERROR_TEXT].encode(errors="replace")


# --- the agent side -------------------------------------------------------------------------


def _gone() -> OSError:
    return OSError(errno.ENOTCONN, "the exported model socket is gone (its server closed)")


class RemoteQuicSocket:
    """The agent's view of an exported model socket: the ``QuicSocket`` protocol over ``fd``.

    Takes ownership of ``fd`` (``close()`` closes it) once constructed; if the
    constructor raises, the fd is left to the caller.
    """

    def __init__(self, fd: int, *, rpc_timeout: float = RPC_TIMEOUT) -> None:
        sock = socket.socket(fileno=fd)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            sock.detach()
            raise ValueError(f"fd {fd} is not an AF_UNIX SOCK_SEQPACKET socket")
        self._sock = sock
        self._lock = threading.Lock()
        self._seq = secrets.randbits(32)
        self._peek = bytearray(1)
        self._timeout: float | None = None
        self.rpc_timeout = rpc_timeout

    # -- the QuicSocket protocol ---------------------------------------------------------------

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray | int, /) -> None:
        data = _pack(_ERRNO, value) if isinstance(value, int) else bytes(value)
        self._call(_OP_SETSOCKOPT, _pack(_TWO, level, optname) + data)

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        if buflen < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return self._call(_OP_GETSOCKOPT, _pack(_THREE, level, optname, buflen))

    def getsockopt_inout(self, level: int, optname: int, data: bytes, /) -> bytes:
        return self._call(_OP_GETSOCKOPT_INOUT, _pack(_TWO, level, optname) + bytes(data))

    def sendmsg(
        self,
        buffers: Iterable[bytes],
        ancdata: Iterable[tuple[int, int, bytes]] = (),
        flags: int = 0,
        address: object = None,
        /,
    ) -> int:
        """``address`` is ignored, as by the model (the socket is connected)."""
        data = b"".join(bytes(b) for b in buffers)
        body = _pack(_I64, flags) + _pack_cmsgs(ancdata) + data
        raw = self._call(_OP_SENDMSG, body)
        return _unpack_exact(_I64, raw)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, Ancillary, int, None]:
        """MSG_DONTWAIT (or timeout 0): one RPC; otherwise waits on the fd between tries."""
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        timeout = self._timeout
        if flags & MSG_DONTWAIT or timeout == 0:
            return self._recvmsg_once(bufsize, ancbufsize, flags)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._recvmsg_once(bufsize, ancbufsize, flags)
            except BlockingIOError:
                pass
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise OSError(errno.EAGAIN, "nothing to receive (timed out)")
            self._poll(select.POLLIN, remaining)

    def fileno(self) -> int:
        """Polls readable when the model socket may have something to receive (-1 once closed)."""
        return self._sock.fileno()

    # -- the rest of a socket ---------------------------------------------------------------

    def getpeername(self) -> tuple[str, int]:
        """The model socket's QUIC peer; ENOTCONN without one."""
        return _unpack_address(self._call(_OP_GETPEERNAME, b""))

    def getsockname(self) -> tuple[str, int]:
        return _unpack_address(self._call(_OP_GETSOCKNAME, b""))

    def settimeout(self, timeout: float | None) -> None:
        """Bounds a blocking recvmsg (EAGAIN after it, like the model's SO_RCVTIMEO)."""
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def close(self) -> None:
        """Closes this fd only: the model socket is the consumer's and stays open."""
        with self._lock:
            self._sock.close()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def __enter__(self) -> RemoteQuicSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteQuicSocket fd={self.fileno()}>"

    # -- RPC ---------------------------------------------------------------------------------

    def _recvmsg_once(
        self, bufsize: int, ancbufsize: int, flags: int
    ) -> tuple[bytes, Ancillary, int, None]:
        raw = self._call(_OP_RECVMSG, _pack(_THREE, bufsize, ancbufsize, flags | MSG_DONTWAIT))
        try:
            (msg_flags,) = _I64.unpack_from(raw)
        except struct.error as exc:
            raise _protocol_oserror(str(exc)) from None
        try:
            cmsgs, offset = _unpack_cmsgs(raw, _I64.size)
        except _ProtocolError as exc:
            raise _protocol_oserror(str(exc)) from None
        return raw[offset:], cmsgs, msg_flags, None

    def _call(self, op: int, body: bytes) -> bytes:
        with self._lock:
            if self._sock.fileno() < 0:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            seq = self._seq
            deadline = time.monotonic() + self.rpc_timeout
            self._send(_HEADER.pack(op, seq) + body, deadline)
            while True:
                message = self._receive(deadline)
                kind, rseq = _HEADER.unpack_from(message)
                if kind == _NOTICE_READABLE or rseq != seq:
                    continue  # a notice (resent behind our reply if still due), or stale
                if kind & _NOTICE_FOLLOWS:
                    kind &= ~_NOTICE_FOLLOWS
                    self._await_notice(deadline)
                body_at = _HEADER.size
                if kind == _REPLY_OK:
                    return message[body_at:]
                if kind == _REPLY_ERROR:
                    try:
                        (code,) = _ERRNO.unpack_from(message, body_at)
                    except struct.error as exc:
                        raise _protocol_oserror(str(exc)) from None
                    text = message[body_at + _ERRNO.size :].decode(errors="replace")
                    raise OSError(code, text or os.strerror(code))
                raise _protocol_oserror(f"message kind {kind:#x}")

    def _send(self, message: bytes, deadline: float) -> None:
        while True:
            try:
                self._sock.send(message, socket.MSG_NOSIGNAL | MSG_DONTWAIT)
                return
            except BlockingIOError:
                self._poll(select.POLLOUT, self._left(deadline))
            except (BrokenPipeError, ConnectionResetError):
                raise _gone() from None

    def _receive(self, deadline: float) -> bytes:
        while True:
            try:
                message = _recv_message(self._sock, self._peek)
            except BlockingIOError:
                self._poll(select.POLLIN, self._left(deadline))
                continue
            except ConnectionResetError:
                raise _gone() from None
            except _ProtocolError as exc:
                raise _protocol_oserror(str(exc)) from None
            if not message:
                raise _gone()
            if len(message) < _HEADER.size:
                raise _protocol_oserror("a message without a header")
            return message

    def _await_notice(self, deadline: float) -> None:
        """Waits, reading nothing, until the notice sent behind a reply has arrived."""
        with contextlib.suppress(OSError):  # at worst a late wakeup; the next call tells
            self._poll(select.POLLIN, self._left(deadline))

    @staticmethod
    def _left(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OSError(errno.ETIMEDOUT, "no reply from the exported model socket's server")
        return left

    def _poll(self, events: int, timeout: float | None) -> None:
        fd = self._sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        poller = select.poll()
        poller.register(fd, events)
        poller.poll(None if timeout is None else max(1, int(timeout * 1000) + 1))


def _unpack_exact(fmt: struct.Struct, raw: bytes) -> int:
    try:
        (value,) = fmt.unpack(raw)
    except struct.error as exc:
        raise _protocol_oserror(str(exc)) from None
    return int(value)


def _protocol_oserror(detail: str) -> OSError:
    return OSError(errno.EPROTO, f"exported model socket protocol: {detail}")


# --- for the daemon ---------------------------------------------------------------------------


def is_remote_model_socket(fd: int) -> bool:
    """Whether ``fd`` is an end returned by ``export_socket`` (reads nothing from it)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            return False
        name = sock.getpeername()
    except OSError:
        return False
    finally:
        sock.detach()
    return isinstance(name, bytes) and name.startswith(PEER_NAME_PREFIX)


def open_remote_or_kernel(fd: int) -> QuicSocket:
    """For ``Wiring.open_quic_socket``: a RemoteQuicSocket or a kernel socket."""
    if is_remote_model_socket(fd):
        return RemoteQuicSocket(fd)
    return socket.socket(fileno=fd)


def transport_of_remote_or_kernel(fd: int) -> str:
    """For ``Wiring.transport_of``: "quic" for exported model sockets."""
    if is_remote_model_socket(fd):
        return "quic"
    return transport_of(fd)
