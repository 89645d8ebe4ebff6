# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's per-socket QUIC state: what socket options and the data path act on.

A ``Session`` is one socket's half of the kernel: its state, stored option
values, receive list, keys, tickets and the packet layer (``ModelConnection``)
behind it.  It is also the ``Channel`` its endpoint's I/O thread feeds.  Every
method expects the caller to hold ``lock`` (the endpoint's).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import os
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum

from quichsd.quic.abi import (
    CLOSE_PHRASE_BUFFER_SIZE,
    QUIC_VERSION_V1,
    QUIC_VERSION_V2,
    SESSION_TICKET_MAX_LEN,
    TRANSPORT_PARAM_EXT_MAX_LEN,
    Config,
    ConnectionClose,
    TransportError,
    TransportParam,
)
from quichsd.tls.levels import SECRET_LENGTH, Cipher, Level
from quichsd.userspace.aioquic_seam import (
    SUITE_OF_CIPHER,
    ModelConnection,
    QuicConfiguration,
    QuicConnectionError,
    StreamDataReceived,
    peer_from_extension,
)
from quichsd.userspace.endpoint import Address, Endpoint
from quichsd.userspace.errors import fail
from quichsd.userspace.receive_queue import Readiness, ReceiveQueue
from quichsd.userspace.transport_params import peer_defaults

VERSIONS = (QUIC_VERSION_V1, QUIC_VERSION_V2)
#: Stands in for the certificate aioquic insists a server has; its TLS never runs.
_NO_CERTIFICATE: object = object()
#: Per-process secret behind derived ticket keys and NEW_TOKEN tokens.
_MASTER_SECRET = os.urandom(32)
_TICKET_HEADER = 4


class SockState(Enum):
    CLOSED = "closed"  # not connected yet, or over
    LISTENING = "listening"
    ESTABLISHING = "establishing"
    ESTABLISHED = "established"


def default_config() -> Config:
    """What getsockopt(CONFIG) shows before anything is set."""
    return Config(version=QUIC_VERSION_V1, initial_smoothed_rtt=333_000)


@dataclasses.dataclass(slots=True)
class Settings:
    """Option values a socket stores; an accepted socket starts with its listener's."""

    alpn: tuple[bytes, ...] = ()
    config: Config = dataclasses.field(default_factory=default_config)
    local_tp: TransportParam = dataclasses.field(default_factory=TransportParam)
    ticket: bytes = b""  # client: session data; server: ticket key override
    token: bytes = b""

    def copy(self) -> Settings:
        return dataclasses.replace(self)


def derived_ticket_key(peer: Address) -> bytes:
    """A server's default 64-byte ticket key: from the peer address with the port zeroed."""
    packed = socket.inet_aton(peer[0]) + bytes(2)
    return hmac.new(_MASTER_SECRET, b"session_ticket" + packed, hashlib.sha512).digest()


def quic_configuration(server: bool, settings: Settings) -> QuicConfiguration:
    config = settings.config
    version = config.version or QUIC_VERSION_V1
    qconf = QuicConfiguration(
        is_client=not server,
        idle_timeout=settings.local_tp.max_idle_timeout / 1_000_000,
        initial_rtt=config.initial_smoothed_rtt / 1_000_000,
        congestion_control_algorithm="cubic" if config.congestion_control_algo == 1 else "reno",
        supported_versions=list(VERSIONS) if server else [version],
    )
    if server:
        qconf.certificate = qconf.private_key = _NO_CERTIFICATE
    else:
        qconf.original_version = version
        qconf.token = settings.token
    return qconf


class Session:
    def __init__(self, lock: threading.RLock, *, server: bool, settings: Settings) -> None:
        self.lock = lock
        self.cond = threading.Condition(lock)
        self.server = server
        self.settings = settings
        self.state = SockState.CLOSED
        self.endpoint: Endpoint | None = None
        self.conn: ModelConnection | None = None
        self.peer: Address | None = None
        self.queue = ReceiveQueue()
        self.readiness = Readiness()
        self.remote_tp = peer_defaults()
        self.close_info = ConnectionClose()
        self.keys: dict[tuple[Level, bool], int] = {}
        self.was_established = False
        self.ticket_set_after_established = False
        self.received_ticket: bytes | None = None
        self._app_crypto = bytearray()
        self._app_crypto_done = False
        self._held: list[tuple[Level, bytes]] = []
        #: Server: 0-RTT stream data, kept off the receive list until the 1-RTT receive key.
        self._early_streams: list[tuple[int, bytes, bool]] = []
        self._released = False
        #: A listener's hook: called once, when the first Initial CRYPTO data is queued.
        self.on_first_initial: Callable[[Session], None] | None = None

    # -- setting up -------------------------------------------------------------------

    def start(self, endpoint: Endpoint, peer: Address, conn: ModelConnection) -> None:
        self.endpoint, self.peer, self.conn = endpoint, peer, conn
        self.state = SockState.ESTABLISHING
        self.keys = {
            (Level.INITIAL, True): Cipher.AES_128_GCM,
            (Level.INITIAL, False): Cipher.AES_128_GCM,
        }
        endpoint.retain()
        endpoint.add(peer, self)

    def new_connection(self, original_dcid: bytes | None = None) -> ModelConnection:
        return ModelConnection(
            configuration=quic_configuration(self.server, self.settings),
            sink=self,
            local_params=self.settings.local_tp,
            original_destination_connection_id=original_dcid,
        )

    def _connection(self) -> ModelConnection:
        if self.conn is None:
            raise fail(errno.ENOTCONN, "the socket is not connected")
        return self.conn

    # -- Channel: fed by the endpoint's I/O thread ----------------------------------------

    def datagram_received(self, data: bytes, now: float) -> None:
        if self.conn is not None and self.peer is not None and not self._released:
            self.conn.receive_datagram(data, self.peer, now)
            self.after_io(now)

    def handle_timer(self, now: float) -> None:
        if self.conn is not None and not self._released:
            self.conn.handle_timer(now)
            self.after_io(now)

    def timer(self) -> float | None:
        if self.conn is None or self._released:
            return None
        return self.conn.get_timer()

    # -- PacketSink: reported by the packet layer -------------------------------------------

    def crypto_received(self, level: Level, data: bytes) -> None:
        if level is Level.APP:
            self._collect_ticket(data)
            return
        self.queue.push_handshake(level, data)
        hook = self.on_first_initial
        if hook is not None and level is Level.INITIAL:
            self.on_first_initial = None
            hook(self)

    def token_received(self, token: bytes) -> None:
        self.settings.token = token

    def peer_closed(self, errcode: int, frame: int, phrase: bytes) -> None:
        text = phrase.replace(b"\0", b"")[: CLOSE_PHRASE_BUFFER_SIZE - 1]
        self.close_info = ConnectionClose(errcode & 0xFFFFFFFF, frame & 0xFF, text)

    def _collect_ticket(self, data: bytes) -> None:
        """Client: keep the first complete NewSessionTicket (up to 4096 bytes); never recvmsg."""
        if self.server or self._app_crypto_done:
            return
        self._app_crypto += data
        if len(self._app_crypto) < _TICKET_HEADER:
            return
        total = _TICKET_HEADER + int.from_bytes(self._app_crypto[1:4], "big")
        if total > SESSION_TICKET_MAX_LEN:
            self._app_crypto_done = True
        elif len(self._app_crypto) >= total:
            self.received_ticket = bytes(self._app_crypto[:total])
            self._app_crypto_done = True

    # -- after anything happened ------------------------------------------------------------

    def after_io(self, now: float | None = None) -> None:
        """Collect packet-layer events, transmit, and update readiness and waiters."""
        conn = self.conn
        if conn is None:
            return
        while (event := conn.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                self._stream_received(event.stream_id, event.data, event.end_stream)
        if conn.closed:
            self.state = SockState.CLOSED
        if self.endpoint is not None and not self._released:
            for data, peer in conn.datagrams_to_send(time.monotonic() if now is None else now):
                self.endpoint.send(data, peer)
            self.endpoint.wake()
        self.readiness.update(bool(self.queue) or self.state is SockState.CLOSED)
        self.cond.notify_all()

    def _stream_received(self, stream_id: int, data: bytes, fin: bool) -> None:
        """A server holds 0-RTT stream data until the 1-RTT receive key, as the kernel does."""
        if self.server and (Level.APP, False) not in self.keys:
            self._early_streams.append((stream_id, data, fin))
        else:
            self.queue.push_stream(stream_id, data, fin)

    # -- handshake data path ----------------------------------------------------------------

    def send_handshake(self, level: Level, data: bytes, more: bool) -> None:
        conn = self._connection()
        if self.state is SockState.CLOSED:
            raise fail(errno.EPIPE, "the connection is closed")
        if level is Level.EARLY:
            raise fail(errno.EINVAL, "no CRYPTO frames at the EARLY level")
        if not data:
            raise fail(errno.EMSGSIZE, "zero-length handshake message")
        if not conn.can_send(level):
            raise fail(errno.EINVAL, f"no {level.name} send key installed")
        self._held.append((level, data))
        if more:  # MSG_MORE: held back until a send without it
            return
        for held_level, held in self._held:
            conn.write_crypto(held_level, held)
        self._held.clear()
        self.after_io()

    def send_stream(self, stream_id: int, data: bytes, fin: bool) -> None:
        conn = self._connection()
        if self.state is SockState.CLOSED:
            raise fail(errno.EPIPE, "the connection is closed")
        try:
            conn.send_stream_data(stream_id, data, end_stream=fin)
        except ValueError as exc:
            raise fail(errno.EINVAL, f"stream {stream_id}: {exc}") from exc
        self.after_io()

    # -- secrets ------------------------------------------------------------------------------

    def install_secret(self, level: int, send: bool, cipher: int, secret: bytes) -> None:
        if self.state is not SockState.ESTABLISHING:
            raise fail(
                errno.EINVAL, f"secrets only while establishing (socket is {self.state.value})"
            )
        conn = self._connection()
        if level not in (Level.APP, Level.HANDSHAKE, Level.EARLY):
            raise fail(errno.EINVAL, f"no secret can be installed at level {level}")
        key_level = Level(level)
        if cipher not in SECRET_LENGTH:
            raise fail(errno.EINVAL, f"cipher {cipher} is not 51..54")
        length = SECRET_LENGTH[cipher]
        # Stricter than the kernel, which cannot see the length: a secret longer than
        # the cipher's, or a 48-byte buffer whose last 16 bytes are all zero.
        if any(secret[length:]) or (length == 48 and not any(secret[32:48])):
            raise fail(errno.EINVAL, f"a cipher {cipher} secret is {length} bytes")
        fixed = {c for (lvl, _), c in self.keys.items() if lvl is key_level}
        if fixed and cipher not in fixed:
            raise fail(errno.EINVAL, f"{key_level.name} already uses cipher {fixed.pop()}")
        if (key_level, send) in self.keys:
            raise fail(errno.EINVAL, f"{key_level.name} {'send' if send else 'receive'} key is in")
        if cipher not in SUITE_OF_CIPHER:
            raise fail(errno.EOPNOTSUPP, "AES-128-CCM packet protection is not emulated")
        if key_level is Level.APP and not send:
            # Makes room for this connection's NewSessionTicket and NEW_TOKEN.
            self.settings.ticket = b""
            self.settings.token = b""
            self.ticket_set_after_established = False
            early, self._early_streams = self._early_streams, []
            for stream_id, data, fin in early:  # buffered 0-RTT stream data: now readable
                self.queue.push_stream(stream_id, data, fin)
        now = time.monotonic()
        kept = conn.install_secret(key_level, send, cipher, bytes(secret[:length]))
        self.keys[(key_level, send)] = cipher
        assert self.peer is not None
        for packet in kept:  # processed inside this setsockopt, as the kernel does
            conn.receive_datagram(packet, self.peer, now)
        if (Level.APP, True) in self.keys and (Level.APP, False) in self.keys:
            self.state = SockState.ESTABLISHED
            self.was_established = True
            token = os.urandom(32) if self.server else None
            conn.establish(new_token=token)
        self.after_io(now)

    # -- transport parameters -------------------------------------------------------------

    def local_extension(self) -> bytes:
        if self.state is not SockState.ESTABLISHING:
            raise fail(errno.EINVAL, "transport parameters only while establishing")
        conn = self._connection()
        return conn.local_extension()

    def set_peer_extension(self, body: bytes) -> None:
        if self.state is not SockState.ESTABLISHING:
            raise fail(errno.EINVAL, "transport parameters only while establishing")
        conn = self._connection()
        if len(body) > TRANSPORT_PARAM_EXT_MAX_LEN:
            raise fail(errno.EINVAL, f"{len(body)} bytes exceed {TRANSPORT_PARAM_EXT_MAX_LEN}")
        try:
            remote = peer_from_extension(body)
            conn.apply_peer_extension(body)
        except (ValueError, QuicConnectionError) as exc:
            code = getattr(exc, "error_code", TransportError.TRANSPORT_PARAM)
            conn.transport_close(code, getattr(exc, "reason_phrase", str(exc)))
            self.after_io()
            raise fail(errno.EINVAL, f"peer transport parameters refused: {exc}") from exc
        self.remote_tp = remote

    # -- tickets, tokens, key update ------------------------------------------------------

    def session_ticket(self) -> bytes:
        if self.server:
            assert self.peer is not None
            return self.settings.ticket or derived_ticket_key(self.peer)
        if not self.was_established or self.ticket_set_after_established:
            return self.settings.ticket
        return self.received_ticket or b""

    def store_session_ticket(self, data: bytes) -> None:
        self.settings.ticket = data
        self.ticket_set_after_established = self.was_established

    def send_new_token(self, token: bytes) -> None:
        if self.state is not SockState.ESTABLISHED:
            raise fail(errno.EINVAL, "a server sends NEW_TOKEN only when established")
        conn = self._connection()
        if not conn.queue_new_token(token):
            raise fail(errno.EAGAIN, "a NEW_TOKEN frame is still in flight")
        self.after_io()

    def key_update(self) -> None:
        if self.state is not SockState.ESTABLISHED:
            raise fail(errno.EPIPE, "key update only when established")
        conn = self._connection()
        conn.request_key_update()
        self.after_io()

    # -- closing --------------------------------------------------------------------------

    def release(self) -> Endpoint | None:
        """The socket is closed: send CONNECTION_CLOSE; returns the endpoint to stop, if last."""
        if self._released:
            return None
        conn, endpoint = self.conn, self.endpoint
        if conn is not None and conn.started and not conn.closed:
            info = self.close_info
            phrase = info.phrase.decode("utf-8", "replace")
            if self.state is SockState.ESTABLISHED:
                conn.close(error_code=info.errcode, reason_phrase=phrase)
            else:  # the kernel's default for a failed handshake: APPLICATION_ERROR
                conn.transport_close(info.errcode or TransportError.APPLICATION, phrase)
            self.after_io()
        self._released = True
        self.state = SockState.CLOSED
        self.readiness.close()
        self.cond.notify_all()
        if endpoint is None or self.peer is None:
            return None
        endpoint.remove(self.peer, self)
        return endpoint if endpoint.release() else None
