# SPDX-License-Identifier: GPL-2.0-only
"""Framing once: ``split_datagram`` hands each message's header along, so a received
message has its header read once and is decoded by pyroute2 once, however many
handlers look at it."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from test_netlink_codec import ACCEPT_REPLY, DONE_EACCES, FAMILY, READY

from quichsd.netlink import channel as ch
from quichsd.netlink import messages as m
from quichsd.netlink import requests as rq
from quichsd.netlink.constants import (
    NLM_F_ACK,
    NLM_F_CAPPED,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    Command,
    HandlerClass,
)
from quichsd.netlink.errors import MalformedMessage
from quichsd.netlink.family import HandshakeFamily, KernelCapabilities

PORT = 0x1234


def odd_message(seq: int) -> bytes:
    """A 17-byte message (unknown type 0x20) so the next one starts after padding."""
    return struct.pack("=IHHII", 17, 0x20, 0, seq, 0) + b"\x7f"


def test_split_datagram_reads_each_header_where_its_message_starts() -> None:
    odd = odd_message(9)
    datagram = READY + odd + b"\0\0\0" + ACCEPT_REPLY + DONE_EACCES
    framed = m.split_datagram(datagram)
    assert [f.data for f in framed] == [READY, odd, ACCEPT_REPLY, DONE_EACCES]
    offsets = [0, len(READY), len(READY) + 20, len(READY) + 20 + len(ACCEPT_REPLY)]
    for item, offset in zip(framed, offsets, strict=True):
        assert item.header == m.read_header(datagram, offset)
        assert item.header.length == len(item.data)
    assert framed[1].header.seq == 9 and framed[1].header.type == 0x20
    hdr, data = framed[2]  # unpacks as a pair
    assert (hdr.type, hdr.seq, hdr.pid, data[NLMSG_HDRLEN]) == (FAMILY, 0x65F00001, PORT, 2)


def test_split_datagram_still_rejects_bad_framing() -> None:
    with pytest.raises(MalformedMessage, match="bad nlmsg_len"):
        m.split_datagram(READY[:4].replace(b"\x1c", b"\x40") + READY[4:])
    with pytest.raises(MalformedMessage, match="stray bytes"):
        m.split_datagram(READY + b"\1\0\0\0")


def test_decode_with_a_given_header_matches_reading_it() -> None:
    ((hdr, raw),) = m.split_datagram(ACCEPT_REPLY)
    given = m.decode(raw, m.acceptmsg, hdr)
    read = m.decode(raw, m.acceptmsg)
    assert given["header"] == read["header"] and given["cmd"] == read["cmd"] == 2
    assert given.get_attr(m.ACCEPT_NAMES[8]) == read.get_attr(m.ACCEPT_NAMES[8]) == "host1.example"
    assert rq.parse_accept_reply(raw, hdr) == rq.parse_accept_reply(raw)
    assert rq.parse_ready(READY, m.read_header(READY)) == rq.parse_ready(READY)
    with pytest.raises(MalformedMessage, match="nlmsg_len"):
        m.decode(raw[:-4], m.acceptmsg, hdr)  # a header that is not this message's


class FakeKernel(ch.Channel):
    """Answers ACCEPT with ``ACCEPT_REPLY`` naming an fd it installs (as the kernel
    does, at the lowest free number) and anything else with a capped ACK."""

    port_id = PORT

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.pair = socket.socketpair()
        self.installed: list[int] = []

    def fileno(self) -> int:
        return self.pair[0].fileno()

    def send(self, data: bytes) -> None:
        (seq,) = struct.unpack_from("=I", data, 8)  # the test's own view of the request
        if data[NLMSG_HDRLEN] == Command.ACCEPT:
            fd = os.dup(self.pair[1].fileno())
            self.installed.append(fd)
            reply = ACCEPT_REPLY[:8] + struct.pack("=I", seq) + ACCEPT_REPLY[12:24]
            self.queue.append(reply + struct.pack("=i", fd) + ACCEPT_REPLY[28:])
        else:
            self.queue.append(
                m.encode(
                    m.ackmsg,
                    msg_type=NLMSG_ERROR,
                    flags=NLM_F_CAPPED,
                    seq=seq,
                    pid=PORT,
                    error=0,
                    orig_length=len(data),
                    orig_type=FAMILY,
                    orig_flags=NLM_F_ACK,
                    orig_seq=seq,
                    orig_pid=PORT,
                )
            )

    def recv(self, timeout: float | None = 0.0) -> bytes | None:
        return self.queue.pop(0) if self.queue else None

    def add_membership(self, group: int) -> None:
        pass

    def drop_membership(self, group: int) -> None:
        pass

    def close(self) -> None:
        for fd in self.installed:
            os.close(fd)
        for sock in self.pair:
            sock.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Records header reads and whole-message pyroute2 decodes (by class)."""
    calls: dict[str, list[str]] = {"headers": [], "decodes": []}
    read_header = m.read_header

    def counting_read(data: bytes | bytearray, offset: int = 0) -> m.Header:
        calls["headers"].append(f"{offset}")
        return read_header(data, offset)

    monkeypatch.setattr(m, "read_header", counting_read)
    monkeypatch.setattr(rq, "read_header", counting_read)
    for cls in (m.acceptmsg, m.donemsg, m.ackmsg, m.extackmsg, m.ctrlmsg):
        monkeypatch.setattr(cls, "decode", _counting(cls.decode, calls["decodes"]))
    return calls


def _counting(decode: Callable[[Any], None], log: list[str]) -> Callable[[Any], None]:
    def counted(self: Any) -> None:
        log.append(type(self).__name__)
        decode(self)

    return counted


def family() -> HandshakeFamily:
    agent = HandshakeFamily(FakeKernel())
    agent.family_id = FAMILY
    agent.capabilities = KernelCapabilities(remote_peerids=True, session_tags=False)
    return agent


def test_one_request_reads_three_headers_and_decodes_three_messages(
    counted: dict[str, list[str]],
) -> None:
    agent = family()
    agent.channel.queue.append(READY)
    assert agent.recv_ready() == [rq.ReadyNotice(HandlerClass.TLSHD)]
    request = agent.accept()
    kernel = agent.channel
    assert isinstance(kernel, FakeKernel)
    assert request is not None and request.peername == "host1.example"
    assert request.sockfd == kernel.installed[0]
    agent.done(request.sockfd, 0, (0x0A1B2C3D,))
    agent.close()
    # READY, the ACCEPT reply and the ACK: one header read and one decode each.
    assert len(counted["headers"]) == 3
    assert counted["decodes"] == ["acceptmsg", "acceptmsg", "ackmsg"]


def test_batched_readys_are_framed_once_each(counted: dict[str, list[str]]) -> None:
    agent = family()
    agent.channel.queue.append(READY + READY + READY)
    assert len(agent.recv_ready()) == 3
    assert counted["headers"] == ["0", "28", "56"]
    assert counted["decodes"] == ["acceptmsg"] * 3


def test_ready_queued_behind_a_reply_is_kept_for_later(counted: dict[str, list[str]]) -> None:
    agent = family()
    agent.channel.queue.append(READY)  # arrives before the ACCEPT answer is read
    assert agent.accept() is not None
    assert len(counted["headers"]) == 2
    assert agent.recv_ready() == [rq.ReadyNotice(HandlerClass.TLSHD)]
    assert len(counted["headers"]) == 2  # handed out from memory, not read again
    agent.close()
