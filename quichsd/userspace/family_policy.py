# SPDX-License-Identifier: GPL-2.0-only
"""Strict attribute validation as the kernel applies it to the ``handshake`` family.

Generic netlink validates this family strictly: attribute types 0 and above the
policy's maxattr are unknown, types inside the range without a policy entry are
unsupported, fixed-size integers must have exactly their size, NLA_F_NESTED is refused
on non-nest attributes, range-limited integers are range checked and bytes left over
after the last attribute are an error. Every failure is EINVAL with an extended-ACK
reason and the offending attribute's offset, as the kernel reports it.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from quichsd.netlink.constants import MAX_ERRNO, AcceptAttr, DoneAttr, HandlerClass
from quichsd.netlink.messages import RawAttribute


@dataclass(frozen=True)
class AttrPolicy:
    """One policy entry: ``kind`` is ``u32``, ``s32`` or ``string``; optional maximum."""

    kind: str
    maximum: int | None = None


@dataclass(frozen=True)
class Policy:
    """A command's attribute policy (``maxattr`` bounds the known types)."""

    maxattr: int
    entries: dict[int, AttrPolicy] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why the kernel refused a message: errno plus the extended-ACK fields."""

    errno: int
    message: str | None = None
    offset: int | None = None
    missing: int | None = None


ACCEPT_POLICY = Policy(
    maxattr=int(AcceptAttr.HANDLER_CLASS),
    entries={AcceptAttr.HANDLER_CLASS: AttrPolicy("u32", maximum=int(HandlerClass.MAX))},
)


def done_policy(*, remote_auth: bool, tag: bool, status_max: bool) -> Policy:
    """DONE policy of the modelled kernel; ``tag`` models a kernel that took TAG (4)."""
    entries: dict[int, AttrPolicy] = {
        DoneAttr.STATUS: AttrPolicy("u32", maximum=MAX_ERRNO if status_max else None),
        DoneAttr.SOCKFD: AttrPolicy("s32"),
    }
    maxattr = int(DoneAttr.SOCKFD)
    if remote_auth:
        entries[DoneAttr.REMOTE_AUTH] = AttrPolicy("u32")
        maxattr = int(DoneAttr.REMOTE_AUTH)
    if tag:
        entries[DoneAttr.TAG] = AttrPolicy("string")
        maxattr = int(DoneAttr.TAG)
    return Policy(maxattr=maxattr, entries=entries)


def validate(attrs: list[RawAttribute], leftover: int, policy: Policy) -> Refusal | None:
    """First violation in wire order, or ``None`` when the attributes pass."""
    for attr in attrs:
        if attr.number == 0 or attr.number > policy.maxattr:
            return Refusal(errno.EINVAL, "Unknown attribute type", attr.offset)
        entry = policy.entries.get(attr.number)
        if entry is None:
            return Refusal(errno.EINVAL, "Unsupported attribute", attr.offset)
        if entry.kind in ("u32", "s32") and len(attr.payload) != 4:
            return Refusal(errno.EINVAL, "Attribute has invalid length", attr.offset)
        if attr.nested_flag:
            return Refusal(errno.EINVAL, "NLA_F_NESTED not expected", attr.offset)
        if entry.maximum is not None and entry.kind == "u32":
            (value,) = struct.unpack("=I", attr.payload)
            if value > entry.maximum:
                return Refusal(errno.EINVAL, "integer out of range", attr.offset)
    if leftover:
        return Refusal(errno.EINVAL, "bytes leftover after parsing attributes")
    return None


def last(attrs: list[RawAttribute], number: int) -> RawAttribute | None:
    """The kernel's attribute table keeps the last copy of a repeated attribute."""
    found = None
    for attr in attrs:
        if attr.number == number:
            found = attr
    return found
