# SPDX-License-Identifier: GPL-2.0-only
"""Messages between the daemon parent and its workers (one SOCK_SEQPACKET each).

A job travels with the handshake socket as an SCM_RIGHTS fd; an outcome comes
back without one.  JSON keeps the format debuggable; a message is ~1 KiB and
costs ~20 µs to encode and decode, against a handshake's milliseconds.

Framing: a message goes as one or more datagrams of at most ``FRAME_SIZE``
bytes, each a flag byte (more frames follow, or this is the last) and a piece
of the message; the fd travels with the first.  So any message up to
``MAX_MESSAGE`` arrives whole, whatever the socket's buffer sizes, and a
receiver never acts on a truncated one: the codec raises ``ChannelError``
instead, as it does for any malformed message (never another type).
``MAX_MESSAGE`` is far above what a kernel request can produce (an
ACCEPT reply fits in one netlink page, ~8 KiB; escaped as JSON, at most six
times that, plus the configuration's paths); a larger job is refused before
it is sent, and a worker trims an outcome's texts to fit (``bounded_outcome``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from quichsd.daemon.config import DaemonConfig, X509Files
from quichsd.tls.levels import Cipher
from quichsd.tls.modes import AuthMode, Role


class Transport(StrEnum):
    """What a request's socket speaks (its SO_PROTOCOL: daemon/dispatch.py)."""

    QUIC = "quic"
    TCP = "tcp"


@dataclass(frozen=True)
class Job:
    """One accepted request, as a worker needs it."""

    request_id: int
    role: Role
    auth_mode: AuthMode
    transport: Transport
    timeout: float
    peer_identities: tuple[int, ...] = ()
    certificate: int = 0
    private_key: int = 0
    peername: str | None = None
    keyring: int | None = None
    generation: int = 0
    #: The configuration's files for this role (``[authenticate.client|server]``).
    x509: X509Files = field(default_factory=X509Files)
    #: ``[debug] loglevel`` of the configuration the job started with: a reload reaches
    #: the workers' log level with their next job.
    loglevel: int = 0
    #: ``[debug] tls`` of the job's configuration: GnuTLS's log level in the worker.
    tls_debug: int = 0


@dataclass(frozen=True)
class Outcome:
    """How a job ended; ``status`` and ``remote_auth`` go into DONE."""

    request_id: int
    status: int
    remote_auth: tuple[int, ...] = ()
    reason: str = ""
    cipher: Cipher = Cipher.ANY
    alpn: str | None = None
    peer: str | None = None
    resumed: bool = False
    duration: float = 0.0


#: A worker's notice that it will take no more jobs (recycling): {"retiring": true}.
RETIRING = b'{"retiring":true}'


_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_LOG_PREFIX = b'{"log":'


def encode_log(level: int, logger: str, text: str) -> bytes:
    """A worker's log record for the parent to log (workers open no log socket)."""
    return _DUMPS({"log": [level, logger, text[: MAX_MESSAGE // 8]]}).encode()


def decode_log(data: bytes) -> tuple[int, str, str] | None:
    """(level, logger, text) of an ``encode_log`` message; None for any other message.
    Raises ``ChannelError`` for a malformed one."""
    if not data.startswith(_LOG_PREFIX):
        return None
    try:
        level, logger, text = json.loads(data)["log"]
        if not (isinstance(level, int) and isinstance(logger, str) and isinstance(text, str)):
            raise TypeError("wrong field types")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ChannelError(f"undecodable log record: {exc}") from None
    return level, logger, text


def x509_files_for(config: DaemonConfig, role: Role) -> X509Files:
    return config.client if role is Role.CLIENT else config.server


def encode_job(job: Job) -> bytes:
    """Field by field (``asdict`` deep-copied each one recursively); enums as their
    values, the X.509 files as a mapping of text."""
    return _DUMPS(
        {
            "request_id": job.request_id,
            "role": job.role.value,
            "auth_mode": int(job.auth_mode),
            "transport": job.transport.value,
            "timeout": job.timeout,
            "peer_identities": job.peer_identities,
            "certificate": job.certificate,
            "private_key": job.private_key,
            "peername": job.peername,
            "keyring": job.keyring,
            "generation": job.generation,
            "x509": job.x509.as_text(),
            "loglevel": job.loglevel,
            "tls_debug": job.tls_debug,
        }
    ).encode()


def _finite(text: str) -> float:
    # NaN, Infinity or 1e999: a timeout that is not finite would switch a bound off.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


_LOADS = json.JSONDecoder(parse_float=_finite, parse_constant=_finite).decode


def decode_job(data: bytes) -> Job:
    """Raises ``ChannelError`` for anything but an ``encode_job`` message."""
    return _decode(Job, data, _job_fields)


def _job_fields(raw: dict[str, Any]) -> None:
    raw["peer_identities"] = tuple(raw["peer_identities"])
    raw["role"] = Role(raw["role"])
    raw["auth_mode"] = AuthMode(raw["auth_mode"])
    raw["transport"] = Transport(raw["transport"])
    raw["x509"] = X509Files.from_text(raw["x509"])


def encode_outcome(outcome: Outcome) -> bytes:
    """As ``encode_job``: field by field, in declaration order."""
    return _DUMPS(
        {
            "request_id": outcome.request_id,
            "status": outcome.status,
            "remote_auth": outcome.remote_auth,
            "reason": outcome.reason,
            "cipher": int(outcome.cipher),
            "alpn": outcome.alpn,
            "peer": outcome.peer,
            "resumed": outcome.resumed,
            "duration": outcome.duration,
        }
    ).encode()


def decode_outcome(data: bytes) -> Outcome:
    """Raises ``ChannelError`` for anything but an ``encode_outcome`` message."""
    return _decode(Outcome, data, _outcome_fields)


def _outcome_fields(raw: dict[str, Any]) -> None:
    raw["remote_auth"] = tuple(raw["remote_auth"])
    raw["cipher"] = Cipher(raw["cipher"])


_Message = TypeVar("_Message", Job, Outcome)


def _decode(cls: type[_Message], data: bytes, typed: Callable[[dict[str, Any]], None]) -> _Message:
    """``cls`` from JSON whose fields ``typed`` turns into their types (lists into
    tuples, values into enums); any malformed input (not JSON, wrong shape, missing
    or extra fields, unknown enum values) is a ``ChannelError``."""
    try:
        raw = _LOADS(data.decode())
        if not isinstance(raw, dict):
            raise TypeError(f"a message is an object, not {type(raw).__name__}")
        typed(raw)
        return cls(**raw)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ChannelError(f"undecodable {cls.__name__}: {exc}") from None


#: Largest datagram on a worker channel (flag byte included).
FRAME_SIZE = 32 * 1024
#: Largest message (a job or an outcome) the channel carries.
MAX_MESSAGE = 4 * 1024 * 1024
_MORE = 1
_LAST = 0
#: Longest text an outcome keeps (reason, peer, ALPN) when it must be trimmed to fit.
_TEXT_KEPT = 16 * 1024


class ChannelError(ValueError):
    """A message that cannot be framed or a frame that breaks the protocol: the channel
    can no longer be trusted (its peer is closed, or killed)."""


class MessageTooLarge(ChannelError):
    """A message above ``MAX_MESSAGE``: refused before anything is sent."""


def frames(message: bytes) -> list[bytes]:
    """``message`` as the datagrams that carry it (the fd goes with the first)."""
    if len(message) > MAX_MESSAGE:
        raise MessageTooLarge(f"a {len(message)}-byte message; the channel carries {MAX_MESSAGE}")
    piece = FRAME_SIZE - 1
    if len(message) <= piece:
        return [bytes((_LAST,)) + message]
    parts = [message[i : i + piece] for i in range(0, len(message), piece)]
    return [bytes((_MORE,)) + p for p in parts[:-1]] + [bytes((_LAST,)) + parts[-1]]


class Reassembler:
    """One channel's frames in, whole messages out (bounded by ``MAX_MESSAGE``)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def partial(self) -> bool:
        """A message has begun and not ended."""
        return bool(self._parts)

    def feed(self, frame: bytes) -> bytes | None:
        """The message ``frame`` completes, or ``None`` while more frames are due."""
        if not frame or frame[0] not in (_MORE, _LAST):
            raise ChannelError(f"bad frame ({len(frame)} bytes, flag {frame[:1].hex() or '-'})")
        self._size += len(frame) - 1
        if self._size > MAX_MESSAGE:
            raise ChannelError(f"a message over {MAX_MESSAGE} bytes")
        self._parts.append(frame[1:])
        if frame[0] == _MORE:
            return None
        message = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return message


def bounded_outcome(outcome: Outcome) -> bytes:
    """``outcome`` encoded, its texts trimmed if the whole would not fit the channel:
    the status and REMOTE_AUTH always reach the parent."""
    data = encode_outcome(outcome)
    if len(data) <= MAX_MESSAGE:
        return data
    return encode_outcome(
        replace(
            outcome,
            reason=_trim(outcome.reason),
            peer=None if outcome.peer is None else _trim(outcome.peer),
            alpn=None if outcome.alpn is None else _trim(outcome.alpn),
        )
    )


def _trim(text: str) -> str:
    if len(text) <= _TEXT_KEPT:
        return text
    return f"{text[:_TEXT_KEPT]}... ({len(text) - _TEXT_KEPT} characters cut)"
