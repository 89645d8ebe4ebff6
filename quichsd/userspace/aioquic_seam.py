# SPDX-License-Identifier: GPL-2.0-only
"""The one module that imports aioquic: the model's packet layer and what else it takes.

``ModelConnection`` is aioquic's ``QuicConnection`` with its TLS stack cut out; the
transport-parameter codec, the Initial header parser, the names the sockets use,
and the aioquic server of ``quichsd demo --daemon`` are here too, so an aioquic
upgrade is checked in one place.  Importing it with another aioquic than
``AIOQUIC_VERSION`` raises ``UnsupportedAioquic`` (one line, naming the version).

Pinned to aioquic==1.7.2 (pyproject's ``userspace`` extra).  aioquic does packet
protection, loss recovery, ACKs, flow control and streams; the agent under
test does TLS.  The seam is private, so these hooks are what an aioquic
upgrade must keep (the model's tests exercise every one of them):

* ``_initialize(peer_cid)`` -- extended: after aioquic builds its state,
  ``self.tls`` (a ``tls.Context``) is replaced by ``_NoTls`` and the
  0-RTT/Handshake/1-RTT ``CryptoPair``s in ``self._cryptos`` by
  ``_BufferingPair``s.  Initial bytes already sent are re-queued, so a Retry
  (which makes aioquic re-initialise) resends the ClientHello like the kernel.
* ``CryptoPair.decrypt_packet`` -- overridden in ``_BufferingPair`` to keep a
  packet whose receive key is not installed yet (aioquic would drop it).
* ``_handle_crypto_frame(context, frame_type, buf)`` -- replaced: reassembled
  CRYPTO bytes go to the socket with their level instead of to TLS.
* ``_update_traffic_key(direction, epoch, suite, secret)`` -- called to
  install a secret the agent hands over (it is TLS's key callback).
* ``_crypto_streams[epoch].sender.write`` -- queues outgoing CRYPTO data.
* ``_parse_transport_parameters`` / ``_serialize_transport_parameters`` --
  the peer's and our extension body; the local limits are written into
  ``_local_max_data``, ``_local_max_stream_data_*``, ``_local_max_streams_*``,
  ``_local_ack_delay_exponent`` and ``_local_active_connection_id_limit``.
* ``_handshake_complete``, ``_handshake_done_pending``,
  ``_confirm_handshake()``, ``_replenish_connection_ids()``,
  ``_unblock_streams()`` -- what aioquic does at completion, done when the
  agent has installed both 1-RTT keys instead of when TLS says so.
* ``get_timer()`` -- extended: silent before the ClientHello, and ACK timers
  of ``_spaces`` whose send key is missing are left out.
* ``_write_connection_limits(builder, space)`` -- extended to write
  NEW_TOKEN frames (aioquic servers never send one).
* ``_handle_connection_close_frame`` -- extended to report the peer's close;
  ``_close_event`` tells whether the connection is over.

Why aioquic and not qh3 2.1: qh3's ``QuicTlsBridge`` is a clean TLS seam, but
the packet layer behind it is native (``qh3._hazmat.QuicConnectionCore``).
What it does with a packet it cannot decrypt yet, and how it completes the
handshake (HANDSHAKE_DONE, no NEW_TOKEN API at all), happens inside Rust code
the model could neither inspect nor extend, so the kernel's buffering and
completion rules would have to be rebuilt around it by re-parsing packets.
aioquic's packet layer is Python: each kernel rule is one small override here.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Protocol

from quichsd.quic.abi import TransportParam
from quichsd.tls.levels import Cipher, Level
from quichsd.userspace.transport_params import MAX_STREAMS

#: The aioquic release whose private hooks (above) this module was written against.
AIOQUIC_VERSION = "1.7.2"
#: What to install when aioquic is missing or another release.
INSTALL_HINT = "pip install 'quichsd[userspace]'"


class UnsupportedAioquic(ImportError):
    """aioquic is missing or not the release the model's hooks were written against."""


try:
    import aioquic
    from aioquic.asyncio.server import serve as _aioquic_serve
    from aioquic.buffer import UINT_VAR_MAX, Buffer, BufferReadError  # type: ignore[attr-defined]
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import (
        MAX_PENDING_CRYPTO,
        QuicConnection,
        QuicConnectionError,
        QuicReceiveContext,
    )
    from aioquic.quic.crypto import CryptoPair, KeyUnavailableError
    from aioquic.quic.events import StreamDataReceived
    from aioquic.quic.packet import (
        QuicErrorCode,
        QuicFrameType,
        QuicPacketType,
        QuicStreamFrame,
        QuicTransportParameters,
        pull_quic_header,
        pull_quic_transport_parameters,
        push_quic_transport_parameters,
    )
    from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.tls import CipherSuite, Direction, Epoch
except ImportError:
    raise UnsupportedAioquic(
        f"the userspace model needs aioquic {AIOQUIC_VERSION}: {INSTALL_HINT}"
    ) from None
if aioquic.__version__ != AIOQUIC_VERSION:
    raise UnsupportedAioquic(
        f"the userspace model needs aioquic {AIOQUIC_VERSION}, not {aioquic.__version__}: "
        f"{INSTALL_HINT}"
    )

__all__ = [
    "AIOQUIC_VERSION",
    "INSTALL_HINT",
    "SUITE_OF_CIPHER",
    "ModelConnection",
    "QuicConfiguration",
    "QuicConnectionError",
    "StreamDataReceived",
    "UnsupportedAioquic",
    "initial_header",
    "parameter_ids",
    "patch_local_extension",
    "peer_from_extension",
    "start_echo_server",
]

#: RFC 9287 grease_quic_bit; aioquic neither writes nor keeps it.
GREASE_QUIC_BIT_ID = 0x2AB2

EPOCH_OF_LEVEL: dict[Level, Epoch] = {
    Level.INITIAL: Epoch.INITIAL,
    Level.EARLY: Epoch.ZERO_RTT,
    Level.HANDSHAKE: Epoch.HANDSHAKE,
    Level.APP: Epoch.ONE_RTT,
}
LEVEL_OF_EPOCH: dict[Epoch, Level] = {v: k for k, v in EPOCH_OF_LEVEL.items()}
#: aioquic has no AES-128-CCM packet protection.
SUITE_OF_CIPHER: dict[int, CipherSuite] = {
    Cipher.AES_128_GCM: CipherSuite.AES_128_GCM_SHA256,
    Cipher.AES_256_GCM: CipherSuite.AES_256_GCM_SHA384,
    Cipher.CHACHA20_POLY1305: CipherSuite.CHACHA20_POLY1305_SHA256,
}
#: Packets kept per level while its receive key is missing (more are dropped).
MAX_BUFFERED_PACKETS = 256
_NEW_TOKEN_OVERHEAD = 1 + 8


class PacketSink(Protocol):
    """What the packet layer reports to the socket."""

    def crypto_received(self, level: Level, data: bytes) -> None: ...

    def token_received(self, token: bytes) -> None: ...

    def peer_closed(self, errcode: int, frame: int, phrase: bytes) -> None: ...


class _NoTls:
    """Stands where aioquic keeps its ``tls.Context``: the agent is the TLS stack."""

    state: Any = None
    alpn_negotiated: str | None = None
    client_random = b""
    handshake_extensions: list[tuple[int, bytes]] = []  # noqa: RUF012 (never mutated)

    def handle_message(self, data: bytes, buffers: dict[Epoch, Buffer]) -> None:
        return None


class _BufferingPair(CryptoPair):
    """Keeps packets that arrive before the receive key; the kernel replays them at install."""

    def __init__(self) -> None:
        super().__init__()
        self.buffering = True
        self.pending: list[bytes] = []

    def decrypt_packet(
        self, packet: bytes, encrypted_offset: int, expected_packet_number: int
    ) -> tuple[bytes, bytes, int]:
        if self.buffering and not self.recv.is_valid():
            if len(self.pending) < MAX_BUFFERED_PACKETS:
                self.pending.append(bytes(packet))
            raise KeyUnavailableError("receive key not installed yet: packet kept for replay")
        return super().decrypt_packet(packet, encrypted_offset, expected_packet_number)

    def take_pending(self) -> list[bytes]:
        self.buffering = False
        pending, self.pending = self.pending, []
        return pending


class ModelConnection(QuicConnection):
    """One QUIC connection whose TLS messages and secrets come from outside."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        sink: PacketSink,
        local_params: TransportParam,
        original_destination_connection_id: bytes | None = None,
    ) -> None:
        self._sink = sink
        self.local_params = local_params
        self._initial_sent = bytearray()
        self._new_token: bytes | None = None
        self.new_token_in_flight = False
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            token_handler=sink.token_received if configuration.is_client else None,
        )

    # -- what the socket asks for ---------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the peer knows of us: a client is silent until its first CRYPTO data."""
        return not self._is_client or bool(self._initial_sent)

    @property
    def closed(self) -> bool:
        return self._close_event is not None

    def can_send(self, level: Level) -> bool:
        return bool(self._cryptos[EPOCH_OF_LEVEL[level]].send.is_valid())

    def write_crypto(self, level: Level, data: bytes) -> None:
        epoch = EPOCH_OF_LEVEL[level]
        if epoch is Epoch.INITIAL:
            self._initial_sent += data
        self._crypto_streams[epoch].sender.write(data)

    def install_secret(self, level: Level, send: bool, cipher: int, secret: bytes) -> list[bytes]:
        """Sets up packet protection; returns packets kept for this receive key."""
        epoch = EPOCH_OF_LEVEL[level]
        direction = Direction.ENCRYPT if send else Direction.DECRYPT
        self._update_traffic_key(direction, epoch, SUITE_OF_CIPHER[cipher], secret)
        pair = self._cryptos[epoch]
        if send or not isinstance(pair, _BufferingPair):
            return []
        return pair.take_pending()

    def establish(self, new_token: bytes | None) -> None:
        """Both 1-RTT keys are in: what aioquic does when its TLS completes."""
        self._handshake_complete = True
        if not self._is_client:
            self._confirm_handshake()
            self._handshake_done_pending = True
            self._new_token = new_token
        self._replenish_connection_ids()
        self._unblock_streams(is_unidirectional=False)
        self._unblock_streams(is_unidirectional=True)

    def queue_new_token(self, token: bytes) -> bool:
        """Server: send NEW_TOKEN; False while an earlier one is unacknowledged."""
        if self.new_token_in_flight or self._new_token is not None:
            return False
        self._new_token = token
        return True

    def kept_packets(self, level: Level) -> int:
        pair = self._cryptos.get(EPOCH_OF_LEVEL[level])
        return len(pair.pending) if isinstance(pair, _BufferingPair) else 0

    def local_extension(self) -> bytes:
        return self._serialize_transport_parameters()

    def apply_peer_extension(self, body: bytes) -> None:
        """Raises aioquic's QuicConnectionError for a malformed or invalid body."""
        self._parse_transport_parameters(body)

    def transport_close(self, errcode: int, phrase: str) -> None:
        """CONNECTION_CLOSE with a transport error code (frame type 0x1c)."""
        self.close(error_code=errcode, frame_type=QuicFrameType.PADDING, reason_phrase=phrase)

    def get_timer(self) -> float | None:
        # A connected client is silent until the agent's ClientHello: no probes yet.
        if not self.started:
            return None
        # An ACK is due in a space whose send key the agent has not installed yet (it
        # installed the receive key first): aioquic would report that past deadline
        # forever and the I/O thread would spin.  The ACK goes out with the key.
        hidden: list[tuple[QuicPacketSpace, float]] = []
        for epoch, space in self._spaces.items():
            if space.ack_at is not None and not self._cryptos[epoch].send.is_valid():
                hidden.append((space, space.ack_at))
                space.ack_at = None
        try:
            return super().get_timer()
        finally:
            for space, ack_at in hidden:
                space.ack_at = ack_at

    # -- aioquic hooks ------------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls = _NoTls()  # type: ignore[assignment]
        for epoch in (Epoch.ZERO_RTT, Epoch.HANDSHAKE, Epoch.ONE_RTT):
            self._cryptos[epoch] = _BufferingPair()
        if self._initial_sent:  # re-initialised after a Retry: resend the ClientHello
            self._crypto_streams[Epoch.INITIAL].sender.write(bytes(self._initial_sent))

    def _handle_crypto_frame(
        self, context: QuicReceiveContext, frame_type: int, buf: Buffer
    ) -> None:
        offset = buf.pull_uint_var()
        length = buf.pull_uint_var()
        if offset + length > UINT_VAR_MAX:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                frame_type=frame_type,
                reason_phrase="offset + length cannot exceed 2^62 - 1",
            )
        frame = QuicStreamFrame(offset=offset, data=buf.pull_bytes(length))
        stream = self._crypto_streams[context.epoch]
        if offset + length - stream.receiver.starting_offset() > MAX_PENDING_CRYPTO:
            raise QuicConnectionError(
                error_code=QuicErrorCode.CRYPTO_BUFFER_EXCEEDED,
                frame_type=frame_type,
                reason_phrase="too much crypto buffering",
            )
        self._crypto_frame_type = frame_type
        self._crypto_packet_version = context.version
        event = stream.receiver.handle_frame(frame)
        if event is not None and event.data:
            self._sink.crypto_received(LEVEL_OF_EPOCH[context.epoch], event.data)

    def _handle_connection_close_frame(
        self, context: QuicReceiveContext, frame_type: int, buf: Buffer
    ) -> None:
        start = buf.tell()
        errcode = buf.pull_uint_var()
        frame = buf.pull_uint_var() if frame_type == QuicFrameType.TRANSPORT_CLOSE else 0
        phrase = buf.pull_bytes(buf.pull_uint_var())
        buf.seek(start)
        super()._handle_connection_close_frame(context, frame_type, buf)
        self._sink.peer_closed(errcode, frame, phrase)

    def _serialize_transport_parameters(self) -> bytes:
        local = self.local_params
        self._configuration.idle_timeout = local.max_idle_timeout / 1_000_000
        for limit, value in (
            (self._local_max_data, local.max_data),
            (self._local_max_streams_bidi, local.max_streams_bidi),
            (self._local_max_streams_uni, local.max_streams_uni),
        ):
            limit.value = limit.sent = value
        self._local_max_stream_data_bidi_local = local.max_stream_data_bidi_local
        self._local_max_stream_data_bidi_remote = local.max_stream_data_bidi_remote
        self._local_max_stream_data_uni = local.max_stream_data_uni
        self._local_ack_delay_exponent = local.ack_delay_exponent
        self._local_active_connection_id_limit = local.active_connection_id_limit
        return patch_local_extension(super()._serialize_transport_parameters(), local)

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        super()._write_connection_limits(builder, space)
        token = self._new_token
        if token is None:
            return
        buf = builder.start_frame(
            QuicFrameType.NEW_TOKEN,
            capacity=_NEW_TOKEN_OVERHEAD + len(token),
            handler=self._on_new_token_delivery,
            handler_args=(token,),
        )
        buf.push_uint_var(len(token))
        buf.push_bytes(token)
        self._new_token = None
        self.new_token_in_flight = True

    def _on_new_token_delivery(self, delivery: QuicDeliveryState, token: bytes) -> None:
        if delivery == QuicDeliveryState.ACKED:
            self.new_token_in_flight = False
        elif self._new_token is None:
            self._new_token = token
            self.new_token_in_flight = False


# -- the transport-parameter codec (aioquic's), in the kernel's units -----------------------


def parameter_ids(body: bytes) -> list[int]:
    """The parameter ids in an extension body, in order; ValueError when malformed."""
    buf = Buffer(data=body)
    ids: list[int] = []
    try:
        while not buf.eof():
            ids.append(buf.pull_uint_var())
            buf.pull_bytes(buf.pull_uint_var())
    except BufferReadError as exc:
        raise ValueError("truncated transport parameter") from exc
    return ids


def patch_local_extension(body: bytes, local: TransportParam) -> bytes:
    """aioquic's encoding of our parameters, with the fields aioquic hard-codes fixed up."""
    params = pull_quic_transport_parameters(Buffer(data=body))
    params.max_udp_payload_size = local.max_udp_payload_size
    params.max_ack_delay = local.max_ack_delay // 1000
    params.disable_active_migration = local.disable_active_migration
    params.max_datagram_frame_size = local.max_datagram_frame_size or None
    buf = Buffer(capacity=len(body) + 64)
    push_quic_transport_parameters(buf, params)
    out = buf.data
    if local.grease_quic_bit:
        grease = Buffer(capacity=16)
        grease.push_uint_var(GREASE_QUIC_BIT_ID)
        grease.push_uint_var(0)
        out += grease.data
    return out


def _clamp(value: int | None, limit: int, default: int = 0) -> int:
    return default if value is None else min(value, limit)


def peer_from_extension(body: bytes) -> TransportParam:
    """The peer's extension body as ``struct quic_transport_param`` (remote=1)."""
    params: QuicTransportParameters = pull_quic_transport_parameters(Buffer(data=body))
    grease = GREASE_QUIC_BIT_ID in parameter_ids(body)
    return TransportParam(
        remote=True,
        disable_active_migration=bool(params.disable_active_migration),
        grease_quic_bit=grease,
        stateless_reset=params.stateless_reset_token is not None,
        active_connection_id_limit=_clamp(params.active_connection_id_limit, 0xFF, 2),
        ack_delay_exponent=_clamp(params.ack_delay_exponent, 0xFF, 3),
        max_datagram_frame_size=_clamp(params.max_datagram_frame_size, 0xFFFF),
        max_udp_payload_size=_clamp(params.max_udp_payload_size, 65527, 65527),
        max_idle_timeout=_clamp(params.max_idle_timeout, 0xFFFFFFFF // 1000) * 1000,
        max_ack_delay=_clamp(params.max_ack_delay, 16383, 25) * 1000,
        max_streams_bidi=_clamp(params.initial_max_streams_bidi, MAX_STREAMS),
        max_streams_uni=_clamp(params.initial_max_streams_uni, MAX_STREAMS),
        max_data=_clamp(params.initial_max_data, (1 << 64) - 1),
        max_stream_data_bidi_local=_clamp(params.initial_max_stream_data_bidi_local, (1 << 64) - 1),
        max_stream_data_bidi_remote=_clamp(
            params.initial_max_stream_data_bidi_remote, (1 << 64) - 1
        ),
        max_stream_data_uni=_clamp(params.initial_max_stream_data_uni, (1 << 64) - 1),
    )


# -- a listener's first look at a datagram ------------------------------------------------


def initial_header(data: bytes, cid_length: int) -> tuple[int, bytes] | None:
    """(version, destination CID) of a long-header Initial packet, else None."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
    except ValueError:
        return None
    if header.packet_type != QuicPacketType.INITIAL or header.version is None:
        return None
    return int(header.version), bytes(header.destination_cid)


# -- the peer of ``quichsd demo --daemon`` ---------------------------------------------------


def start_echo_server(
    cert: Path, key: Path, alpn: str
) -> tuple[asyncio.AbstractEventLoop, tuple[str, int]]:
    """An aioquic server on 127.0.0.1 (a port of its choosing) in a thread of its own:
    its loop (stop it with ``call_soon_threadsafe(loop.stop)``) and its address."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    config = QuicConfiguration(is_client=False, alpn_protocols=[alpn])
    config.load_cert_chain(str(cert), str(key))

    async def start() -> Any:
        return await _aioquic_serve("127.0.0.1", 0, configuration=config)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    host, port = server._transport.get_extra_info("sockname")[:2]
    return loop, (str(host), int(port))
