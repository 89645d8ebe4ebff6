# SPDX-License-Identifier: GPL-2.0-only
"""The worker channel codec: jobs (parent → worker) and outcomes (worker → parent).

Only the public ``decode_job`` / ``decode_outcome`` / ``encode_*`` functions of
``daemon/protocol.py`` are used, so a change of the framing needs no change here.
Expected: ``ValueError``, what the decoders document for a malformed message.
Byte 0 picks the decoder; whatever decodes must encode to the same message again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fuzz.harness import Target
from quichsd.daemon import protocol
from quichsd.daemon.config import X509Files
from quichsd.daemon.protocol import Transport
from quichsd.tls import AuthMode, Cipher, Role

EXPECTED = (ValueError,)

_CODECS: tuple[tuple[Any, Any], ...] = (
    (protocol.decode_job, protocol.encode_job),
    (protocol.decode_outcome, protocol.encode_outcome),
)


def one_input(data: bytes) -> None:
    if not data:
        return
    decode, encode = _CODECS[data[0] & 1]
    try:
        message = decode(data[1:])
    except EXPECTED:
        return
    assert decode(encode(message)) == message, message


def _seeds() -> Iterator[bytes]:
    job = protocol.Job(
        request_id=7, role=Role.CLIENT, auth_mode=AuthMode.X509, transport=Transport.QUIC,
        timeout=5.0, peer_identities=(0x11, 0x22), certificate=0x33, private_key=0x44,
        peername="host1.example", keyring=0x2F6B3A11, generation=2,
        x509=X509Files(truststore=Path("/etc/pki/ca.pem"), private_key="pkcs11:token=x"),
    )  # fmt: skip
    outcome = protocol.Outcome(
        request_id=7, status=0, remote_auth=(0x55,), reason="", cipher=Cipher.AES_256_GCM,
        alpn="smb", peer="CN=server", resumed=True, duration=0.012,
    )  # fmt: skip
    yield b"\x00" + protocol.encode_job(job)
    yield b"\x00" + protocol.encode_job(
        protocol.Job(1, Role.SERVER, AuthMode.PSK, Transport.TCP, 30.0)
    )
    yield b"\x01" + protocol.encode_outcome(outcome)
    yield b"\x01" + protocol.encode_outcome(protocol.Outcome(9, 13, reason="bad certificate"))
    yield b"\x01" + protocol.RETIRING


TARGETS = (
    Target(
        name="channel",
        one_input=one_input,
        expected=EXPECTED,
        seeds=_seeds,
    ),
)
