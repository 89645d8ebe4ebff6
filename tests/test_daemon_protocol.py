# SPDX-License-Identifier: GPL-2.0-only
"""The parent/worker messages: field-by-field encoders whose bytes are what
``dataclasses.asdict`` gave for the untyped messages (enums as their values, the
X.509 files as a mapping of text), and typed decoders that refuse anything else."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

from quichsd.daemon import channel
from quichsd.daemon.config import DaemonConfig, X509Files
from quichsd.daemon.protocol import (
    FRAME_SIZE,
    MAX_MESSAGE,
    ChannelError,
    Job,
    MessageTooLarge,
    Outcome,
    Reassembler,
    Transport,
    bounded_outcome,
    decode_job,
    decode_outcome,
    encode_job,
    encode_outcome,
    frames,
    x509_files_for,
)
from quichsd.tls import AuthMode, Cipher, Role

CONFIG = DaemonConfig(
    client=X509Files(truststore=Path("/etc/ssl/ca.pem"), private_key="pkcs11:token=x"),
    server=X509Files(certificate=Path("/srv/cert.pem"), crl=Path("/srv/crl.pem")),
)
JOBS = [
    Job(
        request_id=1,
        role=Role.SERVER,
        auth_mode=AuthMode.UNAUTH,
        transport=Transport.TCP,
        timeout=30.0,
    ),
    Job(
        request_id=2**40,
        role=Role.CLIENT,
        auth_mode=AuthMode.X509,
        transport=Transport.QUIC,
        timeout=0.25,
        peer_identities=(0x11, 0xFFFFFFFF),
        certificate=7,
        private_key=8,
        peername="server.tést",
        keyring=0x2F6B3A11,
        generation=4,
        x509=x509_files_for(CONFIG, Role.CLIENT),
    ),
]
OUTCOMES = [
    Outcome(1, 110),
    Outcome(2, 0, (0x1234, 0x5678), "", Cipher.AES_256_GCM, "echo", 'CN=server "x"', True, 0.0125),
]


def legacy(value: Job | Outcome) -> bytes:
    """The encoding of the untyped messages: ``asdict``, the files' paths as text."""
    raw = asdict(value)
    if isinstance(value, Job):
        raw["x509"] = {k: None if v is None else str(v) for k, v in raw["x509"].items()}
    return json.dumps(raw, separators=(",", ":")).encode()


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


def test_a_job_travels_as_plain_json() -> None:
    """Enums as their values, the files as a mapping: readable with any JSON tool."""
    raw = json.loads(encode_job(JOBS[1]))
    assert (raw["role"], raw["auth_mode"], raw["transport"]) == ("client", 3, "quic")
    assert raw["x509"]["truststore"] == "/etc/ssl/ca.pem"
    assert raw["x509"]["private_key"] == "pkcs11:token=x"
    assert raw["x509"]["certificate"] is None
    assert json.loads(encode_outcome(OUTCOMES[1]))["cipher"] == 52


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("role", "peer"),
        ("role", 1),
        ("transport", "sctp"),
        ("transport", None),
        ("auth_mode", 9),
        ("auth_mode", "x509"),
        ("x509", ["truststore"]),
        ("x509", {"truststore": 7}),
        ("x509", {"keyfile": "/k.pem"}),
        ("peer_identities", 5),
    ],
)
def test_a_job_with_a_value_outside_its_type_is_a_channel_error(name: str, value: object) -> None:
    raw = json.loads(encode_job(JOBS[1]))
    raw[name] = value
    with pytest.raises(ChannelError, match="undecodable Job"):
        decode_job(json.dumps(raw).encode())


@pytest.mark.parametrize("cipher", [7, 55, "52", None])
def test_an_outcome_with_an_unknown_cipher_is_a_channel_error(cipher: object) -> None:
    raw = json.loads(encode_outcome(OUTCOMES[1]))
    raw["cipher"] = cipher
    with pytest.raises(ChannelError, match="undecodable Outcome"):
        decode_outcome(json.dumps(raw).encode())


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_x509_files_for_is_the_roles_side_and_survives_the_channel(role: Role) -> None:
    side = CONFIG.client if role is Role.CLIENT else CONFIG.server
    assert x509_files_for(CONFIG, role) is side
    assert X509Files.from_text(side.as_text()) == side
    assert side.as_text()["private_key" if role is Role.CLIENT else "crl"] is not None


# -- framing: any message arrives whole, or not at all (issue 11, item 5) ----------------------


@pytest.mark.parametrize("size", [0, 1, FRAME_SIZE - 1, FRAME_SIZE, 3 * FRAME_SIZE + 5, 200_000])
def test_frames_reassemble_to_the_message(size: int) -> None:
    message = bytes(i % 251 for i in range(size))
    pieces = frames(message)
    assert all(1 <= len(p) <= FRAME_SIZE for p in pieces)
    assembler = Reassembler()
    assert [assembler.feed(p) for p in pieces] == [None] * (len(pieces) - 1) + [message]
    assert not assembler.partial


def test_oversized_message_is_refused_before_any_frame() -> None:
    with pytest.raises(MessageTooLarge):
        frames(b"x" * (MAX_MESSAGE + 1))


@pytest.mark.parametrize("frame", [b"", b"\x07job", b"\x02"])
def test_bad_frames_are_errors(frame: bytes) -> None:
    with pytest.raises(ChannelError):
        Reassembler().feed(frame)


def test_reassembly_is_bounded() -> None:
    assembler = Reassembler()
    piece = b"\x01" + b"x" * (FRAME_SIZE - 1)
    with pytest.raises(ChannelError, match="over"):
        for _ in range(MAX_MESSAGE // (FRAME_SIZE - 1) + 2):
            assembler.feed(piece)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"request_id": 1}', b"[" * 100_000, b"\xff"])
def test_garbage_is_a_channel_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(ChannelError):
        decode_job(data)
    with pytest.raises(ChannelError):
        decode_outcome(data)


def test_an_outcome_too_large_for_the_channel_is_trimmed_not_lost() -> None:
    huge = Outcome(9, 13, (0x77,), reason="r" * MAX_MESSAGE, peer="CN=" + "p" * MAX_MESSAGE)
    data = bounded_outcome(huge)
    assert len(data) <= MAX_MESSAGE
    outcome = decode_outcome(data)
    assert (outcome.request_id, outcome.status, outcome.remote_auth) == (9, 13, (0x77,))
    assert outcome.reason.endswith("characters cut)") and outcome.peer is not None
    small = Outcome(9, 0, reason="fine")
    assert bounded_outcome(small) == encode_outcome(small)


def test_a_job_and_an_outcome_over_64_kib_cross_a_real_channel() -> None:
    """A SOCK_SEQPACKET pair as the pool makes it: a 100 KiB job with its fd, and a
    300 KiB outcome, arrive whole (the old 64 KiB receive buffer cut both)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    carried_r, carried_w = os.pipe()
    job = Job(9, Role.CLIENT, AuthMode.PSK, Transport.QUIC, 5.0, peername="\x01" * 17_000)
    outcome = Outcome(9, 13, reason="\x02" * 50_000)  # JSON: 300 KiB
    with parent, child:
        parent.setblocking(False)
        child.setblocking(False)
        assert len(encode_job(job)) > 64 * 1024
        sender = threading.Thread(
            target=channel.send_message, args=(parent, encode_job(job), [carried_r])
        )
        sender.start()
        got = _receive_all(child, max_fds=1)
        sender.join()
        ((data, fds),) = got
        assert decode_job(data) == job and len(fds) == 1
        assert os.fstat(fds[0]).st_ino == os.fstat(carried_r).st_ino
        channel.close_all(fds)
        sender = threading.Thread(
            target=channel.send_message, args=(child, bounded_outcome(outcome))
        )
        sender.start()
        ((data, fds),) = _receive_all(parent, max_fds=0)
        sender.join()
        assert decode_outcome(data) == outcome and fds == []
    for fd in (carried_r, carried_w):
        os.close(fd)


def test_a_frame_cut_by_the_receive_buffer_is_an_error_and_closes_its_fds() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    carried_r, carried_w = os.pipe()
    with parent, child:
        child.setblocking(False)
        before = set(os.listdir("/proc/self/fd"))
        socket.send_fds(parent, [b"\x00" + b"x" * (FRAME_SIZE + 10)], [carried_r])
        with pytest.raises(ChannelError, match="truncated"):
            channel.receive_messages(child, Reassembler(), [], max_fds=1)
        assert set(os.listdir("/proc/self/fd")) == before  # the fd that came with it: closed
    for fd in (carried_r, carried_w):
        os.close(fd)


def _receive_all(sock: socket.socket, max_fds: int) -> list[tuple[bytes, list[int]]]:
    assembler = Reassembler()
    pending: list[int] = []
    got: list[tuple[bytes, list[int]]] = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        select.select([sock], [], [], 0.5)
        messages, gone = channel.receive_messages(sock, assembler, pending, max_fds)
        got += messages
        assert not gone
    return got
