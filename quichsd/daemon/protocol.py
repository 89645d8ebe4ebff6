"""Messages between the daemon parent and its workers (one SOCK_SEQPACKET each).

A job travels with the handshake socket as an SCM_RIGHTS fd; an outcome comes
back without one.  JSON keeps the format debuggable; a message is ~1 KiB and
costs ~20 µs to encode and decode, against a handshake's milliseconds.  A
malformed message decodes to ``ChannelError`` (a ``ValueError``), never another type.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import TypeVar

from quichsd.daemon.config import DaemonConfig, X509Files


@dataclass(frozen=True)
class Job:
    """One accepted request, as a worker needs it."""

    request_id: int
    role: str  # "client" | "server"
    auth_mode: int
    transport: str  # "quic" | "tcp"
    timeout: float
    peer_identities: tuple[int, ...] = ()
    certificate: int = 0
    private_key: int = 0
    peername: str | None = None
    keyring: int | None = None
    generation: int = 0
    x509: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """How a job ended; ``status`` and ``remote_auth`` go into DONE."""

    request_id: int
    status: int
    remote_auth: tuple[int, ...] = ()
    reason: str = ""
    cipher: int = 0
    alpn: str | None = None
    peer: str | None = None
    resumed: bool = False
    duration: float = 0.0


#: A worker's notice that it will take no more jobs (recycling): {"retiring": true}.
RETIRING = b'{"retiring":true}'


_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_Message = TypeVar("_Message", Job, Outcome)


def x509_files_for(config: DaemonConfig, role: str) -> dict[str, str | None]:
    side: X509Files = config.client if role == "client" else config.server
    return {
        f.name: (None if (value := getattr(side, f.name)) is None else str(value))
        for f in fields(side)
    }


def encode_job(job: Job) -> bytes:
    """Field by field: ``asdict`` deep-copied each one recursively for the same bytes."""
    return _DUMPS(
        {
            "request_id": job.request_id,
            "role": job.role,
            "auth_mode": job.auth_mode,
            "transport": job.transport,
            "timeout": job.timeout,
            "peer_identities": job.peer_identities,
            "certificate": job.certificate,
            "private_key": job.private_key,
            "peername": job.peername,
            "keyring": job.keyring,
            "generation": job.generation,
            "x509": job.x509,
        }
    ).encode()


class ChannelError(ValueError):
    """A channel message that is not a well-formed job or outcome."""


def _finite(text: str) -> float:
    # NaN, Infinity or 1e999: a timeout that is not finite would switch a bound off.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


_LOADS = json.JSONDecoder(parse_float=_finite, parse_constant=_finite).decode


def _decode(data: bytes, cls: type[_Message], sequence: str) -> _Message:
    """``ChannelError`` for anything malformed: bad JSON, a missing or unknown field."""
    try:
        raw = _LOADS(data.decode())
        raw[sequence] = tuple(raw[sequence])
        return cls(**raw)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ChannelError(f"malformed {cls.__name__.lower()} message: {exc!r}"[:200]) from None


def decode_job(data: bytes) -> Job:
    return _decode(data, Job, "peer_identities")


def encode_outcome(outcome: Outcome) -> bytes:
    """As ``encode_job``: field by field, in declaration order."""
    return _DUMPS(
        {
            "request_id": outcome.request_id,
            "status": outcome.status,
            "remote_auth": outcome.remote_auth,
            "reason": outcome.reason,
            "cipher": outcome.cipher,
            "alpn": outcome.alpn,
            "peer": outcome.peer,
            "resumed": outcome.resumed,
            "duration": outcome.duration,
        }
    ).encode()


def decode_outcome(data: bytes) -> Outcome:
    return _decode(data, Outcome, "remote_auth")
