# SPDX-License-Identifier: GPL-2.0-only
"""``TcpHandshake``: one TLS-over-TCP handshake in tlshd's order, without waiting of its own.

tlshd's order (docs/kernel-abi.md §KTLS-SEQUENCE): the socket must have a peer; TCP_NODELAY on
for the handshake and restored after it whatever happened; GnuTLS's handshake
(``session.py``); on success the keys to the kernel (``install.py``).  Every
ending sets ``result`` once, with the status DONE carries (docs/errno.md).
The shell that waits between steps is ``aio.py``, as ``quic/aio.py`` is for
``quic/driver.py``.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from quichsd.ktls.abi import SOL_TCP, TCP_NODELAY
from quichsd.ktls.install import (
    InstallReport,
    KtlsInstallError,
    KtlsMaterial,
    SockoptTarget,
    install_ktls,
)
from quichsd.ktls.session import AGAIN, TcpCompletion, TcpCredentials, TcpSocket, TcpTlsSession
from quichsd.tls import Role
from quichsd.tls._gnutls import lib
from quichsd.tls.binding import TlsSetupError, gnutls_strerror
from quichsd.tls.levels import CIPHER_SUITE_NAMES

log = logging.getLogger(__name__)

#: Non-fatal returns other than EAGAIN (warning alerts) tolerated before giving up.
MAX_NONFATAL = 16


@dataclass
class TcpHandshakeResult:
    """How one TCP handshake ended; ``status`` is what DONE carries (0 or a positive errno)."""

    role: Role
    status: int
    reason: str = ""
    completion: TcpCompletion | None = None
    installed: InstallReport | None = None
    alert_received: int | None = None
    alert_sent: int | None = None
    duration: float = 0.0
    #: Why handing the session to the kernel failed (status EIO), if it did.
    ktls_error: KtlsInstallError | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def cipher(self) -> int:
        return self.completion.cipher if self.completion else 0

    @property
    def material(self) -> KtlsMaterial | None:
        return self.completion.material if self.completion else None

    def summary(self) -> str:
        done = self.completion
        if not self.ok:
            return f"{self.reason} (errno {self.status})"
        assert done is not None
        suite = CIPHER_SUITE_NAMES.get(done.cipher, str(done.cipher))
        where = "kTLS installed" if self.installed else "kTLS not installed"
        return f"TLS 1.3 {suite} over TCP, {where}, {self.duration * 1000:.1f} ms"


Installer = Callable[[SockoptTarget, KtlsMaterial], InstallReport]


def _connected(sock: TcpSocket) -> bool:
    """Whether the socket has a peer (a never-connected TCP socket would make the first
    send fail with EPIPE, which reads like a reset).  Asks ``sock`` itself when it can
    (a worker's ``socket.socket``), else a socket object borrowing its fd."""
    getpeername = getattr(sock, "getpeername", None)
    borrowed = None
    if getpeername is None:
        borrowed = socket.socket(fileno=sock.fileno())
        getpeername = borrowed.getpeername
    try:
        getpeername()
    except OSError as exc:
        return exc.errno != errno.ENOTCONN
    finally:
        if borrowed is not None:
            borrowed.detach()  # the fd stays the caller's
    return True


def _get_nodelay(sock: TcpSocket) -> int:
    try:
        return int(sock.getsockopt(SOL_TCP, TCP_NODELAY))
    except OSError:
        return 0  # tlshd: assume off


def _set_nodelay(sock: TcpSocket, value: int) -> None:
    try:
        sock.setsockopt(SOL_TCP, TCP_NODELAY, value)
    except OSError as exc:
        log.debug("TCP_NODELAY=%d: %s", value, exc)


class TcpHandshake:
    """The handshake on a connected TCP socket, then kTLS on it (unless ``install`` is None).

    ``begin()``, then ``step()`` until it returns None, waiting in between for
    what it asks (True: writable, False: readable) or calling ``expire()``
    when ``deadline`` passes; ``result`` is then set.  ``abandon()`` (a
    cancelled wait) closes the session and restores the socket, nothing else.

    ``ciphers`` narrows the kTLS ciphers offered (kTLS numbers 51..54) and
    ``record_size_limit`` advertises a receive limit (RFC 8449): both for tests
    and the self-test; the defaults are the system's ciphers and no limit.
    """

    def __init__(
        self,
        sock: TcpSocket,
        role: Role,
        credentials: TcpCredentials,
        timeout: float,
        *,
        install: Installer | None = install_ktls,
        ciphers: tuple[int, ...] | None = None,
        record_size_limit: int | None = None,
    ) -> None:
        self.sock = sock
        self.role = role
        self.credentials = credentials
        self.timeout = timeout
        self.install = install
        self.ciphers = ciphers
        self.record_size_limit = record_size_limit
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.result = TcpHandshakeResult(role, errno.EIO)
        self.over = False
        self._session: TcpTlsSession | None = None
        self._saved_nodelay: int | None = None
        self._nonfatal = 0

    def begin(self) -> None:
        """Checks for a peer, turns TCP_NODELAY on and opens the GnuTLS session."""
        result = self.result
        if not _connected(self.sock):
            # Not a peer that went away: nothing was ever there (docs/errno.md).
            result.status = errno.ENOTCONN
            result.reason = f"{self.role.value} TCP handshake: not connected"
            self.over = True
            return
        self._saved_nodelay = _get_nodelay(self.sock)
        _set_nodelay(self.sock, 1)
        try:
            self._session = TcpTlsSession(
                self.sock.fileno(),
                self.role,
                self.credentials,
                timeout=self.timeout,
                ciphers=self.ciphers,
                record_size_limit=self.record_size_limit,
            )
        except TlsSetupError as exc:
            result.status = exc.errno or errno.EIO
            result.reason = f"setting up: {exc.strerror}"
            self._finish()

    def step(self) -> bool | None:
        """Runs GnuTLS until it must wait: whether for writing (else reading), None when over."""
        session = self._session
        if self.over or session is None:
            return None
        result = self.result
        while True:
            rc = session.step()
            if rc in AGAIN:
                return session.wants_write()
            if rc != 0 and not lib.gnutls_error_is_fatal(rc) and self._nonfatal < MAX_NONFATAL:
                self._nonfatal += 1
                alert = session.received_alert(rc)
                log.debug("TCP handshake: %s (alert %s), continuing", gnutls_strerror(rc), alert)
                continue
            break
        result.alert_sent = session.sent_alert
        if rc < 0:
            result.alert_received = session.received_alert(rc)
            result.status, result.reason = session.failure(rc)
        else:
            try:
                result.completion = session.completion()
                result.status = 0
            except KtlsInstallError as exc:
                result.ktls_error = exc
                result.status, result.reason = errno.EIO, f"kTLS: {exc.strerror}"
        self._finish()
        return None

    def expire(self) -> None:
        """The deadline passed before the handshake ended."""
        if self.over:
            return
        if self._session is not None:
            self.result.alert_sent = self._session.sent_alert
        self.result.status = errno.ETIMEDOUT
        self.result.reason = f"no handshake within {self.timeout:g} s"
        self._finish()

    def abandon(self) -> None:
        """Closes the session and restores TCP_NODELAY; ``result`` is left as it is."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
        if self._saved_nodelay is not None:
            _set_nodelay(self.sock, self._saved_nodelay)
            self._saved_nodelay = None

    def _finish(self) -> None:
        self.abandon()
        self.over = True
        result = self.result
        if result.ok and self.install is not None:
            assert result.completion is not None
            try:
                result.installed = self.install(self.sock, result.completion.material)
            except KtlsInstallError as exc:
                result.ktls_error = exc
                result.status, result.reason = errno.EIO, f"kTLS: {exc.strerror}"
        result.duration = time.monotonic() - self.started
        if not result.ok:
            result.reason = f"{self.role.value} TCP handshake: {result.reason}"


__all__ = ["MAX_NONFATAL", "Installer", "TcpHandshake", "TcpHandshakeResult"]
