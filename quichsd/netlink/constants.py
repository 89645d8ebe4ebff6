# SPDX-License-Identifier: GPL-2.0-only
"""Numbers of the kernel's ``handshake`` generic-netlink family and of netlink itself.

Kept in one place so the codec, the daemon and the userspace family model agree on
every number; values follow docs/kernel-abi.md §FAMILY, §COMMANDS, §ATTRIBUTES and §WIRE.
"""

from __future__ import annotations

import enum
from typing import Final

# Authentication mode requested by the kernel consumer (docs/kernel-abi.md §COMMANDS):
# the engine's own enum, defined once in the TLS configuration it selects.
from quichsd.tls.modes import AuthMode as AuthMode

FAMILY_NAME: Final = "handshake"
FAMILY_VERSION: Final = 1
GROUP_NONE: Final = "none"
GROUP_TLSHD: Final = "tlshd"

# -- netlink core -------------------------------------------------------------------
NETLINK_GENERIC: Final = 16
SOL_NETLINK: Final = 270
NETLINK_ADD_MEMBERSHIP: Final = 1
NETLINK_DROP_MEMBERSHIP: Final = 2
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11

NLM_F_REQUEST: Final = 0x0001
NLM_F_MULTI: Final = 0x0002
NLM_F_ACK: Final = 0x0004
NLM_F_DUMP: Final = 0x0300
NLM_F_CAPPED: Final = 0x0100
NLM_F_ACK_TLVS: Final = 0x0200

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_MIN_TYPE: Final = 0x10

NLA_F_NESTED: Final = 0x8000
NLA_F_NET_BYTEORDER: Final = 0x4000
NLA_TYPE_MASK: Final = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NLMSG_HDRLEN: Final = 16
GENL_HDRLEN: Final = 4

# -- generic netlink controller (nlctrl) ---------------------------------------------
GENL_ID_CTRL: Final = 0x10
CTRL_CMD_NEWFAMILY: Final = 1
CTRL_CMD_GETFAMILY: Final = 3
CTRL_VERSION: Final = 2
GENL_ADMIN_PERM: Final = 0x01
GENL_CMD_CAP_DO: Final = 0x02
GENL_CMD_CAP_HASPOL: Final = 0x08


class Command(enum.IntEnum):
    """``handshake`` family commands (docs/kernel-abi.md §COMMANDS)."""

    READY = 1
    ACCEPT = 2
    DONE = 3


class HandlerClass(enum.IntEnum):
    """Who serves a request; the multicast group index equals the class
    (docs/kernel-abi.md §COMMANDS)."""

    NONE = 0
    TLSHD = 1
    MAX = 2


class MessageType(enum.IntEnum):
    """Role the agent plays in the handshake (docs/kernel-abi.md §COMMANDS)."""

    UNSPEC = 0
    CLIENTHELLO = 1
    SERVERHELLO = 2


class AcceptAttr(enum.IntEnum):
    """``accept`` attribute set (ACCEPT request/reply and READY)."""

    SOCKFD = 1
    HANDLER_CLASS = 2
    MESSAGE_TYPE = 3
    TIMEOUT = 4
    AUTH_MODE = 5
    PEER_IDENTITY = 6
    CERTIFICATE = 7
    PEERNAME = 8
    KEYRING = 9


class X509Attr(enum.IntEnum):
    """``x509`` set nested in the ACCEPT ``certificate`` attribute."""

    CERT = 1
    PRIVKEY = 2


class DoneAttr(enum.IntEnum):
    """``done`` attribute set; TAG (4) exists only in ktls-utils
    (docs/kernel-abi.md §ATTRIBUTES)."""

    STATUS = 1
    SOCKFD = 2
    REMOTE_AUTH = 3
    TAG = 4


#: Largest DONE STATUS current kernels accept (MAX_ERRNO).
MAX_ERRNO: Final = 4095
#: The kernel stores at most this many peer identities / remote-auth serials.
MAX_PEER_IDS: Final = 5
#: Remote-auth marker meaning "client presented a certificate" (docs/kernel-abi.md §REMOTE-AUTH).
REMOTE_AUTH_MUTUAL: Final = 0xFFFFFFFF
#: Tag string tlshd uses to probe TAG support (docs/kernel-abi.md §PROBE).
PROBE_TAG: Final = "__probe__"
