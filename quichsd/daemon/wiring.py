# SPDX-License-Identifier: GPL-2.0-only
"""What the daemon runs against: the kernel, or (tests and demos) the userspace models.

``serve()`` takes one ``Wiring``; the service, the pool, the fork server and each
worker get what they need of it as parameters, so nothing on the daemon's path
imports a model and no module global is replaced at run time.  ``KERNEL`` is the
only wiring ``quichsd serve`` uses; ``quichsd.userspace.serve`` builds the models'
(docs/ARCHITECTURE.md, "Who owns what").  The fork server is forked after
``serve()`` has its wiring, so every worker inherits these callables.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quichsd.daemon.dispatch import transport_of
from quichsd.netlink import HandshakeFamily

if TYPE_CHECKING:
    from quichsd.ktls.handshake import Installer
    from quichsd.ktls.install import InstallReport, KtlsMaterial, SockoptTarget
    from quichsd.quic.sockopt import QuicSocket


@dataclass(frozen=True)
class Wiring:
    #: A resolved and joined handshake family over the kernel's netlink or another
    #: channel (raises FamilyUnavailable without one).
    open_family: Callable[[], HandshakeFamily]
    #: A worker's received fd as a QUIC socket (closed by the worker).
    open_quic_socket: Callable[[int], QuicSocket]
    #: 'quic', 'tcp' or a description of what else the fd is (daemon/service.py).
    transport_of: Callable[[int], str]
    #: Hands a finished TCP session's keys to the kernel (ktls/install.py).
    install_ktls: Installer
    #: tlshd's process model (a process per request), for bench/daemon.py's comparison.
    fork_per_request: bool = False


def _open_kernel_family() -> HandshakeFamily:
    return HandshakeFamily.open_kernel(join=True)


def _open_kernel_socket(fd: int) -> QuicSocket:
    """A socket object over the worker's copy of the fd (closed by the caller)."""
    return socket.socket(fileno=fd)


def _install_ktls(sock: SockoptTarget, material: KtlsMaterial) -> InstallReport:
    # Imported in the worker (the fork server preloads it), never in the parent.
    from quichsd.ktls.install import install_ktls

    return install_ktls(sock, material)


KERNEL = Wiring(
    open_family=_open_kernel_family,
    open_quic_socket=_open_kernel_socket,
    transport_of=transport_of,
    install_ktls=_install_ktls,
)
