"""The Python entry points for people who open QUIC sockets themselves.

They mirror libquic's ``quic_client_handshake()`` / ``quic_server_handshake()``:
give a connected (client) or accepted (server) IPPROTO_QUIC socket — or the
userspace model's — plus files, get a ``HandshakeResult``.  The socket's own
ALPN list, QUIC config (cipher, ticket wait, certificate request) and session
ticket are honoured exactly as the daemon honours them.
"""

from __future__ import annotations

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
    """Reads ``identity:hexkey`` (the first non-comment line), as libquic's PSK files."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, hexkey = line.partition(":")
        if not sep or not identity:
            break
        return identity.encode(), bytes.fromhex(hexkey.strip())
    raise ValueError(f"{path}: expected a line 'identity:hexkey'")


def client_credentials(
    *,
    cafile: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    psk: tuple[bytes, bytes] | None = None,
    peer_name: str | None = None,
    verify: bool = True,
) -> Credentials:
    """PSK if ``psk`` is given; X.509 if we have a certificate; else UNAUTH (still verifying)."""
    if psk is not None:
        return Credentials(AuthMode.PSK, psk=PskClientCredentials(*psk))
    certificates = CertificateCredentials(
        chain=_read(certfile),
        key=_read(keyfile),
        trust=_read(cafile),
        system_trust=cafile is None and verify,
    )
    auth = AuthMode.X509 if certfile is not None else AuthMode.UNAUTH
    return Credentials(auth, certificates=certificates, peer_name=peer_name, verify_peer=verify)


def server_credentials(
    *,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    cafile: str | Path | None = None,
    psk_lookup: PskLookup | None = None,
) -> Credentials:
    """PSK if ``psk_lookup`` is given, else X.509 with our certificate and key."""
    if psk_lookup is not None:
        return Credentials(AuthMode.PSK, psk_lookup=psk_lookup)
    certificates = CertificateCredentials(
        chain=_read(certfile), key=_read(keyfile), trust=_read(cafile)
    )
    return Credentials(AuthMode.X509, certificates=certificates)


def client_handshake(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    """Runs the client handshake on a connected QUIC socket, blocking."""
    return run_handshake(sock, Role.CLIENT, credentials, timeout)


def server_handshake(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    """Runs the server handshake on an accepted QUIC socket, blocking."""
    return run_handshake(sock, Role.SERVER, credentials, timeout)


async def client_handshake_async(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    return await run_handshake_async(sock, Role.CLIENT, credentials, timeout)


async def server_handshake_async(
    sock: QuicSocket, credentials: Credentials, timeout: float = DEFAULT_TIMEOUT
) -> HandshakeResult:
    return await run_handshake_async(sock, Role.SERVER, credentials, timeout)
