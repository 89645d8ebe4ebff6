# SPDX-License-Identifier: GPL-2.0-only
"""Bytes the family model puts on the wire: ACKs, nlctrl replies, READY, ACCEPT replies.

Pure builders over pyroute2's message classes, kept apart from the model's state
machine so each kernel message layout can be read (and checked) in one place.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Mapping
from typing import Protocol

from pyroute2.netlink import nlmsg

from quichsd.netlink.constants import (
    CTRL_CMD_NEWFAMILY,
    CTRL_VERSION,
    FAMILY_NAME,
    FAMILY_VERSION,
    GENL_ADMIN_PERM,
    GENL_CMD_CAP_DO,
    GENL_CMD_CAP_HASPOL,
    GENL_ID_CTRL,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    AcceptAttr,
    AuthMode,
    Command,
)
from quichsd.netlink.messages import (
    ACCEPT_NAMES,
    AttrValue,
    Header,
    acceptmsg,
    ctrlmsg,
    encode,
    read_header,
)

from .family_policy import Refusal
from .family_request import RequestHandle


class AcceptFault(Protocol):
    """A fault the model plays on one ACCEPT (``FamilyModel.inject_accept_fault``): the
    tests' ``tests/support/family_faults.py`` makes them."""

    @property
    def error(self) -> int:
        """Fail the ACCEPT with this errno (0: reply), as a kernel that cannot install the fd."""
        ...

    @property
    def install(self) -> bool:
        """Whether an fd comes with the reply."""
        ...

    def attrs(self, regular: list[tuple[str, AttrValue]]) -> list[tuple[str, AttrValue]]:
        """The reply's attributes, mangled."""
        ...


_ACK_FIELDS = (
    ("error", "i"),
    ("orig_length", "I"),
    ("orig_type", "H"),
    ("orig_flags", "H"),
    ("orig_seq", "I"),
    ("orig_pid", "I"),
    ("payload", "s"),
)


class _ackout(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """NLMSG_ERROR as the kernel builds it: error, original header/payload, TLVs."""

    fields = _ACK_FIELDS
    nla_map = (
        (1, "NLMSGERR_ATTR_MSG", "asciiz"),
        (2, "NLMSGERR_ATTR_OFFS", "uint32"),
        (5, "NLMSGERR_ATTR_MISS_TYPE", "uint32"),
    )


class _plain(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """Header-only message (NLMSG_DONE of a dump), with its 4-byte status."""

    fields = (("status", "i"),)


def ack(
    raw: bytes,
    refusal: Refusal | None,
    port: int,
    *,
    cap_ack: bool,
    ext_ack: bool,
    header: Header | None = None,
) -> bytes:
    """NLMSG_ERROR for ``raw``: the whole original message follows an error unless
    NETLINK_CAP_ACK; extended-ACK TLVs only with NETLINK_EXT_ACK. ``header``: ``raw``'s,
    if already read."""
    hdr = read_header(raw) if header is None else header
    err = refusal.errno if refusal else 0
    flags = 0
    payload = b""
    if err and not cap_ack:
        payload = raw[NLMSG_HDRLEN:] + b"\0" * (-len(raw) % 4)
    else:
        flags |= NLM_F_CAPPED
    attrs: list[tuple[str, AttrValue]] = []
    if ext_ack and refusal is not None:
        if refusal.message:
            attrs.append(("NLMSGERR_ATTR_MSG", refusal.message))
        if refusal.offset is not None:
            attrs.append(("NLMSGERR_ATTR_OFFS", refusal.offset))
        if refusal.missing is not None:
            attrs.append(("NLMSGERR_ATTR_MISS_TYPE", refusal.missing))
    if attrs:
        flags |= NLM_F_ACK_TLVS
    return encode(
        _ackout,
        msg_type=NLMSG_ERROR,
        flags=flags,
        seq=hdr.seq,
        pid=port,
        attrs=attrs,
        error=-err,
        orig_length=hdr.length,
        orig_type=hdr.type,
        orig_flags=hdr.flags,
        orig_seq=hdr.seq,
        orig_pid=hdr.pid,
        payload=payload,
    )


def dump_done(seq: int, port: int) -> bytes:
    """NLMSG_DONE closing a multi-part dump."""
    return encode(_plain, msg_type=NLMSG_DONE, flags=NLM_F_MULTI, seq=seq, pid=port)


def family_info(
    family_id: int, groups: Mapping[str, int], seq: int, port: int, flags: int
) -> bytes:
    """CTRL_CMD_NEWFAMILY describing the handshake family (version 1, ops, groups)."""
    ops = [
        {"attrs": [("CTRL_ATTR_OP_ID", int(Command.ACCEPT)),
                   ("CTRL_ATTR_OP_FLAGS", GENL_ADMIN_PERM | GENL_CMD_CAP_DO
                    | GENL_CMD_CAP_HASPOL)]},
        {"attrs": [("CTRL_ATTR_OP_ID", int(Command.DONE)),
                   ("CTRL_ATTR_OP_FLAGS", GENL_CMD_CAP_DO | GENL_CMD_CAP_HASPOL)]},
    ]  # fmt: skip
    mcast = [
        {"attrs": [("CTRL_ATTR_MCAST_GRP_ID", gid), ("CTRL_ATTR_MCAST_GRP_NAME", gname)]}
        for gname, gid in groups.items()
    ]
    return encode(
        ctrlmsg,
        msg_type=GENL_ID_CTRL,
        flags=flags,
        seq=seq,
        pid=port,
        attrs=[
            ("CTRL_ATTR_FAMILY_NAME", FAMILY_NAME),
            ("CTRL_ATTR_FAMILY_ID", family_id),
            ("CTRL_ATTR_VERSION", FAMILY_VERSION),
            ("CTRL_ATTR_HDRSIZE", 0),
            ("CTRL_ATTR_MAXATTR", 0),
            ("CTRL_ATTR_OPS", ops),
            ("CTRL_ATTR_MCAST_GROUPS", mcast),
        ],
        cmd=CTRL_CMD_NEWFAMILY,
        version=CTRL_VERSION,
    )


def ready(family_id: int, handler_class: int) -> bytes:
    """READY multicast: version 1, seq 0, pid 0, HANDLER_CLASS only."""
    return encode(
        acceptmsg,
        msg_type=family_id,
        flags=0,
        seq=0,
        pid=0,
        attrs=[(ACCEPT_NAMES[AcceptAttr.HANDLER_CLASS], handler_class)],
        cmd=Command.READY,
        version=FAMILY_VERSION,
    )


def accept_reply(
    req: RequestHandle, family_id: int, seq: int, port: int, fault: AcceptFault | None = None
) -> bytes:
    """ACCEPT reply, unicast to the requester with its seq, flags 0, version 1
    (mangled as ``fault`` says, when one is given)."""
    attrs = reply_attrs(req)
    return encode(
        acceptmsg,
        msg_type=family_id,
        flags=0,
        seq=seq,
        pid=port,
        attrs=attrs if fault is None else fault.attrs(attrs),
        cmd=Command.ACCEPT,
        version=FAMILY_VERSION,
    )


def reply_attrs(req: RequestHandle) -> list[tuple[str, AttrValue]]:
    """ACCEPT reply attributes in the kernel's emission order; SOCKFD is a placeholder
    the receiving ModelChannel overwrites with the fd number SCM_RIGHTS installed."""
    a = ACCEPT_NAMES
    attrs: list[tuple[str, AttrValue]] = [
        (a[AcceptAttr.SOCKFD], -1),
        (a[AcceptAttr.MESSAGE_TYPE], req.message_type),
    ]
    if req.peername is not None:
        attrs.append((a[AcceptAttr.PEERNAME], req.peername))
    if req.timeout_ms:
        attrs.append((a[AcceptAttr.TIMEOUT], req.timeout_ms))
    if req.keyring:
        attrs.append((a[AcceptAttr.KEYRING], req.keyring))
    attrs.append((a[AcceptAttr.AUTH_MODE], req.auth_mode))
    if req.auth_mode == AuthMode.PSK:
        attrs += [(a[AcceptAttr.PEER_IDENTITY], p) for p in req.peer_identities]
    elif req.auth_mode == AuthMode.X509 and (req.cert or req.privkey):
        nest = {"attrs": [("HANDSHAKE_A_X509_CERT", req.cert),
                          ("HANDSHAKE_A_X509_PRIVKEY", req.privkey)]}  # fmt: skip
        attrs.append((a[AcceptAttr.CERTIFICATE], nest))
    return attrs


def fds_from(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"={usable // 4}i", payload[:usable]))
    return fds


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
