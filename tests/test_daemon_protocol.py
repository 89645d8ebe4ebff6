"""The parent/worker messages: field-by-field encoders, byte for byte what
``dataclasses.asdict`` gave, so parents and workers of either version agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

from quichsd.daemon.config import DaemonConfig, X509Files
from quichsd.daemon.protocol import (
    Job,
    Outcome,
    decode_job,
    decode_outcome,
    encode_job,
    encode_outcome,
    x509_files_for,
)

CONFIG = DaemonConfig(
    client=X509Files(truststore=Path("/etc/ssl/ca.pem"), private_key="pkcs11:token=x"),
    server=X509Files(certificate=Path("/srv/cert.pem"), crl=Path("/srv/crl.pem")),
)
JOBS = [
    Job(request_id=1, role="server", auth_mode=1, transport="tcp", timeout=30.0),
    Job(
        request_id=2**40,
        role="client",
        auth_mode=3,
        transport="quic",
        timeout=0.25,
        peer_identities=(0x11, 0xFFFFFFFF),
        certificate=7,
        private_key=8,
        peername="server.tést",
        keyring=0x2F6B3A11,
        generation=4,
        x509=x509_files_for(CONFIG, "client"),
    ),
]
OUTCOMES = [
    Outcome(1, 110),
    Outcome(2, 0, (0x1234, 0x5678), "", 52, "echo", 'CN=server "x"', True, 0.0125),
]


def legacy(value: Job | Outcome) -> bytes:
    """The encoding before the encoders were written out."""
    return json.dumps(asdict(value), separators=(",", ":")).encode()


CODECS: dict[type, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    Job: (encode_job, decode_job),
    Outcome: (encode_outcome, decode_outcome),
}


@pytest.mark.parametrize("value", [*JOBS, *OUTCOMES])
def test_encoding_is_byte_identical_and_round_trips(value: Job | Outcome) -> None:
    encode, decode = CODECS[type(value)]
    data = encode(value)
    assert data == legacy(value)
    assert list(json.loads(data)) == [f.name for f in fields(type(value))]
    assert decode(data) == value


@pytest.mark.parametrize("role", ["client", "server"])
def test_x509_files_for_names_every_file_as_text(role: str) -> None:
    side = CONFIG.client if role == "client" else CONFIG.server
    expected = {k: (str(v) if v is not None else None) for k, v in asdict(side).items()}
    assert x509_files_for(CONFIG, role) == expected
    assert x509_files_for(CONFIG, role)["private_key" if role == "client" else "crl"] is not None
