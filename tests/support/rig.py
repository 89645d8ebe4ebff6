# SPDX-License-Identifier: GPL-2.0-only
"""The tests' daemon rig: the installed one (``quichsd.userspace.rig``) plus keys.

``add_psk()`` / ``add_der()`` put ``user`` keys in a keyring of the rig's own,
linked into our session keyring, which the daemon subprocess inherits (so it
searches it and may read the keys); ``new_keyring()`` makes a consumer's keyring
for ACCEPT's KEYRING.  Closing the rig unlinks them, and with them every key in
them.  A process without a session keyring gets an anonymous one on first use;
``start()`` makes that happen before the daemon is forked, so both share it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from typing import Any, Self

from quichsd.daemon import keyring
from quichsd.userspace import rig as installed
from quichsd.userspace.rig import (
    AUTH_MODES,
    Counts,
    DaemonExited,
    Request,
    config_text,
    run_daemon_once,
)

__all__ = [
    "AUTH_MODES",
    "CONSUMER_KEYRING_PERM",
    "Counts",
    "DaemonExited",
    "DaemonRig",
    "Request",
    "config_text",
    "run_daemon_once",
]

#: A consumer keyring's permissions: possessor all; user view, read, search, link.
CONSUMER_KEYRING_PERM = 0x3F1B0000


class DaemonRig(installed.DaemonRig):
    """``quichsd.userspace.rig.DaemonRig`` with a keyring of its own; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keyring: int | None = None
        self._consumer_keyrings: list[int] = []

    def start(self) -> Self:
        try:
            # Before the fork: the first use of our session keyring may install one (an
            # anonymous "_ses"), and the daemon must inherit that one to possess our keys.
            _ = self.keyring
        except BaseException:
            self.close()
            raise
        return super().start()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._keyring is not None:
                with contextlib.suppress(keyring.KeyringError):
                    keyring.unlink_key(self._keyring)
                self._keyring = None
            for serial in self._consumer_keyrings:
                with contextlib.suppress(keyring.KeyringError):
                    keyring.unlink_key(serial, keyring.KEY_SPEC_PROCESS_KEYRING)
            self._consumer_keyrings.clear()

    @property
    def keyring(self) -> int:
        """The rig's keyring (linked into our session keyring, so the daemon possesses it)."""
        if self._keyring is None:
            name = f"quichsd-rig-{os.getpid()}-{secrets.token_hex(4)}"
            self._keyring = keyring.add_key("keyring", name, b"", keyring.KEY_SPEC_SESSION_KEYRING)
        return self._keyring

    def add_key(self, description: str, payload: bytes, key_type: str = "user") -> int:
        """A key in the rig's keyring; its serial."""
        return keyring.add_key(key_type, description, payload, self.keyring)

    def add_psk(self, identity: str, key: bytes) -> int:
        """A PSK as a ``user`` key whose description is its identity; the serial."""
        return self.add_key(identity, key)

    def add_der(self, description: str, der: bytes) -> int:
        """A DER certificate or private key as a ``user`` key; the serial for the ACCEPT."""
        return self.add_key(description, der)

    def new_keyring(
        self, name: str | None = None, keys: Mapping[str, bytes] | None = None
    ) -> tuple[int, dict[str, int]]:
        """A consumer's keyring *not* reachable from the session keyring (for ACCEPT's
        KEYRING), holding ``keys`` (description -> payload) as ``user`` keys: its serial
        and theirs.  As in the real-kernel floor, uid 0 may view, search and link the
        keyring, but only a possessor may read the keys: the daemon must link it."""
        description = name or f"quichsd-rig-consumer-{secrets.token_hex(4)}"
        serial = keyring.add_key("keyring", description, b"", self.keyring)
        serials = {
            key: keyring.add_key("user", key, payload, serial)
            for key, payload in (keys or {}).items()
        }
        keyring.set_permissions(serial, CONSUMER_KEYRING_PERM)
        # Kept alive as the consumer keeps its keyring (a reference), from this process's
        # keyring, which the daemon does not share; reachable for the daemon only through
        # the serial the consumer passes: take it out of our session tree.
        keyring.link_key(serial, keyring.KEY_SPEC_PROCESS_KEYRING)
        self._consumer_keyrings.append(serial)
        keyring.unlink_key(serial, self.keyring)
        return serial, serials
