"""Messages between the daemon parent and its workers (one SOCK_SEQPACKET each).

A job travels with the handshake socket as an SCM_RIGHTS fd; an outcome comes
back without one.  JSON keeps the format debuggable; a message is ~1 KiB and
costs ~20 µs to encode and decode, against a handshake's milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

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
    cipher: int = 0
    alpn: str | None = None
    peer: str | None = None
    resumed: bool = False
    duration: float = 0.0


#: A worker's notice that it will take no more jobs (recycling): {"retiring": true}.
RETIRING = b'{"retiring":true}'


_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


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
            "loglevel": job.loglevel,
            "tls_debug": job.tls_debug,
        }
    ).encode()


def decode_job(data: bytes) -> Job:
    raw = json.loads(data)
    raw["peer_identities"] = tuple(raw["peer_identities"])
    return Job(**raw)


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
    raw = json.loads(data)
    raw["remote_auth"] = tuple(raw["remote_auth"])
    return Outcome(**raw)
