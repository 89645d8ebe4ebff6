# SPDX-License-Identifier: GPL-2.0-only
"""pyroute2 message classes for the ``handshake`` family, plus thin encode/decode helpers.

One family id carries two attribute sets: READY and ACCEPT use ``accept``, DONE uses
``done``. pyroute2 binds one class per message type, so the class is chosen by the
generic-netlink command (``attribute_class``). pyroute2 is lenient (it does not check
attribute lengths and keeps unknown attributes as ``UNKNOWN``), so ``raw_attributes``
exposes each attribute's number, flags, offset and exact payload: both the strict
request parser and the userspace kernel model validate against that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pyroute2.netlink import ctrlmsg, genlmsg, nla, nla_base, nlmsg

from .constants import (
    GENL_HDRLEN,
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLA_TYPE_MASK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLMSG_HDRLEN,
    AcceptAttr,
    Command,
    DoneAttr,
    X509Attr,
)
from .errors import MalformedMessage

__all__ = [
    "AttrValue",
    "Framed",
    "Header",
    "RawAttribute",
    "acceptmsg",
    "ackmsg",
    "attribute_class",
    "ctrlmsg",
    "decode",
    "donemsg",
    "encode",
    "extackmsg",
    "raw_attributes",
    "read_header",
    "split_datagram",
]

#: Attribute value as pyroute2 takes it: int, str, or a nested ``{"attrs": [...]}``.
AttrValue = Any


def _names(enum_cls: Iterable[Any], prefix: str) -> dict[int, str]:
    return {int(m): f"{prefix}{m.name}" for m in enum_cls}


ACCEPT_NAMES = _names(AcceptAttr, "HANDSHAKE_A_ACCEPT_")
X509_NAMES = _names(X509Attr, "HANDSHAKE_A_X509_")
DONE_NAMES = _names(DoneAttr, "HANDSHAKE_A_DONE_")


class acceptmsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """``accept`` set: READY notification, ACCEPT request and ACCEPT reply."""

    nla_map = (
        (AcceptAttr.SOCKFD, ACCEPT_NAMES[AcceptAttr.SOCKFD], "int32"),
        (AcceptAttr.HANDLER_CLASS, ACCEPT_NAMES[AcceptAttr.HANDLER_CLASS], "uint32"),
        (AcceptAttr.MESSAGE_TYPE, ACCEPT_NAMES[AcceptAttr.MESSAGE_TYPE], "uint32"),
        (AcceptAttr.TIMEOUT, ACCEPT_NAMES[AcceptAttr.TIMEOUT], "uint32"),
        (AcceptAttr.AUTH_MODE, ACCEPT_NAMES[AcceptAttr.AUTH_MODE], "uint32"),
        (AcceptAttr.PEER_IDENTITY, ACCEPT_NAMES[AcceptAttr.PEER_IDENTITY], "uint32"),
        # The kernel sets NLA_F_NESTED on this nest (type 0x8007 on the wire).
        (AcceptAttr.CERTIFICATE, ACCEPT_NAMES[AcceptAttr.CERTIFICATE], "x509|nested"),
        (AcceptAttr.PEERNAME, ACCEPT_NAMES[AcceptAttr.PEERNAME], "asciiz"),
        (AcceptAttr.KEYRING, ACCEPT_NAMES[AcceptAttr.KEYRING], "uint32"),
    )

    class x509(nla):  # type: ignore[misc]  # pyroute2 is untyped
        """``x509`` set: key serials of the local certificate and private key."""

        nla_map = (
            (X509Attr.CERT, X509_NAMES[X509Attr.CERT], "uint32"),
            (X509Attr.PRIVKEY, X509_NAMES[X509Attr.PRIVKEY], "uint32"),
        )


class donemsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """``done`` set: the agent's completion report (and the capability probe)."""

    nla_map = (
        (DoneAttr.STATUS, DONE_NAMES[DoneAttr.STATUS], "uint32"),
        (DoneAttr.SOCKFD, DONE_NAMES[DoneAttr.SOCKFD], "int32"),
        (DoneAttr.REMOTE_AUTH, DONE_NAMES[DoneAttr.REMOTE_AUTH], "uint32"),
        (DoneAttr.TAG, DONE_NAMES[DoneAttr.TAG], "asciiz"),
    )


_ACK_FIELDS = (
    ("error", "i"),
    ("orig_length", "I"),
    ("orig_type", "H"),
    ("orig_flags", "H"),
    ("orig_seq", "I"),
    ("orig_pid", "I"),
)

_EXTACK_MAP = (
    (1, "NLMSGERR_ATTR_MSG", "asciiz"),
    (2, "NLMSGERR_ATTR_OFFS", "uint32"),
    (3, "NLMSGERR_ATTR_COOKIE", "hex"),
    (4, "NLMSGERR_ATTR_POLICY", "hex"),
    (5, "NLMSGERR_ATTR_MISS_TYPE", "uint32"),
    (6, "NLMSGERR_ATTR_MISS_NEST", "uint32"),
)


class ackmsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """NLMSG_ERROR without extended-ACK TLVs (only the original header is decoded).

    pyroute2's own ``nlmsgerr`` parses the embedded original header as attributes, so
    the header is spelled out as fields here.
    """

    fields = _ACK_FIELDS


class extackmsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """Capped NLMSG_ERROR followed by extended-ACK TLVs (NLM_F_CAPPED|NLM_F_ACK_TLVS)."""

    fields = _ACK_FIELDS
    nla_map = _EXTACK_MAP


@dataclass(frozen=True, slots=True)
class Header:
    """``struct nlmsghdr``."""

    length: int
    type: int
    flags: int
    seq: int
    pid: int


def read_header(data: bytes | bytearray, offset: int = 0) -> Header:
    """Decode the 16-byte netlink header at ``offset``."""
    if len(data) - offset < NLMSG_HDRLEN:
        raise MalformedMessage(None, f"truncated netlink header ({len(data) - offset} bytes)")
    msg = nlmsg(bytes(data), offset=offset)
    msg.decode()
    h = msg["header"]
    return Header(h["length"], h["type"], h["flags"], h["sequence_number"], h["pid"])


class Framed(NamedTuple):
    """One message of a datagram with the header framing read from it.

    Handlers take the header from here rather than reading it again: pyroute2 builds a
    whole message object to read 16 bytes, and a received message passes several of them.
    """

    header: Header
    data: bytes


def split_datagram(data: bytes) -> list[Framed]:
    """Split one received datagram into its netlink messages (the kernel may batch)."""
    out: list[Framed] = []
    offset = 0
    while len(data) - offset >= NLMSG_HDRLEN:
        hdr = read_header(data, offset)
        if hdr.length < NLMSG_HDRLEN or hdr.length > len(data) - offset:
            raise MalformedMessage(None, f"bad nlmsg_len {hdr.length} at offset {offset}")
        out.append(Framed(hdr, data[offset : offset + hdr.length]))
        offset += (hdr.length + 3) & ~3
    if offset < len(data) and any(data[offset:]):
        raise MalformedMessage(None, f"{len(data) - offset} stray bytes after messages")
    return out


def attribute_class(cmd: int) -> type[genlmsg]:
    """READY and ACCEPT speak the ``accept`` set; DONE the ``done`` set."""
    if cmd == Command.DONE:
        return donemsg
    return acceptmsg


def decode(data: bytes, cls: type[nlmsg] | None = None, header: Header | None = None) -> Any:
    """Decode one netlink message with ``cls`` (by genl command when ``None``).

    ``header``: the message's header as ``split_datagram`` read it (saves reading it again).
    """
    hdr = read_header(data) if header is None else header
    if hdr.length != len(data):
        raise MalformedMessage(None, f"nlmsg_len {hdr.length} != message size {len(data)}")
    if cls is None:
        if len(data) < NLMSG_HDRLEN + GENL_HDRLEN:
            raise MalformedMessage(None, "message shorter than the genetlink header")
        cls = attribute_class(data[NLMSG_HDRLEN])
    msg = cls(bytes(data))
    try:
        msg.decode()
    except Exception as exc:  # pyroute2 raises several unrelated types here
        raise MalformedMessage(None, f"undecodable message: {exc}") from exc
    return msg


def encode(
    cls: type[nlmsg],
    *,
    msg_type: int,
    flags: int,
    seq: int,
    pid: int,
    attrs: Sequence[tuple[str, AttrValue]] = (),
    **fields: Any,
) -> bytes:
    """Encode a message of ``cls``; ``fields`` are its fixed fields (``cmd``...)."""
    known = _attr_names(cls)
    unknown = [name for name, _ in attrs if name not in known]
    if unknown:
        # pyroute2 would silently drop them; a typo must not vanish from the wire.
        raise ValueError(f"{cls.__name__} has no attribute {unknown[0]!r}")
    msg = cls()
    for key, value in fields.items():
        msg[key] = value
    msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": seq, "pid": pid}
    msg["attrs"] = [[name, value] for name, value in attrs]
    msg.encode()
    return bytes(msg.data)


_ATTR_NAMES: dict[type[nlmsg], frozenset[str]] = {}


def _attr_names(cls: type[nlmsg]) -> frozenset[str]:
    """Attribute names of a class's (tuple-form) ``nla_map``; once per class, not per send."""
    names = _ATTR_NAMES.get(cls)
    if names is None:
        names = frozenset(item[1] if isinstance(item[0], int) else item[0] for item in cls.nla_map)
        _ATTR_NAMES[cls] = names
    return names


def ack_class(flags: int) -> type[nlmsg]:
    """Pick the NLMSG_ERROR layout: TLVs are only decodable after a capped header."""
    capped_tlvs = NLM_F_CAPPED | NLM_F_ACK_TLVS
    return extackmsg if flags & capped_tlvs == capped_tlvs else ackmsg


@dataclass(slots=True)
class RawAttribute:
    """One attribute exactly as on the wire, with pyroute2's decoded value on demand."""

    number: int
    flags: int
    name: str
    offset: int
    length: int
    payload: bytes
    slot: Any = field(repr=False)
    children: list[RawAttribute] = field(default_factory=list)

    @property
    def nested_flag(self) -> bool:
        return bool(self.flags & NLA_F_NESTED)

    def value(self) -> Any:
        """pyroute2's decoded value (validate the payload length first)."""
        return self.slot.get_value()


def raw_attributes(msg: Any, names: dict[int, str]) -> tuple[list[RawAttribute], int]:
    """Walk ``msg``'s attributes as pyroute2 framed them.

    Returns the attributes and the count of leftover bytes the walk could not frame
    (non-zero means truncated or garbage tail, which strict validation rejects).
    Raises ``MalformedMessage`` for an attribute whose ``nla_len`` overruns its
    container.
    """
    header_len = 4 if msg.is_nla else NLMSG_HDRLEN + GENL_HDRLEN
    start = msg.offset + header_len
    end = msg.offset + msg.length
    attrs: list[RawAttribute] = []
    consumed = start
    for slot in msg["attrs"]:
        inst = slot.cell[1]
        data, offset = inst.data, inst.offset
        # pyroute2 clamps the lengths it keeps; the probe reads the real nla_len and type.
        probe = nla_base(data=data, offset=offset)
        probe.decode()
        header = probe["header"]
        nla_len, nla_type = header["length"], header["type"]
        number = nla_type & NLA_TYPE_MASK
        name = names.get(number) or f"attribute {number}"
        if nla_len < 4 or offset + nla_len > end:
            raise MalformedMessage(name, f"nla_len {nla_len} overruns its container")
        attrs.append(
            RawAttribute(
                number,
                nla_type & (NLA_F_NESTED | NLA_F_NET_BYTEORDER),
                name,
                offset,
                nla_len,
                bytes(data[offset + 4 : offset + nla_len]),
                slot,
            )
        )
        consumed = offset + ((nla_len + 3) & ~3)
    return attrs, max(0, end - consumed)


def nested_attributes(attr: RawAttribute, names: dict[int, str]) -> tuple[list[RawAttribute], int]:
    """Decode the children of a nest attribute (flags already masked by pyroute2)."""
    inst = attr.slot.cell[1]
    if not inst.decoded:
        try:
            inst.decode()
        except Exception as exc:
            raise MalformedMessage(attr.name, f"undecodable nest: {exc}") from exc
    return raw_attributes(inst, names)


def attribute_at(data: bytes, offset: int) -> str | None:
    """Name of the top-level attribute starting at ``offset`` of a genl message."""
    try:
        msg = decode(data)
        names = DONE_NAMES if data[NLMSG_HDRLEN] == Command.DONE else ACCEPT_NAMES
        attrs, _ = raw_attributes(msg, names)
    except MalformedMessage:
        return None
    for attr in attrs:
        if attr.offset <= offset < attr.offset + max(attr.length, 4):
            return attr.name
    return None
