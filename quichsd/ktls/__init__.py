# SPDX-License-Identifier: GPL-2.0-only
"""TLS over TCP: the GnuTLS handshake on a kernel TCP socket, then kernel TLS (kTLS).

``run_tcp_handshake`` (``aio.py``, the asyncio shell) is the entry point;
``handshake.py`` runs the procedure in tlshd's order without waiting,
``session.py`` is the GnuTLS session on the fd, ``install.py``
hands the keys to the kernel, ``abi.py`` packs them, ``priority.py`` builds
the GnuTLS priorities tlshd uses on TCP.  ``python -m tests.support.ktls_selftest``
checks the whole path on a kernel that has kTLS.
"""

from quichsd.ktls.abi import CryptoInfo, KtlsCipher
from quichsd.ktls.aio import run_tcp_handshake
from quichsd.ktls.handshake import TcpHandshake, TcpHandshakeResult
from quichsd.ktls.install import InstallReport, KtlsInstallError, KtlsMaterial, install_ktls
from quichsd.ktls.session import TcpCompletion, TcpCredentials, TcpTlsSession

__all__ = [
    "CryptoInfo",
    "InstallReport",
    "KtlsCipher",
    "KtlsInstallError",
    "KtlsMaterial",
    "TcpCompletion",
    "TcpCredentials",
    "TcpHandshake",
    "TcpHandshakeResult",
    "TcpTlsSession",
    "install_ktls",
    "run_tcp_handshake",
]
