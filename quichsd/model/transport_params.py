# SPDX-License-Identifier: GPL-2.0-only
"""QUIC_SOCKOPT_TRANSPORT_PARAM rules and the struct <-> extension-body conversions.

The kernel keeps two ``struct quic_transport_param`` sets per socket: ours
(encoded into the quic_transport_parameters extension the agent fetches with
TRANSPORT_PARAM_EXT) and the peer's (decoded from the extension the agent hands
back).  The codec itself is aioquic's; this module maps the kernel's units
(microseconds, a grease flag) onto aioquic's (milliseconds, no grease).
"""

from __future__ import annotations

import dataclasses
import errno

from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.packet import (
    QuicTransportParameters,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)

from quichsd.model.errors import fail
from quichsd.quic.abi import TransportParam

#: RFC 9287 grease_quic_bit; aioquic neither writes nor keeps it.
GREASE_QUIC_BIT_ID = 0x2AB2

_BOOL_FIELDS = (
    "disable_active_migration",
    "grease_quic_bit",
    "stateless_reset",
    "disable_1rtt_encryption",
    "disable_compatible_version",
)
_MAX_STREAMS = 4096


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise fail(errno.EINVAL, f"QUIC_SOCKOPT_TRANSPORT_PARAM: {what}")


def apply_transport_param(current: TransportParam, new: TransportParam) -> TransportParam:
    """``current`` with the non-zero fields of ``new`` applied, after the kernel's checks.

    Local limits are range-checked; the peer's stream counts are clamped instead.
    """
    local = not new.remote
    if new.max_udp_payload_size:
        _check(1200 <= new.max_udp_payload_size <= 65527, "max_udp_payload_size not 1200..65527")
    _check(new.ack_delay_exponent <= 20, "ack_delay_exponent above 20")
    _check(new.max_ack_delay < 16_384_000, "max_ack_delay not below 16384000")
    if new.active_connection_id_limit:
        _check(2 <= new.active_connection_id_limit <= 8, "active_connection_id_limit not 2..8")
    if new.max_idle_timeout:
        _check(new.max_idle_timeout >= 1_000_000, "max_idle_timeout below 1 s")
    if new.max_datagram_frame_size:
        _check(new.max_datagram_frame_size >= 1200, "max_datagram_frame_size below 1200")
    if new.max_data:
        _check(new.max_data >= 1200, "max_data below 1200")
        _check(not local or new.max_data <= 0x1FFFFFFF, "max_data above 0x1FFFFFFF")
    for name in (
        "max_stream_data_bidi_local",
        "max_stream_data_bidi_remote",
        "max_stream_data_uni",
    ):
        value = getattr(new, name)
        if value:
            _check(value >= 1200, f"{name} below 1200")
            _check(not local or value <= 0x0FFFFFFF, f"{name} above 0x0FFFFFFF")
    changes: dict[str, object] = {}
    for field in dataclasses.fields(TransportParam):
        if field.name == "remote":
            continue
        value = getattr(new, field.name)
        if not value:
            continue
        if field.name in ("max_streams_bidi", "max_streams_uni") and value > _MAX_STREAMS:
            _check(not local, f"{field.name} above {_MAX_STREAMS}")
            value = _MAX_STREAMS
        changes[field.name] = True if field.name in _BOOL_FIELDS else value
    return dataclasses.replace(current, **changes)  # type: ignore[arg-type]


def peer_defaults() -> TransportParam:
    """What the peer's set says before its extension arrives (RFC 9000 defaults)."""
    return TransportParam(
        remote=True,
        active_connection_id_limit=2,
        max_idle_timeout=0,
        max_streams_bidi=0,
        max_streams_uni=0,
        max_data=0,
        max_stream_data_bidi_local=0,
        max_stream_data_bidi_remote=0,
        max_stream_data_uni=0,
    )


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
        max_streams_bidi=_clamp(params.initial_max_streams_bidi, _MAX_STREAMS),
        max_streams_uni=_clamp(params.initial_max_streams_uni, _MAX_STREAMS),
        max_data=_clamp(params.initial_max_data, (1 << 64) - 1),
        max_stream_data_bidi_local=_clamp(params.initial_max_stream_data_bidi_local, (1 << 64) - 1),
        max_stream_data_bidi_remote=_clamp(
            params.initial_max_stream_data_bidi_remote, (1 << 64) - 1
        ),
        max_stream_data_uni=_clamp(params.initial_max_stream_data_uni, (1 << 64) - 1),
    )
