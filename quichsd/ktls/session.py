# SPDX-License-Identifier: GPL-2.0-only
"""One GnuTLS session on a TCP socket's fd: the TLS 1.3 handshake that precedes kTLS.

``TcpTlsSession`` sends and receives with ``MSG_DONTWAIT`` (the socket's file
belongs to a kernel consumer, so its O_NONBLOCK flag is not ours to change),
and each ``step()`` returns ``GNUTLS_E_AGAIN`` instead of blocking; it never
waits.  ``handshake.py`` runs it in tlshd's order, ``aio.py`` waits between its
steps, and ``install.py`` hands the keys to the kernel: on success, no kTLS
unless GnuTLS's record state can be handed over whole (statuses per
docs/tlshd-compat.md §TCP-STATUS).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from quichsd.ktls.abi import (
    GNUTLS_TO_KTLS,
    INSTALLABLE,
    TLS_1_2_VERSION,
    TLS_1_3_VERSION,
    CryptoInfo,
    CryptoInfoError,
    crypto_info_from_state,
    payload_limit,
)
from quichsd.ktls.install import KtlsInstallError, KtlsMaterial, SockoptTarget
from quichsd.ktls.priority import PriorityKind, priority_cache, psk_kind
from quichsd.tls import AuthMode, CertificateCredentials, PskClientCredentials, Role
from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import (
    PskLookup,
    TlsSetupError,
    check,
    gnutls_strerror,
    gnutls_version,
    psk_binder_hash_supported,
)
from quichsd.tls.failures import (
    alert_text,
    classify,
    errno_for_peer_alert,
    verify_status_text,
)

log = logging.getLogger(__name__)

#: ``step()`` returns that mean "wait for the socket, then step again".
AGAIN = frozenset({lib.GNUTLS_E_AGAIN, lib.GNUTLS_E_INTERRUPTED})
_VERSIONS = {int(lib.GNUTLS_TLS1_3): TLS_1_3_VERSION, int(lib.GNUTLS_TLS1_2): TLS_1_2_VERSION}
_MAX_TIMEOUT_MS = 0xFFFFFFFE
#: Socket errors that mean the peer reset the connection (EPIPE: after its FIN); the
#: statuses sent for each ending are tabled in docs/errno.md.
_PEER_RESET = frozenset({errno.ECONNRESET, errno.EPIPE})


class TcpSocket(SockoptTarget, Protocol):
    """What the TCP path needs of a socket (``socket.socket`` has it)."""

    def fileno(self) -> int: ...

    def getsockopt(self, level: int, optname: int, /) -> int: ...


@dataclass(frozen=True)
class TcpCredentials:
    """How to authenticate a TCP handshake.

    ``certificates``: our chain/key and trust anchors (X.509, and the trust
    store of an anonymous client); ``psk_identity``/``psk_key``: a client's
    PSK; ``psk_lookup``: a server's identity → key.
    """

    auth: AuthMode
    certificates: CertificateCredentials | None = None
    psk_identity: bytes | None = None
    psk_key: bytes | None = field(default=None, repr=False)
    psk_lookup: PskLookup | None = None
    peer_name: str | None = None
    verify_peer: bool = True


class _PskServerCredentials:
    """Server PSK credentials whose callback answers unknown identities with an alert."""

    def __init__(self) -> None:
        holder = ffi.new("gnutls_psk_server_credentials_t *")
        check(lib.qd_psk_allocate_server(holder), "allocating PSK credentials")
        self.ptr = ffi.gc(holder[0], lib.gnutls_psk_free_server_credentials)
        lib.qd_tcp_set_psk_server_callback(self.ptr)


_psk_server: _PskServerCredentials | None = None


def _psk_server_credentials() -> _PskServerCredentials:
    global _psk_server
    if _psk_server is None:
        _psk_server = _PskServerCredentials()
    return _psk_server


_BINDER_HASHES = {PriorityKind.PSK_SHA256: "sha256", PriorityKind.PSK_SHA384: "sha384"}
_warned_sha256_binders: set[bytes] = set()


def _binder_hash(kind: PriorityKind, identity: bytes) -> str | None:
    """The PSK's hash for its binders; warns (once per identity) where GnuTLS cannot use it."""
    binder_hash = _BINDER_HASHES.get(kind)
    old_gnutls = binder_hash == "sha384" and not psk_binder_hash_supported()
    if old_gnutls and identity not in _warned_sha256_binders:
        _warned_sha256_binders.add(identity)
        log.warning(
            "PSK %r is a SHA-384 key but GnuTLS %s computes PSK binders with SHA-256 "
            "(3.8.11 fixed it): it will work only with peers that do the same, over a "
            "SHA-256 suite, as tlshd on this GnuTLS does",
            identity.decode(errors="replace"),
            gnutls_version(),
        )
    return binder_hash


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TcpCompletion:
    """What a finished GnuTLS handshake negotiated, and the key material for kTLS."""

    version: int
    cipher: int
    peer_certificates: tuple[bytes, ...] = field(repr=False)
    psk_identity: bytes | None
    material: KtlsMaterial = field(repr=False)


class TcpTlsSession:
    """One GnuTLS session on a TCP socket's fd; ``step()`` never blocks."""

    def __init__(
        self,
        fd: int,
        role: Role,
        credentials: TcpCredentials,
        *,
        timeout: float | None = None,
        ciphers: tuple[int, ...] | None = None,
        record_size_limit: int | None = None,
    ) -> None:
        self._session: Any = None
        self.role = role
        self.credentials = credentials
        self._keepalive: list[Any] = []
        server = role is Role.SERVER
        auth = credentials.auth
        psk = auth is AuthMode.PSK
        if server and auth is AuthMode.UNAUTH:
            raise TlsSetupError("an unauthenticated server handshake is not supported")

        flags = (lib.GNUTLS_SERVER if server else lib.GNUTLS_CLIENT) | lib.GNUTLS_NONBLOCK
        holder = ffi.new("gnutls_session_t *")
        check(lib.gnutls_init(holder, flags), "gnutls_init")
        self._session = session = holder[0]
        state = self._state = ffi.new("struct qd_tcp *")
        state.is_server = server
        lib.qd_tcp_attach(session, state, fd)

        if psk:
            kind = self._set_psk(server, credentials)
        else:
            kind = PriorityKind.X509
            creds = credentials.certificates
            if creds is None:
                raise TlsSetupError("an X.509 or anonymous handshake needs certificate credentials")
            if server and not creds.has_key:
                raise TlsSetupError("a server needs a certificate and its private key")
            self._keepalive.append(creds)
            check(
                lib.gnutls_credentials_set(session, lib.GNUTLS_CRD_CERTIFICATE, creds.ptr),
                "certificate credentials",
            )
            if server:
                # Always asked, never required; a presented one is checked by qd_tcp_verify.
                lib.gnutls_certificate_server_set_request(session, lib.GNUTLS_CERT_REQUEST)
                state.verify_mode = lib.QD_TCP_VERIFY_CLIENT
            else:
                self._set_client_name(credentials)
        self.priority_kind = kind
        cache = priority_cache(kind, ciphers)
        self._keepalive.append(cache)
        check(lib.gnutls_priority_set(session, cache), f"setting the {kind.value} priority")
        if timeout is not None:
            ms = min(max(1, int(timeout * 1000)), _MAX_TIMEOUT_MS)
            lib.gnutls_handshake_set_timeout(session, ms)
        if record_size_limit is not None:
            # Our receive limit, advertised as RFC 8449 record_size_limit (tests, self-test).
            rc = lib.gnutls_record_set_max_recv_size(session, record_size_limit)
            check(rc, f"record size limit {record_size_limit}")

    def _set_psk(self, server: bool, credentials: TcpCredentials) -> PriorityKind:
        session = self._session
        if server:
            lookup = credentials.psk_lookup
            if lookup is None:
                raise TlsSetupError("a PSK server needs a key lookup", code=errno.ENOKEY)
            handle = ffi.new_handle(lookup)
            self._keepalive.append(handle)
            self._state.handle = handle
            creds: Any = _psk_server_credentials()
            kind = PriorityKind.PSK  # the server does not know the key length yet
        else:
            identity, key = credentials.psk_identity, credentials.psk_key
            if not identity or not key:
                raise TlsSetupError("a PSK client needs an identity and a key", code=errno.ENOKEY)
            kind = psk_kind(identity, len(key))
            creds = PskClientCredentials(identity, key, _binder_hash(kind, identity))
        self._keepalive.append(creds)
        check(lib.gnutls_credentials_set(session, lib.GNUTLS_CRD_PSK, creds.ptr), "PSK credentials")
        return kind

    def _set_client_name(self, credentials: TcpCredentials) -> None:
        session = self._session
        name = credentials.peer_name
        # SNI carries host names only (RFC 6066 §3); an address is still verified (IP SAN).
        if name and not _is_ip_literal(name):
            encoded = name.encode()
            check(
                lib.gnutls_server_name_set(session, lib.GNUTLS_NAME_DNS, encoded, len(encoded)),
                "setting SNI",
            )
        if credentials.auth is AuthMode.X509 or credentials.verify_peer:
            # Chain and name, checked by qd_tcp_verify (which can still send an alert).
            # The C side keeps the pointer: the string lives as long as the session.
            host = ffi.new("char[]", name.encode()) if name else ffi.NULL
            self._keepalive.append(host)
            self._state.verify_host = host
            self._state.verify_mode = lib.QD_TCP_VERIFY_SERVER

    # -- driving -------------------------------------------------------------------

    def step(self) -> int:
        """One ``gnutls_handshake()``: 0 done, GNUTLS_E_AGAIN to wait, else an error."""
        if self._session is None:
            raise RuntimeError("the TCP TLS session is closed")
        return int(lib.gnutls_handshake(self._session))

    def wants_write(self) -> bool:
        """After GNUTLS_E_AGAIN: whether GnuTLS waits to write (else to read)."""
        return bool(lib.gnutls_record_get_direction(self._session) == 1)

    @property
    def sent_alert(self) -> int | None:
        sent = int(self._state.sent_alert)
        return None if sent < 0 else sent

    def received_alert(self, rc: int) -> int | None:
        if rc in (lib.GNUTLS_E_FATAL_ALERT_RECEIVED, lib.GNUTLS_E_WARNING_ALERT_RECEIVED):
            return int(lib.gnutls_alert_get(self._session))
        return None

    def failure(self, rc: int) -> tuple[int, str]:
        """(DONE status, reason) for a fatal ``gnutls_handshake()`` return."""
        state, session = self._state, self._session
        if state.psk_error:
            return errno.EIO, "looking up the client's PSK identity failed"
        if state.psk_unknown:
            return errno.EKEYREJECTED, "the client's PSK identity is unknown here"
        # The statuses for a connection that ends under the handshake, and why: docs/errno.md.
        if rc == lib.GNUTLS_E_PREMATURE_TERMINATION:
            return errno.ETIMEDOUT, "the peer closed the connection during the handshake"
        if rc == lib.GNUTLS_E_TIMEDOUT:
            return errno.ETIMEDOUT, "no handshake within the deadline"
        alert = self.received_alert(rc)
        if alert is not None:
            code = errno_for_peer_alert(alert)
            return code, f"the peer sent TLS alert {alert_text(alert)}"
        if rc in (lib.GNUTLS_E_PUSH_ERROR, lib.GNUTLS_E_PULL_ERROR):
            cause = int(state.last_errno)
            what = errno.errorcode.get(cause, str(cause))
            if cause in _PEER_RESET:
                return errno.ECONNRESET, f"the peer reset the connection ({what})"
            if cause == errno.ENOTCONN:
                return errno.ENOTCONN, "the socket is not connected"
            return errno.EACCES, f"socket error during the handshake ({what})"
        if state.verify_failed:
            status = int(state.verify_status)
            why = (
                verify_status_text(session, status)
                if status
                else gnutls_strerror(int(state.verify_rc))
            )
            whose = "client" if self.role is Role.SERVER else "server"
            return errno.EACCES, f"{whose} certificate rejected: {why}"
        return classify(rc, session, psk_unknown=False)

    def completion(self) -> TcpCompletion:
        """After ``step()`` returned 0: what was negotiated and the kTLS material.

        Raises ``KtlsInstallError`` (EIO) when the session cannot be handed to
        the kernel: an unsupported version or cipher, or application data
        GnuTLS already decrypted (kTLS would never deliver it).
        """
        session, state = self._session, self._state
        gnutls_version = int(lib.gnutls_protocol_get_version(session))
        version = _VERSIONS.get(gnutls_version)
        if version is None:
            raise KtlsInstallError(
                "version", errno.EPROTO, f"protocol {gnutls_version} has no kTLS layout"
            )
        cipher = GNUTLS_TO_KTLS.get(int(lib.gnutls_cipher_get(session)))
        if cipher is None or cipher not in INSTALLABLE:
            name = ffi.string(lib.gnutls_cipher_get_name(lib.gnutls_cipher_get(session))).decode()
            raise KtlsInstallError("cipher", errno.EINVAL, f"{name} cannot be installed in kTLS")
        pending = pending_application_data(session)
        if pending:
            raise KtlsInstallError(
                "leftovers",
                errno.EPROTO,
                f"GnuTLS already holds {pending} bytes of application data that kTLS would lose",
            )
        tx = self._direction(version, cipher, read=False)
        rx = self._direction(version, cipher, read=True)
        limit = int(state.peer_record_limit) or None
        material = KtlsMaterial(
            version=version,
            cipher=int(cipher),
            tx=tx,
            rx=rx,
            payload_limit=payload_limit(version, limit),
            peer_record_limit=limit,
        )
        peers: tuple[bytes, ...] = ()
        count = ffi.new("unsigned int *")
        chain = lib.gnutls_certificate_get_peers(session, count)
        if chain != ffi.NULL:
            peers = tuple(ffi.buffer(chain[i].data, chain[i].size)[:] for i in range(count[0]))
        identity: bytes | None = None
        if self.credentials.auth is AuthMode.PSK:
            if self.role is Role.SERVER:
                name = ffi.new("gnutls_datum_t *")
                if lib.gnutls_psk_server_get_username2(session, name) == 0:
                    identity = ffi.buffer(name.data, name.size)[:]
            else:
                identity = self.credentials.psk_identity
        return TcpCompletion(version, int(cipher), peers, identity, material)

    def _direction(self, version: int, cipher: int, *, read: bool) -> CryptoInfo:
        iv = ffi.new("unsigned char[32]")
        key = ffi.new("unsigned char[32]")
        seq = ffi.new("unsigned char[8]")
        iv_len = ffi.new("unsigned *")
        key_len = ffi.new("unsigned *")
        rc = lib.qd_tcp_record_state(self._session, int(read), iv, iv_len, key, key_len, seq)
        direction = "RX" if read else "TX"
        if rc < 0:
            raise KtlsInstallError(
                f"{direction} record state",
                errno.EIO,
                f"{direction} record state: {gnutls_strerror(rc)}",
            )
        try:
            return crypto_info_from_state(
                version,
                cipher,
                ffi.buffer(iv, iv_len[0])[:],
                ffi.buffer(key, key_len[0])[:],
                ffi.buffer(seq, 8)[:],
            )
        except CryptoInfoError as exc:
            raise KtlsInstallError(
                f"{direction} crypto_info", errno.EINVAL, f"{direction} crypto_info: {exc}"
            ) from None
        finally:
            ffi.memmove(key, b"\0" * 32, 32)

    def close(self) -> None:
        session = self._session
        if session is not None:
            self._session = None
            lib.gnutls_deinit(session)

    def __del__(self) -> None:
        self.close()


def pending_application_data(session: Any) -> int:
    """Bytes of application data GnuTLS decrypted and still holds (kTLS cannot have them)."""
    return int(lib.gnutls_record_check_pending(session))


__all__ = [
    "AGAIN",
    "TcpCompletion",
    "TcpCredentials",
    "TcpSocket",
    "TcpTlsSession",
    "pending_application_data",
]
