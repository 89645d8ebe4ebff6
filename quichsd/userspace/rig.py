# SPDX-License-Identifier: GPL-2.0-only
"""The real daemon on the models: a rig for ``quichsd demo --daemon``, tests and benchmarks.

``DaemonRig`` plays the kernel and its consumers around an unmodified daemon:

* a ``FamilyModel`` (the handshake netlink family) on a UNIX address in a
  private temporary directory, with the configuration file;
* the daemon process (``daemon_process.DaemonProcess``);
* the consumers (``consumer.Consumer``): requests on model QUIC sockets,
  and the invariant that every ACCEPT got exactly one DONE.

Every wait is bounded; ``close()`` (or leaving the ``with`` block) ends the
daemon (SIGKILL to its process group as a last resort), the family model, the
sockets and the peer keys the daemon added, also when a test fails.  Everything
is on 127.0.0.1.  The tests' rig adds keyring helpers (tests/support/rig.py).

Use::

    rig = DaemonRig()
    rig.write_config(config_text(client={"x509.truststore": ca_path},
                                 status_socket=rig.status_socket))
    with rig:
        request = rig.client_request(("127.0.0.1", port), "x509",
                                     peername="server.example")
        assert request.handle.wait(10).status == 0   # an ESTABLISHED model socket
        rig.check_invariants()
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from quichsd.userspace.consumer import AUTH_MODES, Consumer, Counts, Request
from quichsd.userspace.daemon_process import (
    DAEMON_ENTRY,
    DEFAULT_WAIT,
    DaemonExited,
    DaemonProcess,
    config_text,
    run_daemon_once,
)
from quichsd.userspace.family import FamilyModel

__all__ = [
    "AUTH_MODES",
    "Counts",
    "DaemonExited",
    "DaemonRig",
    "Request",
    "config_text",
    "run_daemon_once",
]


class DaemonRig(DaemonProcess, Consumer):
    """A FamilyModel, a config file, the real daemon and its consumers; see the module doc."""

    def __init__(
        self,
        config: str | None = None,
        *,
        family_present: bool = True,
        pending_max: int = 50,
        supports_remote_auth: bool = True,
        wait: float = DEFAULT_WAIT,
        daemon_args: Sequence[str] = (),
        entry: Sequence[str] = DAEMON_ENTRY,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="quichsd-rig-")
        directory = Path(self._tmp.name)
        family = FamilyModel(
            address=str(directory / "handshake.sock"),
            family_present=family_present,
            pending_max=pending_max,
            supports_remote_auth=supports_remote_auth,
        )
        DaemonProcess.__init__(
            self, family, directory, config, wait=wait, daemon_args=daemon_args, entry=entry
        )
        Consumer.__init__(self, family, wait=wait)
        self._family_started = False
        self._closed = False

    def start(self) -> Self:
        """Starts the family model and the daemon; returns once it joined and forked workers."""
        try:
            self.start_family()
            self.start_daemon()
        except BaseException:
            self.close()
            raise
        return self

    def start_family(self) -> None:
        if not self._family_started:
            self.family.start()
            self._family_started = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ends everything the rig started; safe to call twice and after failures."""
        if self._closed:
            return
        self._closed = True
        try:
            self.close_requests()
            self.stop_daemon()
        finally:
            if self._family_started:
                self.family.stop()
            self.forget_peer_keys()
            self.wait_exports_stopped()
            self._tmp.cleanup()

    def worker_holding(self, request: Request, timeout: float | None = None) -> int:
        """The pid of the worker that holds ``request``'s socket (waits until one does)."""
        return self.worker_holding_inode(self.exported_inode(request), timeout)

    def _diagnostics(self) -> str:
        return f"\ndaemon log:\n{self.log()[-4000:]}"
