"""Runs the handshake engine against a QUIC socket: our quic_*_handshake().

``QuicHandshake`` holds every ordering rule of the kernel procedure
(../shared/spec/quic-socket-abi.md §7-§8) in one place and does no waiting of
its own: ``begin()``, then ``on_readable()`` whenever the socket is readable,
``on_tick()`` now and then, until ``result`` is set.  ``blocking.py`` and
``aio.py`` are the two shells that wait.

Ordering rules kept here:
- the client reads its resumption data (SESSION_TICKET) before anything can
  install the APP receive secret, which clears it in the kernel;
- a level's transmit secret is installed before any byte is sent at it (the
  engine orders its events so; secrets are installed as they come, a flight is
  sent after the step, MSG_MORE on all but its last message);
- a failure is closed with CRYPTO_ERROR 0x100 + alert (upstream agents leave the
  kernel's generic APPLICATION_ERROR);
- the client's wait for a NewSessionTicket never turns a finished handshake
  into a failure (tlshd's late timer can).
"""

from __future__ import annotations

import contextlib
import errno
import time
from dataclasses import dataclass, field

from quichsd.quic import sockopt
from quichsd.quic.abi import TransportError
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls import (
    AlpnNegotiated,
    AntiReplay,
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    EngineConfig,
    HandshakeComplete,
    HandshakeEngine,
    HandshakeFailed,
    InstallSecret,
    PeerTransportParameters,
    PskClientCredentials,
    Role,
    SendHandshake,
    SessionTicket,
    TlsSetupError,
)
from quichsd.tls.binding import PskLookup
from quichsd.tls.events import Event
from quichsd.tls.levels import CIPHER_SUITE_NAMES
from quichsd.tls.replay_store import ReplayStore

#: How often the client looks for a NewSessionTicket (tlshd: 100 ms).
TICKET_POLL_INTERVAL = 0.1
_CRYPTO_ERROR_FIRST = int(TransportError.CRYPTO)
_CRYPTO_ERROR_LAST = _CRYPTO_ERROR_FIRST + 0xFF


@dataclass(frozen=True)
class Credentials:
    """What the caller knows that the socket does not: how to authenticate.

    ``certificates`` carries our chain/key and the trust anchors (X.509 and
    UNAUTH); ``psk`` a client's key; ``psk_lookup`` a server's identity → key.
    """

    auth: AuthMode
    certificates: CertificateCredentials | None = None
    psk: PskClientCredentials | None = None
    psk_lookup: PskLookup | None = None
    peer_name: str | None = None
    verify_peer: bool = True
    anti_replay: AntiReplay | None = None


@dataclass
class HandshakeResult:
    """How one handshake ended; ``status`` is what DONE carries (0 or a positive errno)."""

    role: Role
    status: int
    reason: str = ""
    complete: HandshakeComplete | None = None
    alert: int | None = None
    ticket_stored: bool = False
    duration: float = 0.0
    peer_transport_parameters: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def summary(self) -> str:
        """One line for people: what was negotiated, or why it failed."""
        if self.complete is None:
            return f"{self.role.value} handshake failed: {self.reason} (errno {self.status})"
        done = self.complete
        alpn = done.alpn.decode(errors="replace") if done.alpn else "-"
        return (
            f"TLS 1.3 {CIPHER_SUITE_NAMES.get(done.cipher, str(done.cipher))}, ALPN {alpn}, "
            f"resumed {'yes' if done.resumed else 'no'}, "
            f"0-RTT {'accepted' if done.early_data_accepted else 'no'}, "
            f"{self.duration * 1000:.1f} ms"
        )


_default_anti_replay: AntiReplay | None = None


def process_anti_replay() -> AntiReplay:
    """This process's 0-RTT guard for server handshakes, made on first use."""
    global _default_anti_replay
    if _default_anti_replay is None:
        _default_anti_replay = AntiReplay()
    return _default_anti_replay


def share_anti_replay() -> AntiReplay:
    """Makes this process's guard one that every process forked from now on shares.

    The daemon's parent calls it before forking any worker, so that one store serves
    them all (RFC 8446 §8: each 0-RTT ClientHello accepted once by the whole server);
    see docs/ARCHITECTURE.md.
    """
    global _default_anti_replay
    if _default_anti_replay is None or _default_anti_replay.store.fileno() < 0:
        _default_anti_replay = AntiReplay(store=ReplayStore(shared=True))
    return _default_anti_replay


class QuicHandshake:
    """One handshake on one QUIC socket; no waiting, no clock reads but ``now`` passed in."""

    def __init__(
        self, sock: QuicSocket, role: Role, credentials: Credentials, deadline: float
    ) -> None:
        self.sock = sock
        self.role = role
        self.credentials = credentials
        self.deadline = deadline
        self.result: HandshakeResult | None = None
        self.engine: HandshakeEngine | None = None
        self._complete: HandshakeComplete | None = None
        self._peer_tp: bytes | None = None
        self._ticket_wait = 0.0
        self._ticket_until = 0.0
        self._next_ticket_poll = 0.0
        self._started = time.monotonic()

    # -- the three entry points ---------------------------------------------------

    def begin(self) -> None:
        """Reads the socket's parameters, builds the engine, sends the ClientHello."""
        try:
            self.engine = self._build_engine()
            if self.role is Role.CLIENT:
                self._apply(self.engine.start())
        except TlsSetupError as exc:
            self._finish(exc.errno or errno.EIO, f"setting up: {exc.strerror}")
        except OSError as exc:
            self._fail_os(exc)

    def on_readable(self) -> None:
        """Feeds everything the socket holds to the engine (non-blocking reads)."""
        engine = self.engine
        if self.result is not None or engine is None or self._complete is not None:
            return
        try:
            while self.result is None and self._complete is None:
                try:
                    level, data = sockopt.recv_handshake(self.sock, dontwait=True)
                except BlockingIOError:
                    return
                self._apply(engine.receive(level, data))
        except OSError as exc:
            self._fail_os(exc)

    def on_tick(self, now: float) -> None:
        """Deadline, and the client's polling for a session ticket."""
        if self.result is not None:
            return
        if self._complete is not None:
            if now >= self._ticket_until or now >= self.deadline:
                self._finish(0, "")  # no ticket in time: still a successful handshake
            elif now >= self._next_ticket_poll:
                self._next_ticket_poll = now + TICKET_POLL_INTERVAL
                self._poll_ticket()
            return
        if now >= self.deadline:
            self._abort(errno.ETIMEDOUT, "no handshake within the deadline")

    def next_wakeup(self, now: float) -> float:
        """Seconds until on_tick() has something to do."""
        if self._complete is not None:
            return max(0.0, min(self._next_ticket_poll, self._ticket_until) - now)
        return max(0.0, self.deadline - now)

    def cancel(self, code: int, reason: str) -> None:
        """Ends the handshake from outside (shutdown, a dying worker)."""
        if self.result is None:
            self._abort(code, reason)

    # -- set-up ---------------------------------------------------------------------

    def _build_engine(self) -> HandshakeEngine:
        sock, creds = self.sock, self.credentials
        server = self.role is Role.SERVER
        alpn = sockopt.get_alpn(sock)
        # Before any secret: installing the APP receive secret clears it in the kernel.
        stored = sockopt.get_session_ticket(sock)
        socket_config = sockopt.get_config(sock)
        local_tp = sockopt.get_transport_param_ext(sock)
        self._ticket_wait = 0.0 if server else float(socket_config.receive_session_ticket)
        psk = creds.auth is AuthMode.PSK
        x509_server = server and not psk
        config = EngineConfig(
            role=self.role,
            auth=creds.auth,
            certificates=creds.certificates,
            psk=creds.psk,
            psk_lookup=creds.psk_lookup,
            peer_name=creds.peer_name,
            verify_peer=creds.verify_peer,
            alpn=alpn,
            cipher=socket_config.payload_cipher_type,
            certificate_request=CertificateRequest(min(socket_config.certificate_request, 2)),
            # The server's SESSION_TICKET is the 64-byte ticket key (set or kernel-derived).
            ticket_key=stored if x509_server and len(stored) == 64 else None,
            early_data=not psk and (x509_server or bool(stored)),
            anti_replay=(creds.anti_replay or process_anti_replay()) if x509_server else None,
        )
        session_data = stored if not server and stored and not psk else None
        return HandshakeEngine(config, local_tp, session_data=session_data)

    # -- acting on events -------------------------------------------------------------

    def _apply(self, events: list[Event]) -> None:
        sock = self.sock
        flight: list[tuple[int, bytes]] = []
        failure: HandshakeFailed | None = None
        for event in events:
            kind = type(event)
            if kind is SendHandshake:
                flight.append((event.level, event.data))  # type: ignore[union-attr]
            elif kind is InstallSecret:
                e: InstallSecret = event  # type: ignore[assignment]
                sockopt.install_secret(sock, e.level, e.send, e.cipher, e.secret)
            elif kind is PeerTransportParameters:
                self._peer_tp = event.data  # type: ignore[union-attr]
                sockopt.set_transport_param_ext(sock, self._peer_tp)
            elif kind is AlpnNegotiated:
                # The consumer reads the chosen protocol back with getsockopt(ALPN).
                sockopt.set_alpn(sock, [event.protocol])  # type: ignore[union-attr]
            elif kind is HandshakeComplete:
                self._complete = event  # type: ignore[assignment]
            elif kind is SessionTicket:
                sockopt.set_session_ticket(sock, event.data)  # type: ignore[union-attr]
                self._finish(0, "", ticket_stored=True)
            elif kind is HandshakeFailed:
                failure = event  # type: ignore[assignment]
        if flight:
            sockopt.send_flight(sock, flight)
        if failure is not None:
            self._close_with_alert(failure.alert, failure.reason)
            self._finish(failure.errno, failure.reason, alert=failure.alert)
        elif self._complete is not None and self.result is None:
            self._on_complete()

    def _on_complete(self) -> None:
        if self._ticket_wait > 0 and self.credentials.auth is not AuthMode.PSK:
            now = time.monotonic()
            self._ticket_until = now + self._ticket_wait
            self._next_ticket_poll = now
        else:
            self._finish(0, "")

    def _poll_ticket(self) -> None:
        assert self.engine is not None
        try:
            ticket = sockopt.get_session_ticket(self.sock)
            if ticket:
                self._apply(self.engine.receive(0, ticket))
        except OSError:
            self._finish(0, "")  # the handshake itself succeeded; the ticket is a bonus

    # -- endings ---------------------------------------------------------------------

    def _fail_os(self, exc: OSError) -> None:
        code = exc.errno or errno.EIO
        if code == errno.ENOTCONN and self._peer_closed_with_alert():
            return
        self._abort(code, f"socket: {exc}")

    def _peer_closed_with_alert(self) -> bool:
        """After ENOTCONN: if the peer closed with CRYPTO_ERROR, report its alert."""
        try:
            close = sockopt.get_connection_close(self.sock)
        except OSError:
            return False
        if not _CRYPTO_ERROR_FIRST <= close.errcode <= _CRYPTO_ERROR_LAST or self.engine is None:
            return False
        events = self.engine.peer_alert(close.errcode - _CRYPTO_ERROR_FIRST)
        failure = events[0]
        assert isinstance(failure, HandshakeFailed)
        self._finish(failure.errno, failure.reason)
        return True

    def _abort(self, code: int, reason: str) -> None:
        if self.engine is not None:
            self.engine.abort(code, reason)
        self._close_with_alert(None, reason)
        self._finish(code, reason)

    def _close_with_alert(self, alert: int | None, reason: str) -> None:
        if alert is None:
            errcode = int(TransportError.APPLICATION)
        else:
            errcode = _CRYPTO_ERROR_FIRST + alert
        # Best effort: the consumer closes the socket either way.
        with contextlib.suppress(OSError):
            sockopt.set_connection_close(self.sock, errcode, reason.encode(errors="replace")[:63])

    def _finish(
        self, status: int, reason: str, *, alert: int | None = None, ticket_stored: bool = False
    ) -> None:
        if self.result is not None:
            return
        self.result = HandshakeResult(
            role=self.role,
            status=status,
            reason=reason,
            complete=self._complete if status == 0 else None,
            alert=alert,
            ticket_stored=ticket_stored,
            duration=time.monotonic() - self._started,
            peer_transport_parameters=self._peer_tp,
        )
        if self.engine is not None:
            self.engine.close()
