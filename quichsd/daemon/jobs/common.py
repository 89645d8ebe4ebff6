# SPDX-License-Identifier: GPL-2.0-only
"""What the QUIC and the TCP jobs share: credentials, the peer's address, the Outcome.

Authentication material comes from the kernel keyring serials in the request,
else from the configuration files, as tlshd does (docs/tlshd-compat.md §CREDENTIALS).
Peer identities for DONE follow tlshd (docs/kernel-abi.md §REMOTE-AUTH).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Protocol, TypeVar

from quichsd.daemon import keyring
from quichsd.daemon.dispatch import JobRefused
from quichsd.daemon.identities import peer_subject, remote_auth
from quichsd.daemon.protocol import Job, Outcome
from quichsd.quic.driver import Credentials
from quichsd.tls import AuthMode, CertificateCredentials, PskClientCredentials, Role
from quichsd.tls.binding import TlsSetupError
from quichsd.tls.levels import Cipher

#: One entry per kind of credentials (role, own chain or not): (the configuration
#: generation and file state they were built from, the credentials).  A reload or a
#: renewed file replaces the entry instead of adding one, so the cache stays bounded.
_credential_cache: dict[tuple[object, ...], tuple[tuple[object, ...], CertificateCredentials]] = {}


def _read_file(path: Path | str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise JobRefused(errno.ENOKEY, f"reading {what} {path}: {exc.strerror}") from None


def _read_serial(serial: int, what: str) -> bytes:
    try:
        return keyring.read_key(serial)
    except keyring.KeyringError as exc:
        raise JobRefused(errno.ENOKEY, f"{what} key {serial:#x}: {exc.strerror}") from None


def _stamp(path: Path | str | None) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced: (inode, size, mtime)."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def certificate_credentials(
    job: Job, *, need_own: bool, own: bool = True
) -> CertificateCredentials:
    """Trust anchors, plus our own chain and key unless ``own`` is False (an anonymous
    client: tlshd's UNAUTH client presents no certificate, even when one is configured)."""
    files = job.x509
    # tlshd reads the files at every handshake, so a renewed certificate written under the
    # same path counts at once: the cache is keyed on the files' state too, not just on
    # the configuration generation (which only changes with the paths, on reload).
    stamps = tuple(_stamp(getattr(files, f.name)) for f in fields(files))
    slot = (job.role, need_own, own)
    state = (job.generation, job.private_key, stamps)
    cached = _credential_cache.get(slot) if not job.certificate else None
    if cached is not None and cached[0] == state:
        return cached[1]
    chain = key = None
    if own:
        chain = (
            _read_serial(job.certificate, "certificate")
            if job.certificate
            else _read_file(files.certificate, "certificate")
        )
        key = (
            _read_serial(job.private_key, "private key")
            if job.private_key
            else _read_file(files.private_key, "private key")
        )
    if need_own and (chain is None or key is None):
        raise JobRefused(errno.ENOKEY, f"{job.role}: no certificate and private key configured")
    trust_path = files.truststore
    trust = (
        _read_file(trust_path, "trust store") if trust_path and Path(trust_path).exists() else None
    )
    try:
        creds = CertificateCredentials(
            chain=chain if key is not None else None,
            key=key if chain is not None else None,
            trust=trust,
            system_trust=trust is None,
            crl=_read_file(files.crl, "CRL"),
        )
    except TlsSetupError as exc:
        raise JobRefused(errno.EIO, f"{job.role} credentials: {exc.strerror}") from None
    if not job.certificate:
        _credential_cache[slot] = (state, creds)
    return creds


def build_credentials(job: Job, peer_address: str | None) -> tuple[Credentials, list[int]]:
    """The handshake's credentials, and (for PSK) the serial that will identify the peer."""
    auth = job.auth_mode
    if auth is AuthMode.UNSPEC:
        raise JobRefused(errno.EINVAL, f"unknown auth mode {int(auth)}")
    server = job.role is Role.SERVER
    # Without a PEERNAME, verify against the address we are connected to (an IP SAN);
    # tlshd falls back to reverse DNS, which an attacker on the path can answer.
    name = job.peername or peer_address
    used_psk: list[int] = []
    if auth is AuthMode.PSK:
        if server:

            # GnuTLS >= 3.8.11 asks once per binder hash the client's PSK may use (two
            # keyring searches for the same identity): the first answer is kept for the
            # request's handshake (tests/test_ktls_job.py counts the searches).
            answers: dict[bytes, tuple[int, bytes] | None] = {}

            def lookup(identity: bytes) -> bytes | None:
                if identity in answers:
                    found = answers[identity]
                else:
                    # Called in a handshake step, which does not await: see keyring.possessing.
                    with keyring.possessing(job.keyring):
                        found = answers[identity] = keyring.find_psk(identity, job.keyring)
                if found is None:
                    return None
                used_psk[:] = [found[0]]
                return found[1]

            return Credentials(auth, psk_lookup=lookup), used_psk
        if not job.peer_identities:
            raise JobRefused(errno.ENOKEY, "PSK client request without a peer identity")
        serial = job.peer_identities[0]
        try:
            identity = keyring.psk_identity(serial)
        except keyring.KeyringError as exc:
            raise JobRefused(errno.ENOKEY, f"PSK key {serial:#x}: {exc.strerror}") from None
        psk = PskClientCredentials(identity, _read_serial(serial, "PSK"))
        return Credentials(auth, psk=psk), [serial]
    if server and auth is AuthMode.UNAUTH:
        raise JobRefused(errno.EIO, "an unauthenticated server handshake is not supported")
    # An UNAUTH client (NFS xprtsec=tls) does not authenticate itself: sending the configured
    # client certificate anyway would make knfsd mark the transport peer-authenticated.
    creds = certificate_credentials(job, need_own=server, own=server or auth is AuthMode.X509)
    return Credentials(auth, certificates=creds, peer_name=name), used_psk


def peer_address(sock: object) -> str | None:
    """The IP address the request's socket is connected to, if it says."""
    getpeername = getattr(sock, "getpeername", None)
    if getpeername is None:
        return None
    try:
        address = getpeername()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else None


_Built = TypeVar("_Built")


def job_credentials(job: Job, sock: object, build: Callable[[Job, str | None], _Built]) -> _Built:
    """``build(job, the peer's address)``, with the request's keyring possessed only
    while it runs (keyring.possessing)."""
    with keyring.possessing(job.keyring):
        return build(job, peer_address(sock))


def refused(job: Job, exc: JobRefused | keyring.KeyringError) -> Outcome:
    """The Outcome of a job that ended before its handshake could run."""
    code = exc.errno if isinstance(exc, JobRefused) else errno.ENOKEY
    return Outcome(job.request_id, code, reason=str(exc))


class Ended(Protocol):
    """How either transport's handshake ended (``HandshakeResult``, ``TcpHandshakeResult``)."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def duration(self) -> float: ...


class Negotiated(Protocol):
    """What either transport's finished handshake says about the session and the peer."""

    @property
    def cipher(self) -> int: ...

    @property
    def peer_certificates(self) -> tuple[bytes, ...]: ...

    @property
    def psk_identity(self) -> bytes | None: ...


def finished(
    job: Job,
    used_psk: list[int],
    result: Ended,
    done: Negotiated | None,
    *,
    alpn: bytes | None = None,
    resumed: bool = False,
) -> Outcome:
    """The Outcome of a handshake that ran: REMOTE_AUTH only on success."""
    return Outcome(
        request_id=job.request_id,
        status=result.status,
        remote_auth=remote_auth(job, done.peer_certificates, used_psk)
        if done and result.status == 0
        else (),
        reason=result.reason,
        cipher=Cipher(done.cipher) if done else Cipher.ANY,
        alpn=alpn.decode(errors="replace") if alpn else None,
        peer=peer_subject(done.peer_certificates, done.psk_identity) if done else None,
        resumed=resumed,
        duration=result.duration,
    )
