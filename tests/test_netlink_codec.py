# SPDX-License-Identifier: GPL-2.0-only
"""Codec tests: the byte layouts of docs/kernel-abi.md §WIRE, reproduced exactly.

Encoding goes through pyroute2's message classes (``quichsd.netlink.messages``);
decoding through the strict parsers of ``quichsd.netlink.requests``.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence

import pytest

from quichsd.netlink import messages as m
from quichsd.netlink.constants import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    AuthMode,
    Command,
    MessageType,
)
from quichsd.netlink.errors import MalformedMessage, MalformedRequest
from quichsd.netlink.requests import X509Pair, parse_accept_reply, parse_ready

FAMILY = 0x1D
SEQ = 0x65F00001
A = m.ACCEPT_NAMES
D = m.DONE_NAMES


def hexbytes(text: str) -> bytes:
    """Spec hex dumps: drop offsets ("0000:") and comments after two spaces+text."""
    out: list[str] = []
    for line in text.strip().splitlines():
        line = line.split(":", 1)[1] if ":" in line[:6] else line
        out.extend(tok for tok in line.split() if len(tok) == 2)
    return bytes.fromhex("".join(out))


READY = hexbytes("""
1c 00 00 00  1d 00  00 00  00 00 00 00  00 00 00 00
01 01 00 00
08 00 02 00  01 00 00 00
""")

ACCEPT_REQUEST = hexbytes("""
1c 00 00 00  1d 00  01 00  01 00 f0 65  34 12 00 00
02 00 00 00
08 00 02 00  01 00 00 00
""")

ACCEPT_REPLY = hexbytes("""
0000: 64 00 00 00 1d 00 00 00 01 00 f0 65 34 12 00 00
0010: 02 01 00 00 08 00 01 00 07 00 00 00 08 00 03 00
0020: 01 00 00 00 12 00 08 00 68 6f 73 74 31 2e 65 78
0030: 61 6d 70 6c 65 00 00 00 08 00 04 00 88 13 00 00
0040: 08 00 09 00 11 3a 6b 2f 08 00 05 00 03 00 00 00
0050: 14 00 07 80 08 00 01 00 44 33 22 11 08 00 02 00
0060: 88 77 66 55
""")

DONE_SUCCESS = hexbytes("""
0000: 2c 00 00 00 1d 00 01 00 02 00 f0 65 40 12 00 00
0010: 03 00 00 00
0014: 08 00 01 00 00 00 00 00
001c: 08 00 02 00 07 00 00 00
0024: 08 00 03 00 3d 2c 1b 0a
""")

DONE_EACCES = hexbytes("""
24 00 00 00 1d 00 01 00 02 00 f0 65 40 12 00 00  03 00 00 00
08 00 01 00 0d 00 00 00
08 00 02 00 07 00 00 00
""")


def reply_attrs() -> list[tuple[str, object]]:
    return [
        (A[1], 7),
        (A[3], MessageType.CLIENTHELLO),
        (A[8], "host1.example"),
        (A[4], 5000),
        (A[9], 0x2F6B3A11),
        (A[5], AuthMode.X509),
        (A[7], {"attrs": [("HANDSHAKE_A_X509_CERT", 0x11223344),
                          ("HANDSHAKE_A_X509_PRIVKEY", 0x55667788)]}),
    ]  # fmt: skip


def accept_reply(attrs: Sequence[tuple[str, object]]) -> bytes:
    return m.encode(
        m.acceptmsg,
        msg_type=FAMILY,
        flags=0,
        seq=SEQ,
        pid=0x1234,
        attrs=attrs,
        cmd=Command.ACCEPT,
        version=1,
    )


# -- exact layouts -------------------------------------------------------------------


def test_ready_layout() -> None:
    data = m.encode(
        m.acceptmsg, msg_type=FAMILY, flags=0, seq=0, pid=0,
        attrs=[(A[2], 1)], cmd=Command.READY, version=1,
    )  # fmt: skip
    assert data == READY and len(data) == 28
    assert parse_ready(READY).handler_class == 1


def test_accept_request_layout() -> None:
    data = m.encode(
        m.acceptmsg, msg_type=FAMILY, flags=NLM_F_REQUEST, seq=SEQ, pid=0x1234,
        attrs=[(A[2], 1)], cmd=Command.ACCEPT, version=0,
    )  # fmt: skip
    assert data == ACCEPT_REQUEST


def test_accept_reply_layout_and_parse() -> None:
    assert accept_reply(reply_attrs()) == ACCEPT_REPLY
    assert len(ACCEPT_REPLY) == 100
    req = parse_accept_reply(ACCEPT_REPLY)
    assert req.sockfd == 7
    assert req.message_type is MessageType.CLIENTHELLO and req.is_client
    assert req.auth_mode is AuthMode.X509
    assert req.timeout_ms == 5000
    assert req.peername == "host1.example"
    assert req.keyring == 0x2F6B3A11
    assert req.certificates == [X509Pair(0x11223344, 0x55667788)]
    assert (req.certificate, req.private_key) == (0x11223344, 0x55667788)
    assert req.peer_identities == []


def test_certificate_nest_carries_nla_f_nested() -> None:
    (nla_len, nla_type) = struct.unpack_from("=HH", ACCEPT_REPLY, 0x50)
    assert (nla_len, nla_type) == (20, 0x8007)


def test_done_success_layout() -> None:
    data = m.encode(
        m.donemsg, msg_type=FAMILY, flags=NLM_F_REQUEST, seq=0x65F00002, pid=0x1240,
        attrs=[(D[1], 0), (D[2], 7), (D[3], 0x0A1B2C3D)], cmd=Command.DONE, version=0,
    )  # fmt: skip
    assert data == DONE_SUCCESS and len(data) == 44


def test_done_failure_layout() -> None:
    data = m.encode(
        m.donemsg, msg_type=FAMILY, flags=NLM_F_REQUEST, seq=0x65F00002, pid=0x1240,
        attrs=[(D[1], errno.EACCES), (D[2], 7)], cmd=Command.DONE, version=0,
    )  # fmt: skip
    assert data == DONE_EACCES and len(data) == 36


def test_tag_attribute_layout() -> None:
    data = m.encode(
        m.donemsg, msg_type=FAMILY, flags=NLM_F_REQUEST | NLM_F_ACK, seq=1, pid=1,
        attrs=[(D[4], "mu-chap")], cmd=Command.DONE, version=1,
    )  # fmt: skip
    assert data[20:] == bytes.fromhex("0c000400") + b"mu-chap\0"


def test_done_decodes_with_done_set() -> None:
    msg = m.decode(DONE_SUCCESS)  # class picked by genl cmd
    assert isinstance(msg, m.donemsg)
    assert msg.get_attr(D[3]) == 0x0A1B2C3D
    assert m.attribute_class(Command.READY) is m.acceptmsg


def test_psk_reply_collects_every_peer_identity() -> None:
    attrs = [(A[1], 9), (A[3], 2), (A[5], AuthMode.PSK)]
    attrs += [(A[6], serial) for serial in (11, 22, 33, 44, 55)]
    data = accept_reply(attrs)
    for i, serial in enumerate((11, 22, 33, 44, 55)):
        off = 0x14 + 24 + 8 * i
        assert data[off : off + 8] == struct.pack("=HHI", 8, 6, serial)
    req = parse_accept_reply(data)
    assert req.peer_identities == [11, 22, 33, 44, 55]  # tlshd would keep only 55
    assert req.message_type is MessageType.SERVERHELLO and not req.is_client
    assert req.timeout_ms is None and req.peername is None and req.keyring is None


def test_repeated_certificate_nests_collected() -> None:
    nest1 = {"attrs": [("HANDSHAKE_A_X509_CERT", 1), ("HANDSHAKE_A_X509_PRIVKEY", 2)]}
    nest2 = {"attrs": [("HANDSHAKE_A_X509_CERT", 3)]}
    data = accept_reply([(A[1], 3), (A[3], 1), (A[5], 3), (A[7], nest1), (A[7], nest2)])
    req = parse_accept_reply(data)
    assert req.certificates == [X509Pair(1, 2), X509Pair(3, 0)]
    assert req.certificate == 1


# -- flag masking ----------------------------------------------------------------------


def test_certificate_without_nested_flag_is_accepted() -> None:
    data = bytearray(ACCEPT_REPLY)
    struct.pack_into("=H", data, 0x52, 0x0007)
    assert parse_accept_reply(bytes(data)).certificates == [X509Pair(0x11223344, 0x55667788)]


def test_net_byteorder_bit_masked() -> None:
    data = bytearray(ACCEPT_REPLY)
    struct.pack_into("=H", data, 0x3A, 0x4004)  # TIMEOUT with NLA_F_NET_BYTEORDER
    assert parse_accept_reply(bytes(data)).timeout_ms == 5000
    attrs, leftover = m.raw_attributes(m.decode(bytes(data)), m.ACCEPT_NAMES)
    timeout = next(a for a in attrs if a.number == 4)
    assert timeout.flags == 0x4000 and leftover == 0


def test_unknown_attributes_are_ignored() -> None:
    with pytest.raises(ValueError, match="TYPO"):  # pyroute2 alone would drop it silently
        accept_reply([*reply_attrs(), ("TYPO", 0)])
    raw = bytearray(ACCEPT_REPLY) + struct.pack("=HHI", 8, 10, 99)  # future attribute 10
    struct.pack_into("=I", raw, 0, len(raw))
    assert parse_accept_reply(bytes(raw)).sockfd == 7


# -- malformed input ---------------------------------------------------------------------


def _without(number: int) -> bytes:
    return accept_reply([a for a in reply_attrs() if a[0] != A[number]])


@pytest.mark.parametrize(
    ("data", "attribute", "sockfd"),
    [
        (_without(1), "HANDSHAKE_A_ACCEPT_SOCKFD", None),
        (_without(3), "HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", 7),
        (_without(5), "HANDSHAKE_A_ACCEPT_AUTH_MODE", 7),
        (accept_reply([(A[1], 7), (A[3], 4), (A[5], 1)]), "HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", 7),
        (accept_reply([(A[1], 7), (A[3], 1), (A[5], 9)]), "HANDSHAKE_A_ACCEPT_AUTH_MODE", 7),
        (accept_reply([(A[1], -1), (A[3], 1), (A[5], 1)]), "HANDSHAKE_A_ACCEPT_SOCKFD", None),
    ],
)
def test_malformed_reply_names_attribute(data: bytes, attribute: str, sockfd: int | None) -> None:
    with pytest.raises(MalformedRequest) as info:
        parse_accept_reply(data)
    assert info.value.attribute == attribute
    assert info.value.sockfd == sockfd
    assert attribute in str(info.value)


def test_short_integer_rejected() -> None:
    data = bytearray(ACCEPT_REPLY)
    struct.pack_into("=H", data, 0x38, 6)  # TIMEOUT nla_len 6: a 2-byte integer
    with pytest.raises(MalformedRequest) as info:
        parse_accept_reply(bytes(data))
    assert info.value.attribute == "HANDSHAKE_A_ACCEPT_TIMEOUT"
    assert "4-byte" in info.value.reason and info.value.sockfd == 7


def test_bad_integer_inside_nest_rejected() -> None:
    data = bytearray(ACCEPT_REPLY)
    struct.pack_into("=H", data, 0x5C, 5)
    with pytest.raises(MalformedRequest) as info:
        parse_accept_reply(bytes(data))
    assert info.value.attribute == "HANDSHAKE_A_X509_PRIVKEY"


def test_peername_without_nul_rejected() -> None:
    data = bytearray(ACCEPT_REPLY)
    data[0x35] = ord("X")  # overwrite the terminator
    with pytest.raises(MalformedRequest, match="NUL") as info:
        parse_accept_reply(bytes(data))
    assert info.value.attribute == "HANDSHAKE_A_ACCEPT_PEERNAME"


def test_attribute_overrunning_message_rejected() -> None:
    data = bytearray(ACCEPT_REPLY)
    struct.pack_into("=H", data, 0x48, 0x40)  # AUTH_MODE claims 64 bytes
    with pytest.raises(MalformedRequest, match="overruns") as info:
        parse_accept_reply(bytes(data))
    assert info.value.attribute == "HANDSHAKE_A_ACCEPT_AUTH_MODE"


def test_truncated_message_rejected() -> None:
    with pytest.raises(MalformedMessage):
        parse_accept_reply(ACCEPT_REPLY[:60])
    with pytest.raises(MalformedMessage):
        m.split_datagram(ACCEPT_REPLY[:10] + b"\1")


def test_ready_requires_handler_class() -> None:
    bare = m.encode(m.acceptmsg, msg_type=FAMILY, flags=0, seq=0, pid=0, cmd=1, version=1)
    with pytest.raises(MalformedMessage, match="HANDLER_CLASS"):
        parse_ready(bare)
    with pytest.raises(MalformedMessage, match="expected READY"):
        parse_ready(ACCEPT_REPLY)


# -- controller and errors -------------------------------------------------------------


def test_getfamily_request_layout() -> None:
    data = m.encode(
        m.ctrlmsg, msg_type=0x10, flags=NLM_F_REQUEST, seq=1, pid=0,
        attrs=[("CTRL_ATTR_FAMILY_NAME", "handshake")], cmd=3, version=1,
    )  # fmt: skip
    assert data[16:20] == bytes([3, 1, 0, 0])
    assert data[20:] == struct.pack("=HH", 14, 2) + b"handshake\0\0\0"


def test_kernel_enoent_ack_decodes() -> None:
    # Captured from this machine's kernel: GETFAMILY "handshake" with NETLINK_CAP_ACK.
    raw = bytes.fromhex("240000000200000106000000dd490000feffffff240000001000010006000000dd490000")
    hdr = m.read_header(raw)
    ack = m.decode(raw, m.ack_class(hdr.flags))
    assert ack["error"] == -errno.ENOENT
    assert (ack["orig_type"], ack["orig_seq"]) == (0x10, 6)


def test_attribute_at_maps_offsets() -> None:
    assert m.attribute_at(DONE_SUCCESS, 0x1C) == "HANDSHAKE_A_DONE_SOCKFD"
    assert m.attribute_at(ACCEPT_REPLY, 0x58) == "HANDSHAKE_A_ACCEPT_CERTIFICATE"
    assert m.attribute_at(DONE_SUCCESS, 0x100) is None
