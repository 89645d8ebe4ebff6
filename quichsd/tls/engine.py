# SPDX-License-Identifier: GPL-2.0-only
"""The sans-IO TLS 1.3 handshake engine for QUIC (RFC 9001) on GnuTLS.

Input: handshake bytes at a kernel encryption level.  Output: a list of
events (``events.py``) to act on in order.  The engine never touches a socket,
a clock or a file, so the same object runs against the kernel, the userspace
model and in-memory peers.

States (h11 style, one way only)::

    IDLE --start()--> HANDSHAKING --(peer Finished)--> COMPLETE
      \\________________________ any failure _____________--> FAILED

A server starts in HANDSHAKING (its first input is the ClientHello).  A client
in COMPLETE still accepts NewSessionTicket bytes at APP level.

Every step runs right after GnuTLS has cooled the caches, where each call
and each kind of operation costs far more than it seems: set-up, the common
step and completion are kept to a few calls (``records``, ``session_setup``).
"""

from __future__ import annotations

import errno
from enum import Enum
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import check, gnutls_strerror
from quichsd.tls.config import EngineConfig
from quichsd.tls.events import (
    AlpnNegotiated,
    Event,
    HandshakeFailed,
    InstallSecret,
    SessionTicket,
)
from quichsd.tls.failures import (
    ALERT_INTERNAL_ERROR,
    ALERT_MISSING_EXTENSION,
    ALERT_NO_APPLICATION_PROTOCOL,
    ALERT_UNEXPECTED_MESSAGE,
    ALERT_UNKNOWN_PSK_IDENTITY,
    alert_text,
    classify,
    errno_for_peer_alert,
    unexpected_message_text,
)
from quichsd.tls.levels import Level
from quichsd.tls.records import (
    SetupFailed,
    completion,
    drain,
    end_session,
    open_session,
    step,
    view,
)
from quichsd.tls.resumption import seal, unseal
from quichsd.tls.session_setup import MAX_TRANSPORT_PARAMETERS, plan_for

__all__ = ["MAX_TRANSPORT_PARAMETERS", "EngineStateError", "HandshakeEngine", "State"]

_APP = int(Level.APP)
_NO_TRANSPORT_PARAMETERS = lib.QD_NO_TRANSPORT_PARAMETERS
_UNEXPECTED_MESSAGE = lib.QD_UNEXPECTED_MESSAGE
_NONFATAL = frozenset({lib.GNUTLS_E_AGAIN, lib.GNUTLS_E_INTERRUPTED})
#: A client that offered early data finishes after a HelloRetryRequest: seen on GnuTLS
#: 3.8.13 (Debian sid), not on 3.7.9 (bookworm) nor 3.8.9 (trixie).
HRR_AFTER_EARLY_DATA = bool(lib.gnutls_check_version(b"3.8.13"))


class State(Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    COMPLETE = "complete"
    FAILED = "failed"


_IDLE, _HANDSHAKING, _COMPLETE = State.IDLE, State.HANDSHAKING, State.COMPLETE
_FAILED = State.FAILED


class EngineStateError(RuntimeError):
    """The caller used the engine out of order (a bug in the caller, not the peer)."""


class HandshakeEngine:
    """One TLS handshake over QUIC CRYPTO frames.

    ``transport_parameters`` is our quic_transport_parameters extension body;
    ``session_data`` (client) resumes a session saved from a SessionTicket; data
    that is not a sealed ticket of this daemon (``resumption.py``) resumes nothing.
    """

    __slots__ = (
        "_alert",
        "_alpn",
        "_journal",
        "_plan",
        "_server",
        "config",
        "state",
    )

    def __init__(
        self,
        config: EngineConfig,
        transport_parameters: bytes,
        session_data: bytes | None = None,
    ) -> None:
        plan = plan_for(config)  # an impossible config: validate() says why
        try:
            resume = unseal(session_data) if session_data else b""
            journal = open_session(plan.handle, transport_parameters, resume)
        except SetupFailed as failed:
            raise plan.setup_error(*failed.args) from None
        # The journal holds the session and is freed with it when collected;
        # close() ends the session sooner.  The plan owns what the session points to.
        self._journal: Any = journal  # None once closed
        self._plan = plan
        self.config = config
        self._server = server = plan.server
        self._alert: int | None = None  # our own verdict; GnuTLS's is the journal's sent_alert
        self._alpn: bytes | None = None
        self.state = _HANDSHAKING if server else _IDLE

    # -- driving ---------------------------------------------------------------

    def start(self) -> list[Event]:
        """Client: produce the ClientHello (and the 0-RTT secret when resuming)."""
        journal = self._journal
        if self._server or self.state is not _IDLE or journal is None:
            role = self.config.role.value
            raise EngineStateError(f"start() on a {self._describe()} {role} engine")
        self.state = _HANDSHAKING
        result = step(journal, 0, b"")
        if isinstance(result, list):
            return result
        return self._advance(result)

    def receive(self, level: int, data: bytes) -> list[Event]:
        """Feed handshake bytes the peer sent at ``level``."""
        journal = self._journal
        if self.state is _HANDSHAKING and journal is not None and data:
            result = step(journal, level, data)
            if isinstance(result, list):
                return result  # the common step: more to come, nothing to check
            return self._advance(result)
        if journal is not None:  # close() ends input in any state
            if self.state is _HANDSHAKING:
                return []
            if self.state is _COMPLETE and level == _APP and not self._server:
                return self._receive_ticket(journal, data)
        role = self.config.role.value
        raise EngineStateError(
            f"{role} engine is {self._describe()}; cannot take bytes at level {level}"
        )

    def _describe(self) -> str:
        closed = self._journal is None and self.state is not _FAILED
        return f"{self.state.value} (closed)" if closed else self.state.value

    def abort(self, code: int, reason: str, alert: int | None = None) -> list[Event]:
        """End the handshake from outside (deadline, socket error, peer close)."""
        if self.state is _FAILED:
            return []
        self.state = _FAILED
        self.close()
        return [HandshakeFailed(code, alert, reason)]

    def peer_alert(self, alert: int) -> list[Event]:
        """The peer closed with CRYPTO_ERROR 0x100 + ``alert``."""
        return self.abort(
            errno_for_peer_alert(alert), f"the peer closed with TLS alert {alert_text(alert)}"
        )

    def close(self) -> None:
        """Frees the GnuTLS session now rather than at garbage collection."""
        journal = self._journal
        if journal is not None:
            self._journal = None
            end_session(journal)

    # -- internals -------------------------------------------------------------

    def _advance(self, rc: int) -> list[Event]:
        """A step that needs more than its events: checks, completion, failure."""
        journal = self._journal
        events = drain(journal)
        if rc < 0 and rc not in _NONFATAL and lib.gnutls_error_is_fatal(rc):
            return self._fail(rc)
        if rc == _UNEXPECTED_MESSAGE:
            # RFC 9001 §4.1.3-4.1.4: never handed to GnuTLS; a protocol violation.
            self._alert = ALERT_UNEXPECTED_MESSAGE
            return self._fail_step(errno.EACCES, unexpected_message_text(view(journal)))
        plan = self._plan
        if plan.alpn_check and self._alpn is None:
            for event in events:
                if type(event) is AlpnNegotiated:
                    self._alpn = event.protocol
            if self._alpn is None and any(type(e) is InstallSecret for e in events):
                # RFC 9001 §8.1: GnuTLS checks ALPN only when the ClientHello carries it.
                # Checked on the ServerHello flight (the one with keys), not on a
                # HelloRetryRequest: ALPN is read from the ClientHello that follows it.
                # Nothing of this flight goes out, so no key for it is installed either.
                self._alert = ALERT_NO_APPLICATION_PROTOCOL
                return self._fail_step(errno.EACCES, "the client offered no ALPN protocol")
        if rc:
            if rc == _NO_TRANSPORT_PARAMETERS:
                # RFC 9001 §8.2: a peer without transport parameters is a protocol violation.
                self._alert = ALERT_MISSING_EXTENSION
                return self._fail_step(errno.EPROTO, "peer sent no QUIC transport parameters")
            return events
        # Complete (here rather than in a method of its own: one call less per handshake).
        if plan.alpn_wanted and self._alpn is None:
            chosen = ffi.new("gnutls_datum_t *")
            if lib.gnutls_alpn_get_selected_protocol(view(journal).session, chosen) == 0:
                self._alpn = ffi.buffer(chosen.data, chosen.size)[:]
                events.append(AlpnNegotiated(self._alpn))
            elif not self._server:
                # RFC 9001 §8.1: a client whose offer the server ignored closes with
                # no_application_protocol (GnuTLS only checks a selection it receives).
                self._alert = ALERT_NO_APPLICATION_PROTOCOL
                return self._fail_step(errno.EACCES, "the server selected no ALPN protocol")
        self.state = _COMPLETE
        identity = self._psk_server_identity() if plan.psk_server else plan.psk_identity
        # The step that completed gathered what HandshakeComplete reports.
        events.append(completion(journal, self._alpn, identity))
        if self._server:
            if plan.send_ticket:
                rc = lib.gnutls_session_ticket_send(view(journal).session, 1, 0)
                check(rc, "sending a session ticket")
                events += drain(journal)
            self._journal = None  # a server has nothing left to do with the session
            end_session(journal)
        return events

    def _psk_server_identity(self) -> bytes | None:
        name = ffi.new("gnutls_datum_t *")
        if lib.gnutls_psk_server_get_username2(view(self._journal).session, name) == 0:
            identity: bytes = ffi.buffer(name.data, name.size)[:]
            return identity
        return None

    def _receive_ticket(self, journal: Any, data: bytes) -> list[Event]:
        fields = view(journal)
        rc = lib.qd_post_handshake(fields, _APP, data, len(data))
        drain(journal)
        if rc in _NONFATAL:
            return []  # part of a message: the rest comes in a later CRYPTO frame
        if rc == _UNEXPECTED_MESSAGE:
            return [
                HandshakeFailed(
                    errno.EACCES, ALERT_UNEXPECTED_MESSAGE, unexpected_message_text(fields)
                )
            ]
        if rc < 0:
            return [
                HandshakeFailed(
                    errno.EACCES, None, f"NewSessionTicket refused: {gnutls_strerror(rc)}"
                )
            ]
        blob = ffi.new("gnutls_datum_t *")
        if lib.gnutls_session_get_data2(fields.session, blob) < 0:
            return []
        try:
            return [SessionTicket(seal(ffi.buffer(blob.data, blob.size)[:]))]
        finally:
            lib.qd_free(blob.data)

    def _fail(self, rc: int) -> list[Event]:
        fields = view(self._journal)
        code, reason = classify(
            rc,
            fields.session,
            psk_unknown=bool(fields.psk_unknown),
            psk_error=bool(fields.psk_error),
            verify_status=fields.verify_status if fields.verify_failed else None,
        )
        if fields.sent_alert < 0:
            lib.gnutls_alert_send_appropriate(fields.session, rc)
            drain(self._journal)
        if fields.hrr and fields.early_tx and not HRR_AFTER_EARLY_DATA:
            reason += (
                "; GnuTLS before 3.8.13 cannot finish a handshake after a HelloRetryRequest "
                "once it offered early data: retry without the session ticket"
            )
        if fields.psk_unknown:
            self._alert = ALERT_UNKNOWN_PSK_IDENTITY
        elif fields.psk_error:
            self._alert = ALERT_INTERNAL_ERROR
        return self._fail_step(code, reason)

    def _fail_step(self, code: int, reason: str) -> list[Event]:
        # Nothing of the failing step is acted on: no bytes, no secrets, no parameters;
        # the connection closes with the alert at a level the peer can already read.
        alert = self._alert
        if alert is None:
            sent = view(self._journal).sent_alert
            alert = sent if sent >= 0 else ALERT_INTERNAL_ERROR
        return self.abort(code, f"{self.config.role.value} handshake: {reason}", alert)
