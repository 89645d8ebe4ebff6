# SPDX-License-Identifier: GPL-2.0-only
"""The role a handshake plays and the kernel's authentication modes: plain enums,
in a module that loads nothing, so the daemon's parent, the worker channel and the
netlink codec can name them without loading GnuTLS (docs/startup.md)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Role(StrEnum):
    """The side a handshake plays; its value is how logs, metrics and the worker
    channel name it."""

    CLIENT = "client"
    SERVER = "server"


class AuthMode(IntEnum):
    """``enum handshake_auth`` numbers, as the kernel sends them in ACCEPT (the one
    definition: the netlink codec, the daemon and the engine import it from here).  UNSPEC is
    what a request without the attribute carries; no handshake runs with it."""

    UNSPEC = 0
    UNAUTH = 1
    PSK = 2
    X509 = 3
