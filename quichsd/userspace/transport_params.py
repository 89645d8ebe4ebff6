# SPDX-License-Identifier: GPL-2.0-only
"""QUIC_SOCKOPT_TRANSPORT_PARAM rules and the struct <-> extension-body conversions.

The kernel keeps two ``struct quic_transport_param`` sets per socket: ours
(encoded into the quic_transport_parameters extension the agent fetches with
TRANSPORT_PARAM_EXT) and the peer's (decoded from the extension the agent hands
back).  This module holds the kernel's rules for setting them; the codec is
aioquic's, in ``aioquic_seam`` (the one module that imports aioquic).
"""

from __future__ import annotations

import dataclasses
import errno

from quichsd.quic.abi import TransportParam
from quichsd.userspace.errors import fail

_BOOL_FIELDS = (
    "disable_active_migration",
    "grease_quic_bit",
    "stateless_reset",
    "disable_1rtt_encryption",
    "disable_compatible_version",
)
#: The most streams of a kind the kernel lets either side open.
MAX_STREAMS = 4096


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
        if field.name in ("max_streams_bidi", "max_streams_uni") and value > MAX_STREAMS:
            _check(not local, f"{field.name} above {MAX_STREAMS}")
            value = MAX_STREAMS
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
