# SPDX-License-Identifier: GPL-2.0-only
"""``[debug] nl=``: a trace of the netlink messages the daemon sends and receives.

tlshd hands ``nl`` to libnl as its debug level (libnl then prints messages on
stderr).  Here any level above 0 logs one DEBUG line per message on the
``quichsd.netlink`` logger: direction, message type (a ``handshake`` command,
an nlctrl request, an error or ack), flags, sequence number and the names of
the attributes present.  Never attribute values: they are fds, keyring
serials, peer names and identities.  ``HandshakeFamily`` calls ``traffic()``
for every datagram; with the trace off that costs one level check.
"""

from __future__ import annotations

import errno
import logging
import struct

from .constants import GENL_ID_CTRL, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, Command
from .errors import MalformedMessage
from .messages import (
    ACCEPT_NAMES,
    DONE_NAMES,
    Framed,
    ctrlmsg,
    decode,
    raw_attributes,
    split_datagram,
)

log = logging.getLogger("quichsd.netlink")


def set_level(level: int) -> None:
    """``[debug] nl``: above 0 the trace is on; 0 turns it off (whatever ``loglevel`` is)."""
    log.setLevel(logging.DEBUG if level > 0 else logging.INFO)


def traffic(direction: str, data: bytes) -> None:
    """Logs each message of one datagram (``direction``: "sent" or "received")."""
    if log.isEnabledFor(logging.DEBUG):
        for line in describe(data):
            log.debug("netlink %s: %s", direction, line)


def describe(data: bytes) -> list[str]:
    """One line per message of a datagram: what it is and which attributes it has."""
    try:
        messages = split_datagram(data)
    except MalformedMessage as exc:
        return [f"{len(data)} bytes that do not frame: {exc}"]
    return [_describe(framed) for framed in messages]


def _describe(framed: Framed) -> str:
    header = framed.header
    where = f"seq {header.seq} flags {header.flags:#x}"
    if header.type == NLMSG_ERROR:
        code = -struct.unpack_from("=i", framed.data, NLMSG_HDRLEN)[0] if header.length >= 20 else 0
        if code == 0:
            return f"ack {where}"
        return f"error {errno.errorcode.get(code, code)} {where}"
    if header.type == NLMSG_DONE:
        return f"done {where}"
    if len(framed.data) <= NLMSG_HDRLEN:
        return f"type {header.type} without a genetlink header, {where}"
    cmd = framed.data[NLMSG_HDRLEN]
    try:
        if header.type == GENL_ID_CTRL:
            msg = decode(framed.data, ctrlmsg, header)
            names = [str(attr[0]) for attr in msg["attrs"]]
            what = f"nlctrl cmd {cmd}"
        else:
            attrs, _ = raw_attributes(
                decode(framed.data, header=header),
                DONE_NAMES if cmd == Command.DONE else ACCEPT_NAMES,
            )
            names = [attr.name for attr in attrs]
            what = _command(cmd)
    except MalformedMessage as exc:
        return f"type {header.type} cmd {cmd} {where}: undecodable ({exc})"
    return f"{what} {where} [{', '.join(names) or 'no attributes'}]"


def _command(cmd: int) -> str:
    try:
        return Command(cmd).name
    except ValueError:
        return f"cmd {cmd}"
