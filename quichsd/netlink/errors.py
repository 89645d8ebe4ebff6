# SPDX-License-Identifier: GPL-2.0-only
"""Exceptions of the handshake-family client, each carrying what a log line needs.

A daemon that talks to the kernel must say *which* command failed, *which* attribute
was at fault and *which* errno the kernel returned; these classes keep those facts as
attributes instead of burying them in a message string.
"""

from __future__ import annotations

import errno as _errno
import os


class HandshakeNetlinkError(Exception):
    """Base class of everything this package raises."""


class FamilyUnavailable(HandshakeNetlinkError):
    """The ``handshake`` family (or its ``tlshd`` group) is not registered.

    tlshd treats this as "kernel handshake service is not available" and exits 0.
    """

    def __init__(self, family: str, errno: int, detail: str = "") -> None:
        self.family = family
        self.errno = errno
        text = f"generic netlink family {family!r} is not available"
        text += f" ({_errno.errorcode.get(errno, errno)})" if errno else ""
        super().__init__(f"{text}: {detail}" if detail else text)


class NetlinkCommandError(HandshakeNetlinkError, OSError):
    """The kernel answered a command with an NLMSG_ERROR carrying a negative errno.

    Also an ``OSError`` so callers can test ``exc.errno`` like for a syscall.
    """

    def __init__(
        self,
        command: str,
        errno: int,
        *,
        attribute: str | None = None,
        message: str | None = None,
        seq: int | None = None,
    ) -> None:
        self.command = command
        self.attribute = attribute
        self.message = message
        self.seq = seq
        parts = [f"{command} failed: {_errno.errorcode.get(errno, str(errno))}"]
        parts.append(f"({os.strerror(errno)})")
        if attribute:
            parts.append(f"at attribute {attribute}")
        if message:
            parts.append(f"- kernel says: {message}")
        OSError.__init__(self, errno, " ".join(parts))

    def __str__(self) -> str:
        return str(self.strerror)


class MalformedMessage(HandshakeNetlinkError, ValueError):
    """Bytes that do not follow the family's wire format."""

    def __init__(self, attribute: str | None, reason: str) -> None:
        self.attribute = attribute
        self.reason = reason
        super().__init__(f"{attribute}: {reason}" if attribute else reason)


class MalformedRequest(MalformedMessage):
    """An ACCEPT reply we cannot act on.

    ``sockfd`` is the installed descriptor when it could be read, so the caller can
    still report DONE(EIO) and close it; otherwise the request would hang.
    """

    def __init__(self, attribute: str | None, reason: str, sockfd: int | None) -> None:
        self.sockfd = sockfd
        super().__init__(attribute, reason)


class ReplyTimeout(HandshakeNetlinkError, TimeoutError):
    """No answer to a request within the bounded wait."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        super().__init__(f"no reply to {command} within {timeout:g} s")


class ChannelClosed(HandshakeNetlinkError, ConnectionError):
    """The peer of a model channel went away."""
