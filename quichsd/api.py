# SPDX-License-Identifier: GPL-2.0-only
"""The Python entry points for people who open QUIC sockets themselves.

They mirror libquic's ``quic_client_handshake()`` / ``quic_server_handshake()``:
give a connected (client) or accepted (server) IPPROTO_QUIC socket — or the
userspace model's — plus files, get a ``HandshakeResult``.  The socket's own
ALPN list, QUIC config (cipher, ticket wait, certificate request) and session
ticket are honoured exactly as the daemon honours them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quichsd.quic.aio import run_handshake_async
from quichsd.quic.blocking import run_handshake
from quichsd.quic.driver import Credentials, HandshakeResult
from quichsd.quic.sockopt import QuicSocket
from quichsd.tls import AuthMode, CertificateCredentials, PskClientCredentials, Role
from quichsd.tls.binding import PskLookup

DEFAULT_TIMEOUT = 30.0


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def load_psk_file(path: str | Path) -> tuple[bytes, bytes]:
    """Reads ``identity:hexkey`` (the first line that is not blank or a comment), as libquic.

    A bad file is a ValueError naming the file and line (``psk.txt:1: the key
    is not hex``); OSError when it cannot be read.
    """
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (expected 'identity:hexkey')") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        identity, sep, hexkey = line.partition(":")
        hexkey = hexkey.strip()
        if not sep:
            raise ValueError(f"{where}: expected 'identity:hexkey' (no ':' in the line)")
        if not identity:
            raise ValueError(f"{where}: the identity before ':' is empty")
        if not hexkey:
            raise ValueError(f"{where}: the key after ':' is empty")
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise ValueError(f"{where}: the key is not hex") from None
        return identity.encode(), key
    raise ValueError(f"{path}: no 'identity:hexkey' line, only blank lines and comments")


def client_credentials(
    *,
    cafile: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    psk: tuple[bytes, bytes] | None = None,
    peer_name: str | None = None,
    verify: bool = True,
    groups: Sequence[str] = (),
) -> Credentials:
    """PSK if ``psk`` is given; X.509 if we have a certificate; else UNAUTH (still verifying).

    ``groups``: key-exchange groups (GnuTLS names) in preference order; default GnuTLS's.
    """
    if psk is not None:
        return Credentials(AuthMode.PSK, psk=PskClientCredentials(*psk), groups=tuple(groups))
    certificates = CertificateCredentials(
        chain=_read(certfile),
        key=_read(keyfile),
        trust=_read(cafile),
        system_trust=cafile is None and verify,
    )
    auth = AuthMode.X509 if certfile is not None else AuthMode.UNAUTH
    return Credentials(
        auth,
        certificates=certificates,
        peer_name=peer_name,
        verify_peer=verify,
        groups=tuple(groups),
    )


def server_credentials(
    *,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    cafile: str | Path | None = None,
    psk_lookup: PskLookup | None = None,
    groups: Sequence[str] = (),
) -> Credentials:
    """PSK if ``psk_lookup`` is given, else X.509 with our certificate and key."""
    if psk_lookup is not None:
        return Credentials(AuthMode.PSK, psk_lookup=psk_lookup, groups=tuple(groups))
    certificates = CertificateCredentials(
        chain=_read(certfile), key=_read(keyfile), trust=_read(cafile)
    )
    return Credentials(AuthMode.X509, certificates=certificates, groups=tuple(groups))


def client_handshake(
    sock: QuicSocket,
    credentials: Credentials,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    confirm_wait: float = 0.0,
) -> HandshakeResult:
    """Runs the client handshake on a connected QUIC socket, blocking.

    ``confirm_wait`` > 0: after our side completes, wait up to that long for the
    server to confirm (its ticket or NEW_TOKEN) before returning, and fail with
    the server's reason if it closes the connection meanwhile; for callers that
    close the socket right after (without it, the server may still be finishing).
    """
    return run_handshake(sock, Role.CLIENT, credentials, timeout, confirm_wait=confirm_wait)


def server_handshake(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    """Runs the server handshake on an accepted QUIC socket, blocking."""
    return run_handshake(sock, Role.SERVER, credentials, timeout)


async def client_handshake_async(
    sock: QuicSocket,
    credentials: Credentials,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    confirm_wait: float = 0.0,
) -> HandshakeResult:
    """``client_handshake`` on asyncio's loop."""
    return await run_handshake_async(
        sock, Role.CLIENT, credentials, timeout, confirm_wait=confirm_wait
    )


async def server_handshake_async(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    return await run_handshake_async(sock, Role.SERVER, credentials, timeout)
