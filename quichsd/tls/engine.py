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
"""

from __future__ import annotations

import errno
import struct
from enum import Enum
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import (
    PskServerCredentials,
    TlsSetupError,
    check,
    gnutls_strerror,
    priority_for,
)
from quichsd.tls.config import AuthMode, CertificateRequest, EngineConfig, Role
from quichsd.tls.events import (
    AlpnNegotiated,
    Event,
    HandshakeComplete,
    HandshakeFailed,
    InstallSecret,
    PeerTransportParameters,
    SendHandshake,
    SessionTicket,
)
from quichsd.tls.failures import (
    ALERT_INTERNAL_ERROR,
    ALERT_MISSING_EXTENSION,
    ALERT_NO_APPLICATION_PROTOCOL,
    ALERT_UNKNOWN_PSK_IDENTITY,
    classify,
    errno_for_peer_alert,
)
from quichsd.tls.levels import Level

MAX_TRANSPORT_PARAMETERS = 512
_HEADER = struct.Struct("=BBBBI")
_KIND_DATA, _KIND_SECRET, _KIND_PEER_TP, _KIND_ALERT, _KIND_ALPN, _KIND_VERIFY = 1, 2, 3, 4, 5, 6
_STATUS = struct.Struct("=I")
_APP = int(Level.APP)
_NONFATAL = frozenset({lib.GNUTLS_E_AGAIN, lib.GNUTLS_E_INTERRUPTED})
_CERT_REQUEST = {
    CertificateRequest.IGNORE: lib.GNUTLS_CERT_IGNORE,
    CertificateRequest.REQUEST: lib.GNUTLS_CERT_REQUEST,
    CertificateRequest.REQUIRE: lib.GNUTLS_CERT_REQUIRE,
}
_psk_server_credentials: PskServerCredentials | None = None


class State(Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    COMPLETE = "complete"
    FAILED = "failed"


class EngineStateError(RuntimeError):
    """The caller used the engine out of order (a bug in the caller, not the peer)."""


def _shared_psk_server_credentials() -> PskServerCredentials:
    global _psk_server_credentials
    if _psk_server_credentials is None:
        _psk_server_credentials = PskServerCredentials()
    return _psk_server_credentials


class HandshakeEngine:
    """One TLS handshake over QUIC CRYPTO frames.

    ``transport_parameters`` is our quic_transport_parameters extension body;
    ``session_data`` (client) resumes a session saved from a SessionTicket.
    """

    __slots__ = (
        "_alert",
        "_alpn",
        "_journal",
        "_keepalive",
        "_server",
        "_session",
        "_verify_status",
        "config",
        "state",
    )

    def __init__(
        self,
        config: EngineConfig,
        transport_parameters: bytes,
        session_data: bytes | None = None,
    ) -> None:
        self._session: Any = None
        config.validate()
        if not 0 < len(transport_parameters) <= MAX_TRANSPORT_PARAMETERS:
            raise TlsSetupError(
                f"transport parameters must be 1..{MAX_TRANSPORT_PARAMETERS} bytes",
                code=errno.EINVAL,
            )
        self.config = config
        self._server = server = config.role is Role.SERVER
        self._alert: int | None = None
        self._alpn: bytes | None = None
        self._verify_status: int | None = None
        self._keepalive: list[Any] = []
        self.state = State.HANDSHAKING if server else State.IDLE

        psk = config.auth is AuthMode.PSK
        if server:
            flags = lib.GNUTLS_SERVER | lib.GNUTLS_NO_AUTO_SEND_TICKET
        else:
            flags = lib.GNUTLS_CLIENT
        if config.early_data and not psk:
            flags |= lib.GNUTLS_ENABLE_EARLY_DATA | lib.GNUTLS_NO_END_OF_EARLY_DATA
        holder = ffi.new("gnutls_session_t *")
        check(lib.gnutls_init(holder, flags), "gnutls_init")
        self._session = session = holder[0]

        journal = self._journal = ffi.new("struct qd_journal *")
        journal.is_server = server
        journal.local_tp_len = len(transport_parameters)
        ffi.memmove(journal.local_tp, transport_parameters, len(transport_parameters))
        check(lib.qd_session_attach(session, journal), "registering the QUIC hooks")
        check(lib.gnutls_priority_set(session, priority_for(config.cipher)), "setting priorities")

        if psk:
            if server:
                handle = ffi.new_handle(config.psk_lookup)
                self._keepalive.append(handle)
                journal.handle = handle
                creds: Any = _shared_psk_server_credentials()
            else:
                creds = config.psk
            check(
                lib.gnutls_credentials_set(session, lib.GNUTLS_CRD_PSK, creds.ptr),
                "PSK credentials",
            )
        else:
            creds = config.certificates
            check(
                lib.gnutls_credentials_set(session, lib.GNUTLS_CRD_CERTIFICATE, creds.ptr),
                "certificate credentials",
            )
        self._keepalive.append(creds)

        if server:
            self._setup_server(config, psk)
        else:
            self._setup_client(config, psk, session_data)
        if config.alpn:
            self._set_alpn(config.alpn)

    def _setup_client(self, config: EngineConfig, psk: bool, session_data: bytes | None) -> None:
        session = self._session
        name = config.peer_name
        if psk:
            return
        if name:
            encoded = name.encode()
            check(
                lib.gnutls_server_name_set(session, lib.GNUTLS_NAME_DNS, encoded, len(encoded)),
                "setting SNI",
            )
        if config.auth is AuthMode.X509 or config.verify_peer:
            # GnuTLS keeps this pointer without copying it: it must live as long as the session.
            host = ffi.new("char[]", name.encode()) if name else ffi.NULL
            self._keepalive.append(host)
            lib.gnutls_session_set_verify_cert(session, host, 0)
        if session_data:
            check(
                lib.gnutls_session_set_data(session, session_data, len(session_data)),
                "loading resumption data",
            )

    def _setup_server(self, config: EngineConfig, psk: bool) -> None:
        session = self._session
        if psk:
            return
        # A client's certificate is checked by qd_verify_client (set in qd_session_attach).
        request = _CERT_REQUEST[config.certificate_request]
        lib.gnutls_certificate_server_set_request(session, request)
        if config.ticket_key is not None:
            key = ffi.new("gnutls_datum_t *")
            key_bytes = ffi.new("unsigned char[]", config.ticket_key)
            key.data = key_bytes
            key.size = len(config.ticket_key)
            self._keepalive.append(key_bytes)
            check(lib.gnutls_session_ticket_enable_server(session, key), "enabling tickets")
        if config.early_data:
            # RFC 9001 §4.6.1: QUIC servers advertise 0xffffffff or nothing.
            check(lib.gnutls_record_set_max_early_data_size(session, 0xFFFFFFFF), "early data size")
            if config.anti_replay is not None:
                lib.gnutls_anti_replay_enable(session, config.anti_replay.ptr)
                self._keepalive.append(config.anti_replay)

    def _set_alpn(self, protocols: tuple[bytes, ...]) -> None:
        datums = ffi.new("gnutls_datum_t[]", len(protocols))
        for i, proto in enumerate(protocols):
            buf = ffi.new("unsigned char[]", proto)
            self._keepalive.append(buf)
            datums[i].data = buf
            datums[i].size = len(proto)
        check(
            lib.gnutls_alpn_set_protocols(
                self._session, datums, len(protocols), lib.GNUTLS_ALPN_MANDATORY
            ),
            "setting ALPN",
        )

    # -- driving ---------------------------------------------------------------

    def start(self) -> list[Event]:
        """Client: produce the ClientHello (and the 0-RTT secret when resuming)."""
        if self._server or self.state is not State.IDLE or self._session is None:
            role = self.config.role.value
            raise EngineStateError(f"start() on a {self._describe()} {role} engine")
        self.state = State.HANDSHAKING
        return self._advance(lib.qd_step(self._session, 0, ffi.NULL, 0))

    def receive(self, level: int, data: bytes) -> list[Event]:
        """Feed handshake bytes the peer sent at ``level``."""
        state = self.state
        if self._session is not None:  # close() ends input in any state
            if state is State.HANDSHAKING:
                if not data:
                    return []
                return self._advance(lib.qd_step(self._session, level, data, len(data)))
            if state is State.COMPLETE and level == _APP and not self._server:
                return self._receive_ticket(data)
        role = self.config.role.value
        raise EngineStateError(
            f"{role} engine is {self._describe()}; cannot take bytes at level {level}"
        )

    def _describe(self) -> str:
        closed = self._session is None and self.state is not State.FAILED
        return f"{self.state.value} (closed)" if closed else self.state.value

    def abort(self, code: int, reason: str, alert: int | None = None) -> list[Event]:
        """End the handshake from outside (deadline, socket error, peer close)."""
        if self.state is State.FAILED:
            return []
        self.state = State.FAILED
        self.close()
        return [HandshakeFailed(code, alert, reason)]

    def peer_alert(self, alert: int) -> list[Event]:
        """The peer closed with CRYPTO_ERROR 0x100 + ``alert``."""
        return self.abort(errno_for_peer_alert(alert), f"peer sent TLS alert {alert}")

    def close(self) -> None:
        """Frees the GnuTLS session now rather than at garbage collection."""
        session = self._session
        if session is not None:
            self._session = None
            lib.gnutls_deinit(session)
            lib.qd_journal_release(self._journal)

    def __del__(self) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _advance(self, rc: int) -> list[Event]:
        events = self._drain()
        if rc < 0 and rc not in _NONFATAL and lib.gnutls_error_is_fatal(rc):
            return self._fail(rc)
        if (
            self._server
            and self._alpn is None
            and self.config.alpn
            and any(isinstance(e, SendHandshake) for e in events)
        ):
            # RFC 9001 §8.1: GnuTLS checks ALPN only when the ClientHello carries it.
            # Nothing of this flight goes out, so no key for it is installed either.
            self._alert = ALERT_NO_APPLICATION_PROTOCOL
            return self._fail_step(errno.EACCES, "the client offered no ALPN protocol")
        if rc == 0:
            return self._complete(events)
        return events

    def _drain(self) -> list[Event]:
        journal = self._journal
        size = journal.len
        if not size:
            if journal.failed_alloc:
                raise MemoryError("handshake journal")
            return []
        raw = ffi.buffer(journal.buf, size)[:]
        journal.len = 0
        events: list[Event] = []
        unpack = _HEADER.unpack_from
        offset = 0
        pending_level = -1
        pending = b""
        while offset < size:
            kind, level, flag, cipher, length = unpack(raw, offset)
            offset += 8
            payload = raw[offset : offset + length]
            offset += length
            if kind == _KIND_DATA:
                # One event per run of messages at a level: one send instead of several.
                if level == pending_level:
                    pending += payload
                    continue
                if pending_level >= 0:
                    events.append(SendHandshake(pending_level, pending))
                pending_level, pending = level, payload
                continue
            if pending_level >= 0:
                events.append(SendHandshake(pending_level, pending))
                pending_level = -1
            if kind == _KIND_SECRET:
                events.append(InstallSecret(level, flag == 1, cipher, payload))
            elif kind == _KIND_PEER_TP:
                events.append(PeerTransportParameters(payload))
            elif kind == _KIND_ALPN:
                self._alpn = payload
                events.append(AlpnNegotiated(payload))
            elif kind == _KIND_ALERT:
                self._alert = cipher
            elif kind == _KIND_VERIFY:
                self._verify_status = _STATUS.unpack(payload)[0]
        if pending_level >= 0:
            events.append(SendHandshake(pending_level, pending))
        return events

    def _complete(self, events: list[Event]) -> list[Event]:
        session = self._session
        if not self._journal.peer_tp_seen:
            # RFC 9001 §8.2: a peer without transport parameters is a protocol violation.
            self._alert = ALERT_MISSING_EXTENSION
            return self._fail_step(errno.EPROTO, "peer sent no QUIC transport parameters")
        if self._alpn is None and self.config.alpn:
            chosen = ffi.new("gnutls_datum_t *")
            if lib.gnutls_alpn_get_selected_protocol(session, chosen) == 0:
                self._alpn = ffi.buffer(chosen.data, chosen.size)[:]
                events.append(AlpnNegotiated(self._alpn))
            elif not self._server:
                # RFC 9001 §8.1: a client whose offer the server ignored closes with
                # no_application_protocol (GnuTLS only checks a selection it receives).
                self._alert = ALERT_NO_APPLICATION_PROTOCOL
                return self._fail_step(errno.EACCES, "the server selected no ALPN protocol")
        self.state = State.COMPLETE
        peers: tuple[bytes, ...] = ()
        count = ffi.new("unsigned int *")
        chain = lib.gnutls_certificate_get_peers(session, count)
        if chain != ffi.NULL:
            peers = tuple(ffi.buffer(chain[i].data, chain[i].size)[:] for i in range(count[0]))
        identity: bytes | None = None
        if self.config.auth is AuthMode.PSK:
            if self._server:
                name = ffi.new("gnutls_datum_t *")
                if lib.gnutls_psk_server_get_username2(session, name) == 0:
                    identity = ffi.buffer(name.data, name.size)[:]
            elif self.config.psk is not None:
                identity = self.config.psk.identity
        flags = lib.gnutls_session_get_flags(session)
        events.append(
            HandshakeComplete(
                cipher=lib.qd_session_kernel_cipher(session),
                alpn=self._alpn,
                peer_certificates=peers,
                psk_identity=identity,
                resumed=bool(lib.gnutls_session_is_resumed(session)),
                early_data_accepted=bool(flags & lib.GNUTLS_SFLAGS_EARLY_DATA),
            )
        )
        if self._server:
            if self.config.ticket_key is not None:
                check(lib.gnutls_session_ticket_send(session, 1, 0), "sending a session ticket")
                events.extend(self._drain())
            self.close()  # a server has nothing left to do with the session
        return events

    def _receive_ticket(self, data: bytes) -> list[Event]:
        rc = lib.qd_post_handshake(self._session, _APP, data, len(data))
        self._drain()
        if rc in _NONFATAL:
            return []  # part of a message: the rest comes in a later CRYPTO frame
        if rc < 0:
            return [
                HandshakeFailed(
                    errno.EACCES, None, f"NewSessionTicket refused: {gnutls_strerror(rc)}"
                )
            ]
        blob = ffi.new("gnutls_datum_t *")
        if lib.gnutls_session_get_data2(self._session, blob) < 0:
            return []
        try:
            return [SessionTicket(ffi.buffer(blob.data, blob.size)[:])]
        finally:
            lib.qd_free(blob.data)

    def _fail(self, rc: int) -> list[Event]:
        journal = self._journal
        code, reason = classify(
            rc,
            self._session,
            psk_unknown=bool(journal.psk_unknown),
            psk_error=bool(journal.psk_error),
            verify_status=self._verify_status,
        )
        if self._alert is None:
            lib.gnutls_alert_send_appropriate(self._session, rc)
            self._drain()
        if journal.psk_unknown:
            self._alert = ALERT_UNKNOWN_PSK_IDENTITY
        elif journal.psk_error:
            self._alert = ALERT_INTERNAL_ERROR
        return self._fail_step(code, reason)

    def _fail_step(self, code: int, reason: str) -> list[Event]:
        # Nothing of the failing step is acted on: no bytes, no secrets, no parameters;
        # the connection closes with the alert at a level the peer can already read.
        alert = self._alert if self._alert is not None else ALERT_INTERNAL_ERROR
        return self.abort(code, f"{self.config.role.value} handshake: {reason}", alert)
