# SPDX-License-Identifier: GPL-2.0-only
"""Runs the handshake engine against a QUIC socket: our quic_*_handshake().

``QuicHandshake`` holds every ordering rule of the kernel procedure
(docs/kernel-abi.md §QUIC-CLIENT and §QUIC-SERVER) in one place and does no waiting of
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
from quichsd.tls.failures import alert_text, errno_for_peer_alert
from quichsd.tls.levels import CIPHER_SUITE_NAMES, Level
from quichsd.tls.replay_store import ReplayStore

#: How often the client looks for a NewSessionTicket (tlshd: 100 ms).
TICKET_POLL_INTERVAL = 0.1
#: How often a client waiting for the server's confirmation looks for it.
CONFIRM_POLL_INTERVAL = 0.02
_EARLY = int(Level.EARLY)
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
    #: Key-exchange groups (GnuTLS names) in preference order; () keeps GnuTLS's.
    groups: tuple[str, ...] = ()


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
    #: Client: whether it offered 0-RTT (the summary's "rejected" needs it).
    early_data_offered: bool = False
    #: Client: the session data stored from the server's ticket (resumes a later handshake).
    session_ticket: bytes | None = field(default=None, repr=False)
    #: Client asked to wait for it: the server confirmed the handshake (ticket or NEW_TOKEN).
    confirmed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0

    def summary(self) -> str:
        """One line for people: what was negotiated, or why it failed."""
        if self.complete is None:
            return f"{self.role.value} handshake failed: {self.reason} (errno {self.status})"
        done = self.complete
        alpn = done.alpn.decode(errors="replace") if done.alpn else "-"
        if done.early_data_accepted:
            early = "accepted"
        else:
            early = "rejected" if self.early_data_offered else "no"
        return (
            f"TLS 1.3 {CIPHER_SUITE_NAMES.get(done.cipher, str(done.cipher))}, ALPN {alpn}, "
            f"resumed {'yes' if done.resumed else 'no'}, 0-RTT {early}, "
            f"{self.duration * 1000:.1f} ms"
        )


#: What a send or receive says when the peer has closed the connection.
_PEER_GONE = frozenset({errno.EPIPE, errno.ENOTCONN, errno.ECONNRESET})


def _close_code_text(code: int) -> str:
    """A QUIC transport error code by its RFC 9000 name: ``APPLICATION_ERROR 0xc``."""
    try:
        name = TransportError(code).name
    except ValueError:
        return f"error {code:#x}"
    suffix = "" if name == "CRYPTO" else "_ERROR"
    return f"{name}{suffix} {code:#x}"


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
    """One handshake on one QUIC socket; no waiting, no clock reads but ``now`` passed in.

    ``confirm_wait`` (client): after its own side completes, keep the
    connection for up to this many seconds until the server has confirmed
    the handshake, and report a server that closes it in that window as a
    failure with the server's reason.  What the kernel shows of the server's
    confirmation: its NewSessionTicket (SESSION_TICKET) or the NEW_TOKEN a
    kernel server sends with HANDSHAKE_DONE (TOKEN, cleared when the 1-RTT
    receive key is installed, so any token then is this connection's); a
    close shows in CONNECTION_CLOSE.  0 (the daemon's case: the consumer owns
    the connection) ends at completion.
    """

    def __init__(
        self,
        sock: QuicSocket,
        role: Role,
        credentials: Credentials,
        deadline: float,
        *,
        confirm_wait: float = 0.0,
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
        self._confirm_wait = confirm_wait if role is Role.CLIENT else 0.0
        self._confirm_until = 0.0
        self._confirmed = False
        self._session_ticket: bytes | None = None
        self._early_offered = False
        self._next_ticket_poll = 0.0
        self._post_started = False
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
        """Deadline, and after completion the client's polling (ticket, confirmation)."""
        if self.result is not None:
            return
        if self._complete is not None:
            if now >= self._next_ticket_poll:
                self._next_ticket_poll = now + self._poll_interval()
                self._poll_after_completion()
            if self.result is None and self._post_completion_over(now):
                # No ticket or confirmation in time: still a successful handshake.
                self._finish(0, "")
            return
        if now >= self.deadline:
            self._abort(errno.ETIMEDOUT, "no handshake within the deadline")

    def next_wakeup(self, now: float) -> float:
        """Seconds until on_tick() has something to do."""
        if self._complete is not None:
            until = max(self._ticket_until, self._confirm_until)
            return max(0.0, min(self._next_ticket_poll, until) - now)
        return max(0.0, self.deadline - now)

    @property
    def wants_input(self) -> bool:
        """Whether the socket's readability matters (after completion only ticks do)."""
        return self.result is None and self._complete is None

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
            groups=creds.groups,
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
                if e.level == _EARLY and e.send:
                    self._early_offered = True
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
                self._session_ticket = event.data  # type: ignore[union-attr]
                self._confirmed = True  # a ticket comes from a server that completed
            elif kind is HandshakeFailed:
                failure = event  # type: ignore[assignment]
        if flight:
            try:
                sockopt.send_flight(sock, flight)
            except OSError:
                if self._complete is None or self.role is not Role.SERVER:
                    raise
                # The NewSessionTicket of a completed handshake: the client, done
                # already, may have closed.  The handshake stands; the ticket is a bonus.
        if failure is not None:
            self._close_with_alert(failure.alert, failure.reason)
            self._finish(failure.errno, failure.reason, alert=failure.alert)
        elif self._complete is not None and self.result is None:
            self._after_completion()

    def _after_completion(self) -> None:
        """Starts the client's wait for a ticket and confirmation, or ends it when met."""
        now = time.monotonic()
        if not self._post_started:
            self._post_started = True
            ticket_wait = self._ticket_wait if self.credentials.auth is not AuthMode.PSK else 0
            self._ticket_until = now + ticket_wait if ticket_wait > 0 else 0.0
            self._confirm_until = now + self._confirm_wait if self._confirm_wait > 0 else 0.0
            self._next_ticket_poll = now
        if self._post_completion_over(now):
            self._finish(0, "", ticket_stored=self._session_ticket is not None)

    def _post_completion_over(self, now: float) -> bool:
        ticket_done = self._session_ticket is not None or now >= self._ticket_until
        confirm_done = self._confirmed or now >= self._confirm_until
        return (ticket_done and confirm_done) or now >= self.deadline

    def _poll_interval(self) -> float:
        waiting_for_server = self._confirm_until and not self._confirmed
        return CONFIRM_POLL_INTERVAL if waiting_for_server else TICKET_POLL_INTERVAL

    def _poll_after_completion(self) -> None:
        engine, sock = self.engine, self.sock
        assert engine is not None
        try:
            if self._confirm_until and not self._confirmed:
                if self._server_closed():
                    return
                # A kernel server sends NEW_TOKEN with HANDSHAKE_DONE (both 1-RTT keys in).
                self._confirmed = bool(sockopt.get_token(sock))
            if self._ticket_until and self._session_ticket is None:
                ticket = sockopt.get_session_ticket(sock)
                if ticket:
                    self._apply(engine.receive(0, ticket))
        except OSError:
            self._finish(0, "")  # the handshake itself succeeded; the rest is a bonus

    def _server_closed(self) -> bool:
        """Client after completion: the server closed the connection; report its reason."""
        close = sockopt.get_connection_close(self.sock)
        if not close.errcode:
            return False
        phrase = close.phrase.decode(errors="replace")
        if _CRYPTO_ERROR_FIRST <= close.errcode <= _CRYPTO_ERROR_LAST:
            alert = close.errcode - _CRYPTO_ERROR_FIRST
            code = errno_for_peer_alert(alert)
            reason = f"the server closed the connection with TLS alert {alert_text(alert)}"
        else:
            code = errno.EPIPE
            reason = f"the server closed the connection ({_close_code_text(close.errcode)})"
        if phrase:
            reason += f' (the server said "{phrase}")'
        self._complete = None
        self._finish(code, reason)
        return True

    # -- endings ---------------------------------------------------------------------

    def _fail_os(self, exc: OSError) -> None:
        code = exc.errno or errno.EIO
        if code in _PEER_GONE:
            # The syscall only noticed it: say what happened, with the peer's reason if any.
            if self._peer_closed_with_alert():
                return
            self._abort(
                code,
                f"the peer closed the connection during the handshake{self._peer_close_detail()}",
            )
            return
        self._abort(code, f"socket: {exc}")

    def _peer_closed_with_alert(self) -> bool:
        """After the peer closed: if with CRYPTO_ERROR, report its alert."""
        try:
            close = sockopt.get_connection_close(self.sock)
        except OSError:
            return False
        if not _CRYPTO_ERROR_FIRST <= close.errcode <= _CRYPTO_ERROR_LAST or self.engine is None:
            return False
        events = self.engine.peer_alert(close.errcode - _CRYPTO_ERROR_FIRST)
        failure = events[0]
        assert isinstance(failure, HandshakeFailed)
        phrase = close.phrase.decode(errors="replace")
        self._finish(
            failure.errno, failure.reason + (f' (the peer said "{phrase}")' * bool(phrase))
        )
        return True

    def _peer_close_detail(self) -> str:
        """`` (APPLICATION_ERROR 0xc: phrase)`` from the peer's close, when the kernel has it."""
        try:
            close = sockopt.get_connection_close(self.sock)
        except OSError:
            return ""
        if not close.errcode and not close.phrase:
            return ""
        phrase = close.phrase.decode(errors="replace")
        return f" ({_close_code_text(close.errcode)}{': ' + phrase if phrase else ''})"

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
            early_data_offered=self._early_offered,
            session_ticket=self._session_ticket if status == 0 else None,
            confirmed=self._confirmed and status == 0,
        )
        if self.engine is not None:
            self.engine.close()
