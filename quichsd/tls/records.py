# SPDX-License-Identifier: GPL-2.0-only
"""A session's journal (``_glue.c``): opening it, stepping it, turning it into events.

These run right after GnuTLS has cooled the caches, where what a call costs
is mostly the distinct interpreter and cffi code it touches.  The ``_events``
extension does each common path in one call that touches no cffi; the
``python_*`` versions here do the same through cffi when it was not built.

A journal is what ``open_session()`` returns: an ``_events.Journal`` or a
cffi ``struct qd_journal *`` (freed with its session when collected, by
``ffi.gc``); ``view()`` gives the cffi struct either way, for the rare paths.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.events import (
    AlpnNegotiated,
    Event,
    HandshakeComplete,
    InstallSecret,
    PeerTransportParameters,
    SendHandshake,
)

_HEADER = struct.Struct("=BBBBI")
_KIND_DATA, _KIND_SECRET, _KIND_PEER_TP = lib.QD_KIND_DATA, lib.QD_KIND_SECRET, lib.QD_KIND_PEER_TP
_BOTH_SECRETS = lib.QD_SECRET_TX | lib.QD_SECRET_RX
_TX = lib.QD_SECRET_TX
_AGAIN = lib.GNUTLS_E_AGAIN
_buffer = ffi.buffer
_qd_open, _qd_step, _qd_close = lib.qd_open, lib.qd_step, lib.qd_close


class SetupFailed(Exception):
    """``qd_open()`` could not set the session up: ``args`` are (step, GnuTLS code)."""


def python_open(plan: Any, transport_parameters: bytes, session_data: bytes) -> Any:
    """A new session's journal, set up as ``plan`` (``struct qd_plan *``) asks."""
    raw = _qd_open(
        plan, transport_parameters, len(transport_parameters), session_data, len(session_data)
    )
    journal = ffi.gc(raw, _qd_close)
    if journal.setup_rc:
        raise SetupFailed(journal.setup_step, journal.setup_rc)
    return journal


def python_step(journal: Any, level: int, data: bytes) -> list[Event] | int:
    """Feeds ``data`` (none: just advance) and advances the handshake.

    Returns the step's events when GnuTLS wants more input and the engine has
    nothing to check; otherwise qd_step()'s code, the events left for ``drain()``.
    """
    rc: int = _qd_step(journal, level, data, len(data))
    if rc == _AGAIN and not journal.alpn_check:
        return python_drain(journal)
    return rc


def python_drain(journal: Any) -> list[Event]:
    """The events recorded since the last drain, in order; empties the journal."""
    size = journal.len
    if not size:
        if journal.failed_alloc:
            raise MemoryError("handshake journal")
        return []
    raw = _buffer(journal.buf, size)[:]
    journal.len = 0
    events: list[Event] = []
    append = events.append
    unpack = _HEADER.unpack_from
    offset = 0
    while offset < size:
        kind, level, flag, cipher, length = unpack(raw, offset)
        start = offset + 8
        offset = start + length
        if kind == _KIND_DATA:
            append(SendHandshake(level, raw[start:offset]))
        elif kind == _KIND_SECRET:
            if flag == _BOTH_SECRETS:  # transmit first, then receive
                half = start + (length >> 1)
                append(InstallSecret(level, True, cipher, raw[start:half]))
                append(InstallSecret(level, False, cipher, raw[half:offset]))
            else:
                append(InstallSecret(level, flag == _TX, cipher, raw[start:offset]))
        elif kind == _KIND_PEER_TP:
            append(PeerTransportParameters(raw[start:offset]))
        else:
            append(AlpnNegotiated(raw[start:offset]))
    return events


def python_completion(
    journal: Any, alpn: bytes | None, identity: bytes | None
) -> HandshakeComplete:
    """HandshakeComplete from what the completing ``qd_step()`` gathered."""
    count = journal.peer_count
    peers: tuple[bytes, ...] = ()
    if count:
        peers = tuple([_buffer(d.data, d.size)[:] for d in journal.peers[0:count]])
    return HandshakeComplete(
        journal.cipher,
        alpn,
        peers,
        identity,
        bool(journal.resumed),
        bool(journal.early_data_accepted),
    )


def _same(obj: Any) -> Any:
    return obj


def _c_view(journal: Any) -> Any:
    return ffi.from_buffer("struct qd_journal *", journal, require_writable=True)


def _c_plan(plan: Any) -> bytes:
    # A copy of the struct; its pointers stay valid as long as the plan's owner lives.
    return bytes(ffi.buffer(plan))


#: The fields ``_events.c`` fills, per event type (it checks they are slots).
_C_FIELDS: dict[type, tuple[str, ...]] = {
    SendHandshake: ("level", "data"),
    InstallSecret: ("level", "send", "cipher", "secret"),
    PeerTransportParameters: ("data",),
    AlpnNegotiated: ("protocol",),
    HandshakeComplete: (
        "cipher",
        "alpn",
        "peer_certificates",
        "psk_identity",
        "resumed",
        "early_data_accepted",
    ),
}
#: What ``_events.c`` reads of struct qd_journal, in its order.
_JOURNAL_FIELDS = (
    "buf",
    "len",
    "failed_alloc",
    "cipher",
    "resumed",
    "early_data_accepted",
    "peer_count",
    "peers",
    "alpn_check",
    "setup_rc",
    "setup_step",
)


def _c_events() -> Any:
    """The ``_events`` extension, set up, or None to stay with cffi."""
    try:
        from quichsd.tls import _events
    except ImportError:
        return None
    for cls, names in _C_FIELDS.items():
        # It fills slots instead of calling __init__: only right for plain field stores.
        if tuple(f.name for f in dataclasses.fields(cls)) != names:
            return None
        if hasattr(cls, "__post_init__"):
            return None
    layout = (
        ffi.sizeof("struct qd_journal"),
        *(ffi.offsetof("struct qd_journal", name) for name in _JOURNAL_FIELDS),
    )
    functions = tuple(
        int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))
        for name in ("qd_open", "qd_step", "qd_end", "qd_close")
    )
    _events.setup(tuple(_C_FIELDS), layout, functions, ffi.sizeof("struct qd_plan"), SetupFailed)
    return _events


#: What ``open_session()`` takes for a ``struct qd_plan *`` (made once per plan).
plan_handle: Callable[[Any], Any] = _same
open_session: Callable[[Any, bytes, bytes], Any] = python_open
step: Callable[[Any, int, bytes], list[Event] | int] = python_step
drain: Callable[[Any], list[Event]] = python_drain
completion: Callable[[Any, bytes | None, bytes | None], HandshakeComplete] = python_completion
#: Frees a journal's session now; the journal stays readable.
end_session: Callable[[Any], None] = lib.qd_end
#: The ``struct qd_journal *`` of a journal.
view: Callable[[Any], Any] = _same

_c = _c_events()
if _c is not None:
    plan_handle, open_session, end_session, view = _c_plan, _c.open, _c.end, _c_view
    step, drain, completion = _c.step, _c.drain, _c.completion
#: Whether the ``_events`` extension runs the hot path (rather than cffi and the above).
C_EVENTS = _c is not None
