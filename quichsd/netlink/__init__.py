# SPDX-License-Identifier: GPL-2.0-only
"""Client of the kernel's ``handshake`` generic-netlink family (net/handshake).

``HandshakeFamily`` resolves the family, joins the ``tlshd`` group, receives READY,
ACCEPTs requests (``AcceptedRequest``), reports DONE and probes optional DONE
attributes, over a ``KernelChannel`` (AF_NETLINK) or another ``Channel`` (the userspace
model's, ``quichsd.userspace.family_channel``). Encoding and
decoding use pyroute2's message classes (``messages``).
"""

# First: pyroute2's message classes without the rest of pyroute2 (codec_import.py).
from . import codec_import  # noqa: F401
from .channel import Channel, KernelChannel
from .constants import AuthMode, Command, HandlerClass, MessageType
from .errors import (
    ChannelClosed,
    FamilyUnavailable,
    HandshakeNetlinkError,
    MalformedMessage,
    MalformedRequest,
    NetlinkCommandError,
    ReplyTimeout,
)
from .family import HandshakeFamily, KernelCapabilities
from .requests import AcceptedRequest, ReadyNotice, X509Pair, parse_accept_reply, parse_ready

__all__ = [
    "AcceptedRequest",
    "AuthMode",
    "Channel",
    "ChannelClosed",
    "Command",
    "FamilyUnavailable",
    "HandlerClass",
    "HandshakeFamily",
    "HandshakeNetlinkError",
    "KernelCapabilities",
    "KernelChannel",
    "MalformedMessage",
    "MalformedRequest",
    "MessageType",
    "NetlinkCommandError",
    "ReadyNotice",
    "ReplyTimeout",
    "X509Pair",
    "parse_accept_reply",
    "parse_ready",
]
