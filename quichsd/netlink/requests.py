# SPDX-License-Identifier: GPL-2.0-only
"""Strict parsing of READY notifications and ACCEPT replies into plain dataclasses.

Unlike tlshd (libnl keeps only the last copy of a repeated attribute) every
PEER_IDENTITY and every CERTIFICATE nest is kept, in wire order. Attributes this
version does not know are ignored, so a newer kernel adding some stays compatible.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass, field

from .constants import (
    NLMSG_ERROR,
    NLMSG_MIN_TYPE,
    AcceptAttr,
    AuthMode,
    Command,
    MessageType,
    X509Attr,
)
from .errors import MalformedMessage, MalformedRequest
from .messages import (
    ACCEPT_NAMES,
    X509_NAMES,
    Header,
    RawAttribute,
    acceptmsg,
    decode,
    nested_attributes,
    raw_attributes,
    read_header,
)

__all__ = [
    "AcceptedRequest",
    "ReadyNotice",
    "X509Pair",
    "parse_accept_reply",
    "parse_ready",
]


@dataclass(frozen=True)
class X509Pair:
    """Key serials from one CERTIFICATE nest; 0 means "not supplied"."""

    cert: int = 0
    privkey: int = 0


@dataclass
class AcceptedRequest:
    """Parameters of one accepted handshake request.

    ``sockfd`` is a descriptor installed in *this* process (O_CLOEXEC); the agent owns
    it and must keep it open until DONE has been sent, then close it.
    """

    sockfd: int
    message_type: MessageType
    auth_mode: AuthMode
    timeout_ms: int | None = None
    peer_identities: list[int] = field(default_factory=list)
    certificates: list[X509Pair] = field(default_factory=list)
    peername: str | None = None
    keyring: int | None = None

    @property
    def certificate(self) -> int:
        """Serial of the local certificate (first nest; the kernel sends at most one)."""
        return self.certificates[0].cert if self.certificates else 0

    @property
    def private_key(self) -> int:
        """Serial of the local private key (first nest)."""
        return self.certificates[0].privkey if self.certificates else 0

    @property
    def is_client(self) -> bool:
        return self.message_type == MessageType.CLIENTHELLO

    def close(self) -> None:
        """Close the handshake descriptor (after DONE)."""
        if self.sockfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.sockfd)
            self.sockfd = -1


@dataclass(frozen=True)
class ReadyNotice:
    """A READY multicast: "a request for ``handler_class`` is pending"."""

    handler_class: int


def _u32(attr: RawAttribute) -> int:
    if len(attr.payload) != 4:
        raise MalformedMessage(attr.name, f"expected a 4-byte integer, got {len(attr.payload)}")
    value: int = struct.unpack("=I", attr.payload)[0]
    return value


def _s32(attr: RawAttribute) -> int:
    if len(attr.payload) != 4:
        raise MalformedMessage(attr.name, f"expected a 4-byte integer, got {len(attr.payload)}")
    value: int = struct.unpack("=i", attr.payload)[0]
    return value


def _string(attr: RawAttribute) -> str:
    raw = attr.payload
    if not raw.endswith(b"\0"):
        raise MalformedMessage(attr.name, "string is not NUL-terminated")
    text = raw[:-1]
    if b"\0" in text:
        raise MalformedMessage(attr.name, "string has an embedded NUL")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(attr.name, f"string is not UTF-8: {exc}") from exc


def _x509(attr: RawAttribute) -> X509Pair:
    children, leftover = nested_attributes(attr, X509_NAMES)
    if leftover:
        raise MalformedMessage(attr.name, f"{leftover} trailing bytes in the nest")
    cert = privkey = 0
    for child in children:
        if child.number == X509Attr.CERT:
            cert = _u32(child)
        elif child.number == X509Attr.PRIVKEY:
            privkey = _u32(child)
    return X509Pair(cert, privkey)


def _message_type(attr: RawAttribute) -> MessageType:
    value = _u32(attr)
    try:
        return MessageType(value)
    except ValueError:
        raise MalformedMessage(attr.name, f"unknown message type {value}") from None


def _auth_mode(attr: RawAttribute) -> AuthMode:
    value = _u32(attr)
    try:
        return AuthMode(value)
    except ValueError:
        raise MalformedMessage(attr.name, f"unknown auth mode {value}") from None


def _genl_message(
    data: bytes, expect: Command, header: Header | None
) -> tuple[list[RawAttribute], int]:
    hdr = read_header(data) if header is None else header
    if hdr.type == NLMSG_ERROR or hdr.type < NLMSG_MIN_TYPE:
        raise MalformedMessage(None, f"netlink control message type {hdr.type}, not {expect.name}")
    msg = decode(data, acceptmsg, hdr)
    if msg["cmd"] != expect:
        raise MalformedMessage(None, f"genl cmd {msg['cmd']}, expected {expect.name}")
    return raw_attributes(msg, ACCEPT_NAMES)


def parse_ready(data: bytes, header: Header | None = None) -> ReadyNotice:
    """Parse a READY multicast; it carries only the handler class.

    ``header``: as ``split_datagram`` read it, so it is not read again.
    """
    attrs, _ = _genl_message(data, Command.READY, header)
    for attr in attrs:
        if attr.number == AcceptAttr.HANDLER_CLASS:
            return ReadyNotice(_u32(attr))
    raise MalformedMessage(ACCEPT_NAMES[AcceptAttr.HANDLER_CLASS], "missing from READY")


def parse_accept_reply(data: bytes, header: Header | None = None) -> AcceptedRequest:
    """Parse an ACCEPT reply; raise ``MalformedRequest`` naming the bad attribute.

    SOCKFD is read first so that a rejected reply can tell which descriptor it
    names; the caller still decides which fd the reply installed (a faulty reply may
    name any number, HandshakeFamily.accept). ``header``: as for ``parse_ready``.
    """
    try:
        attrs, _ = _genl_message(data, Command.ACCEPT, header)
    except MalformedMessage as exc:
        raise MalformedRequest(exc.attribute, exc.reason, None) from exc
    sockfd: int | None = None
    copies = 0
    for attr in attrs:
        if attr.number == AcceptAttr.SOCKFD:
            copies += 1
            try:
                sockfd = _s32(attr)
            except MalformedMessage as exc:
                raise MalformedRequest(exc.attribute, exc.reason, None) from exc
    if copies > 1:
        # The kernel installs one fd per reply and names it once: which copy is it?
        raise MalformedRequest(ACCEPT_NAMES[AcceptAttr.SOCKFD], f"sent {copies} times", None)
    try:
        return _build(attrs, sockfd)
    except MalformedRequest:
        raise
    except MalformedMessage as exc:
        # A negative SOCKFD names no installed descriptor: nothing to answer on.
        installed = sockfd if sockfd is not None and sockfd >= 0 else None
        raise MalformedRequest(exc.attribute, exc.reason, installed) from exc


def _build(attrs: list[RawAttribute], sockfd: int | None) -> AcceptedRequest:
    """Singletons keep the last copy (as libnl would); multi-attributes keep all."""
    message_type: MessageType | None = None
    auth_mode: AuthMode | None = None
    req = AcceptedRequest(sockfd=-1, message_type=MessageType.UNSPEC, auth_mode=AuthMode.UNSPEC)
    for attr in attrs:
        n = attr.number
        if n == AcceptAttr.MESSAGE_TYPE:
            message_type = _message_type(attr)
        elif n == AcceptAttr.AUTH_MODE:
            auth_mode = _auth_mode(attr)
        elif n == AcceptAttr.TIMEOUT:
            req.timeout_ms = _u32(attr)
        elif n == AcceptAttr.PEER_IDENTITY:
            req.peer_identities.append(_u32(attr))
        elif n == AcceptAttr.CERTIFICATE:
            req.certificates.append(_x509(attr))
        elif n == AcceptAttr.PEERNAME:
            req.peername = _string(attr)
        elif n == AcceptAttr.KEYRING:
            req.keyring = _u32(attr)
        elif n == AcceptAttr.HANDLER_CLASS:
            _u32(attr)  # not sent in replies; tolerated if well-formed
    if sockfd is None:
        raise MalformedRequest(ACCEPT_NAMES[AcceptAttr.SOCKFD], "missing", None)
    if sockfd < 0:
        raise MalformedRequest(ACCEPT_NAMES[AcceptAttr.SOCKFD], f"invalid fd {sockfd}", None)
    if message_type is None:
        raise MalformedMessage(ACCEPT_NAMES[AcceptAttr.MESSAGE_TYPE], "missing")
    if auth_mode is None:
        raise MalformedMessage(ACCEPT_NAMES[AcceptAttr.AUTH_MODE], "missing")
    req.sockfd = sockfd
    req.message_type = message_type
    req.auth_mode = auth_mode
    return req
