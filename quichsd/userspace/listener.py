# SPDX-License-Identifier: GPL-2.0-only
"""``ModelQuicListener``: a listening QUIC socket that hands out server sockets.

A new connection is created for an Initial packet from an unknown address
(the kernel demultiplexes by connection ID and ALPN; the model, with one
listener per UDP port, by address).  ``accept`` returns it once the client's
Initial CRYPTO data is on its receive list, as the kernel's accept does.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Iterable
from types import TracebackType

from quichsd.quic.abi import Config, TransportParam
from quichsd.userspace import options
from quichsd.userspace.aioquic_seam import initial_header
from quichsd.userspace.endpoint import Address, Channel, Endpoint, check_loopback
from quichsd.userspace.errors import fail
from quichsd.userspace.quic_socket import ModelQuicSocket
from quichsd.userspace.session import VERSIONS, Session, Settings, SockState

_SMALLEST_INITIAL_DATAGRAM = 1200
_CID_LENGTH = 8  # aioquic's connection_id_length, used for our CIDs


class ModelQuicListener:
    """``socket(); setsockopt(ALPN, ...); bind(); listen()`` in one step.

    ``session_ticket`` overrides the ticket key accepted sockets report (the
    default is derived from the peer address).  Options can also be set on the
    listener afterwards, with the kernel's LISTENING-state rules.
    """

    def __init__(
        self,
        address: tuple[str, int] = ("127.0.0.1", 0),
        *,
        alpn: Iterable[bytes | str] = (),
        config: Config | None = None,
        transport_param: TransportParam | None = None,
        session_ticket: bytes | None = None,
        backlog: int = 16,
    ) -> None:
        _, port = check_loopback(address)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._session = Session(self._lock, server=True, settings=Settings())
        self._backlog: deque[Session] = deque()
        self._unaccepted: list[Session] = []
        self._max_backlog = backlog
        self._closed = False
        try:
            options.preset(
                self._session,
                alpn=tuple(alpn),
                config=config,
                transport_param=transport_param,
                session_ticket=session_ticket,
            )
        except BaseException:
            self._session.readiness.close()
            raise
        self._session.state = SockState.LISTENING
        self._endpoint = Endpoint(
            self._lock, port=port, acceptor=self._new_connection, name="quic-model-listener"
        )
        self._endpoint.retain()

    @property
    def address(self) -> Address:
        return self._endpoint.address

    @property
    def io_failures(self) -> list[Exception]:
        return list(self._endpoint.failures)

    def fileno(self) -> int:
        """Readable while a connection waits to be accepted."""
        return self._session.readiness.fileno()

    def setsockopt(self, level: int, optname: int, value: bytes | bytearray, /) -> None:
        with self._lock:
            options.set_option(self._session, level, optname, bytes(value))

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        with self._lock:
            return options.get_option(self._session, level, optname, buflen)

    def getsockopt_inout(self, level: int, optname: int, data: bytes, /) -> bytes:
        with self._lock:
            return options.get_option(self._session, level, optname, len(data), bytes(data))

    def accept(self, timeout: float | None = None) -> ModelQuicSocket:
        """The next connection whose ClientHello has started to arrive (EAGAIN on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._backlog:
                if self._closed:
                    raise fail(errno.EINVAL, "the listener is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise fail(errno.EAGAIN, "no connection to accept")
                self._cond.wait(remaining)
            session = self._backlog.popleft()
            self._unaccepted.remove(session)
            self._session.readiness.update(bool(self._backlog))
        return ModelQuicSocket(session)

    def close(self) -> None:
        """Stops listening; connections not accepted yet are closed, accepted ones live on."""
        last = False
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for session in self._unaccepted:
                session.release()
            self._unaccepted.clear()
            self._backlog.clear()
            self._session.readiness.close()
            self._cond.notify_all()
            last = self._endpoint.release()
        if last:
            self._endpoint.close()

    def __enter__(self) -> ModelQuicListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- called by the endpoint's I/O thread, lock held -------------------------------------

    def _new_connection(self, data: bytes, peer: Address, now: float) -> Channel | None:
        if self._closed or len(self._unaccepted) >= self._max_backlog:
            return None
        header = initial_header(data, _CID_LENGTH)
        if header is None or header[0] not in VERSIONS or len(data) < _SMALLEST_INITIAL_DATAGRAM:
            return None
        session = Session(self._lock, server=True, settings=self._session.settings.copy())
        session.start(self._endpoint, peer, session.new_connection(header[1]))
        session.on_first_initial = self._ready
        self._unaccepted.append(session)
        return session

    def _ready(self, session: Session) -> None:
        self._backlog.append(session)
        self._session.readiness.update(True)
        self._cond.notify_all()
