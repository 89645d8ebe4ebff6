"""Messages between the daemon parent and its workers (one SOCK_SEQPACKET each).

A job travels with the handshake socket as an SCM_RIGHTS fd; an outcome comes
back without one.  JSON keeps the format debuggable; a message is ~1 KiB and
costs ~20 µs to encode and decode, against a handshake's milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

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


def x509_files_for(config: DaemonConfig, role: str) -> dict[str, str | None]:
    side: X509Files = config.client if role == "client" else config.server
    return {key: (str(value) if value is not None else None) for key, value in asdict(side).items()}


def encode_job(job: Job) -> bytes:
    return json.dumps(asdict(job), separators=(",", ":")).encode()


def decode_job(data: bytes) -> Job:
    raw = json.loads(data)
    raw["peer_identities"] = tuple(raw["peer_identities"])
    return Job(**raw)


def encode_outcome(outcome: Outcome) -> bytes:
    return json.dumps(asdict(outcome), separators=(",", ":")).encode()


def decode_outcome(data: bytes) -> Outcome:
    raw = json.loads(data)
    raw["remote_auth"] = tuple(raw["remote_auth"])
    return Outcome(**raw)
