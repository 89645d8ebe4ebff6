# SPDX-License-Identifier: GPL-2.0-only
"""quichsd: a TLS handshake agent for Linux kernel sockets (QUIC and kTLS).

``quichsd.client_handshake`` / ``quichsd.server_handshake`` (and their
``_async`` forms) run a handshake on a QUIC socket you opened; see ``api``.
"""

from typing import Any

__version__ = "0.1.0"

_API = (
    "client_handshake",
    "server_handshake",
    "client_handshake_async",
    "server_handshake_async",
    "client_credentials",
    "server_credentials",
)


def __getattr__(name: str) -> Any:
    # Lazy: `import quichsd` for the version alone should not load GnuTLS.
    if name in _API:
        from quichsd import api

        return getattr(api, name)
    raise AttributeError(f"module 'quichsd' has no attribute {name!r}")
