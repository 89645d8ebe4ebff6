# SPDX-License-Identifier: GPL-2.0-only
"""Owners for GnuTLS objects that outlive one handshake.

GnuTLS keeps raw pointers to credentials, priorities and anti-replay state
without reference counting, so each lives in a Python object that a session
references for as long as it runs (credentials collected early crashed a
probe).  Everything here is built once and shared by many handshakes.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.levels import CIPHER_PRIORITY_NAMES, Cipher
from quichsd.tls.replay_store import ReplayStore, Verdict

GNUTLS_MIN_VERSION = "3.7.2"


class TlsSetupError(OSError):
    """Credentials or session parameters GnuTLS refused; DONE carries EIO."""

    def __init__(self, step: str, rc: int | None = None, code: int = errno.EIO) -> None:
        detail = f": {gnutls_strerror(rc)}" if rc is not None else ""
        super().__init__(code, f"{step}{detail}")
        self.step = step
        self.gnutls_rc = rc


def gnutls_strerror(rc: int) -> str:
    return f"{ffi.string(lib.gnutls_strerror(rc)).decode()} ({rc})"


def gnutls_version() -> str:
    return str(ffi.string(lib.gnutls_check_version(ffi.NULL)).decode())


def certificate_subject(der: bytes) -> str:
    """A DER certificate's subject as an RFC 4514 string, by GnuTLS (which the worker has
    loaded anyway): no second X.509 library in the daemon's processes."""
    holder = ffi.new("gnutls_x509_crt_t *")
    check(lib.gnutls_x509_crt_init(holder), "initialising a certificate")
    crt = ffi.gc(holder[0], lib.gnutls_x509_crt_deinit)
    check(lib.gnutls_x509_crt_import(crt, _datum(der), lib.GNUTLS_X509_FMT_DER), "parsing")
    dn = ffi.new("gnutls_datum_t *")
    check(lib.gnutls_x509_crt_get_dn3(crt, dn, 0), "reading the subject")
    try:
        return bytes(ffi.buffer(dn.data, dn.size)).decode(errors="replace")
    finally:
        lib.qd_free(dn.data)


def check(rc: int, step: str) -> int:
    if rc < 0:
        raise TlsSetupError(step, rc)
    return int(rc)


def _datum(data: bytes) -> Any:
    """A gnutls_datum_t over ``data``; the caller keeps ``data`` alive."""
    d = ffi.new("gnutls_datum_t *")
    d.data = ffi.from_buffer(data)
    d.size = len(data)
    return d


def _format(blob: bytes) -> int:
    pem = blob.lstrip().startswith(b"-----")
    return int(lib.GNUTLS_X509_FMT_PEM if pem else lib.GNUTLS_X509_FMT_DER)


_priority_cache: dict[tuple[int, tuple[str, ...], tuple[str, ...]], Any] = {}


def priority_for(
    cipher: int, groups: tuple[str, ...] = (), signatures: tuple[str, ...] = ()
) -> Any:
    """The QUIC priority cache for a payload cipher (0 = any), built once per process.

    TLS 1.3 only, middlebox compatibility mode off (RFC 9001 §8.4), PSK modes
    with and without (EC)DHE for resumption and external PSKs.  ``groups``
    (GnuTLS names such as ``SECP384R1``, in preference order) replaces
    GnuTLS's key-exchange groups: a client sends key shares for the first of
    them, a server asks for another with a HelloRetryRequest.  ``signatures``
    (GnuTLS names such as ``RSA-PSS-RSAE-SHA256``) likewise replaces the
    signature schemes, which a server also lists in its CertificateRequest.
    """
    key = (cipher, groups, signatures)
    cached = _priority_cache.get(key)
    if cached is not None:
        return cached
    names = CIPHER_PRIORITY_NAMES.get(cipher)
    if names is None:
        raise TlsSetupError(f"payload cipher {cipher} is not one of 0, 51..54", code=errno.EINVAL)
    group_text = "".join(":+GROUP-" + g for g in groups)
    text = (
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+PSK:-CIPHER-ALL:"
        + ":".join("+" + n for n in names)
        + (":-GROUP-ALL" + group_text if groups else "")
        + (":-SIGN-ALL" + "".join(":+SIGN-" + n for n in signatures) if signatures else "")
        + ":%DISABLE_TLS13_COMPAT_MODE"
    )
    holder = ffi.new("gnutls_priority_t *")
    rc = lib.gnutls_priority_init(holder, text.encode(), ffi.NULL)
    if rc < 0 and (groups or signatures):
        asked = ", ".join(groups + signatures)
        raise TlsSetupError(f"key-exchange groups or signatures {asked}", rc, code=errno.EINVAL)
    check(rc, f"priority {text!r}")
    cache = ffi.gc(holder[0], lib.gnutls_priority_deinit)
    _priority_cache[key] = cache
    return cache


class CertificateCredentials:
    """X.509 credentials: our chain and key (optional) and the trust anchors.

    Certificates and keys are PEM or DER bytes (the kernel keyring hands out DER).
    """

    kind = "certificate"

    def __init__(
        self,
        *,
        chain: bytes | None = None,
        key: bytes | None = None,
        trust: bytes | None = None,
        system_trust: bool = False,
        crl: bytes | None = None,
    ) -> None:
        holder = ffi.new("gnutls_certificate_credentials_t *")
        check(lib.gnutls_certificate_allocate_credentials(holder), "allocating credentials")
        self.ptr = ffi.gc(holder[0], lib.qd_certificate_free)
        self.has_key = chain is not None
        if (chain is None) != (key is None):
            raise TlsSetupError("a certificate needs its private key and vice versa")
        if chain is not None and key is not None:
            check(
                lib.gnutls_certificate_set_x509_key_mem2(
                    self.ptr, _datum(chain), _datum(key), _format(chain), ffi.NULL, 0
                ),
                "loading certificate and private key",
            )
            # Presented whenever a peer asks, whatever GnuTLS would pick (_glue.c).
            check(
                lib.qd_cert_attach(
                    self.ptr, _datum(chain), _format(chain), _datum(key), _format(key)
                ),
                "loading certificate and private key",
            )
        if trust is not None and check(self.add_trust(trust), "loading trust anchors") == 0:
            raise TlsSetupError("the trust store holds no certificate")
        if system_trust:
            check(lib.gnutls_certificate_set_x509_system_trust(self.ptr), "loading system trust")
        if crl is not None:
            check(self.add_crl(crl), "loading CRL")

    def add_trust(self, trust: bytes) -> int:
        """Adds the anchors in ``trust`` (PEM or DER): how many, or GnuTLS's error (< 0)."""
        return int(
            lib.gnutls_certificate_set_x509_trust_mem(self.ptr, _datum(trust), _format(trust))
        )

    def add_crl(self, crl: bytes) -> int:
        """Adds the CRLs in ``crl`` (PEM or DER): how many, or GnuTLS's error (< 0)."""
        return int(lib.gnutls_certificate_set_x509_crl_mem(self.ptr, _datum(crl), _format(crl)))


def _private_key(key: bytes) -> tuple[Any, str | None]:
    """``key`` (PEM/DER) as GnuTLS loads a configured key, or why it cannot."""
    holder = ffi.new("gnutls_privkey_t *")
    check(lib.gnutls_privkey_init(holder), "allocating a private key")
    privkey = ffi.gc(holder[0], lib.gnutls_privkey_deinit)
    rc = lib.gnutls_privkey_import_x509_raw(privkey, _datum(key), _format(key), ffi.NULL, 0)
    if rc < 0:
        return None, f"GnuTLS cannot load the key: {gnutls_strerror(rc)}"
    return privkey, None


def key_load_error(key: bytes) -> str | None:
    """Why GnuTLS cannot load ``key`` (PEM/DER, no password), or None if it can."""
    return _private_key(key)[1]


def sign_test(key: bytes, scheme: str) -> str | None:
    """Whether this GnuTLS signs with ``key`` (PEM/DER) under ``scheme`` (a GnuTLS
    name such as ``RSA-PSS-RSAE-SHA256``): None if it does, else why not."""
    algo = lib.gnutls_sign_get_id(scheme.encode())
    if algo <= 0:
        return f"this GnuTLS does not know the scheme {scheme}"
    privkey, why = _private_key(key)
    if why is not None:
        return why
    signature = ffi.new("gnutls_datum_t *")
    rc = lib.gnutls_privkey_sign_data2(privkey, algo, 0, _datum(b"quichsd check"), signature)
    if rc < 0:
        return gnutls_strerror(rc)
    lib.qd_free(signature.data)
    return None


#: The PSK hashes a client can name for its binders (RFC 8446 §4.2.11).
PSK_BINDER_MACS = {"sha256": "GNUTLS_MAC_SHA256", "sha384": "GNUTLS_MAC_SHA384"}


def psk_binder_hash_supported() -> bool:
    """False before GnuTLS 3.8.11, which computes every external PSK binder with SHA-256."""
    return bool(lib.qd_psk_binder_hash_supported())


class PskClientCredentials:
    """An external PSK a client offers: identity, raw key and, if known, the PSK's hash."""

    kind = "psk-client"

    def __init__(self, identity: bytes, key: bytes, binder_hash: str | None = None) -> None:
        if not identity or not key:
            raise TlsSetupError("a PSK needs a non-empty identity and key", code=errno.ENOKEY)
        mac = getattr(lib, PSK_BINDER_MACS[binder_hash]) if binder_hash else 0
        holder = ffi.new("gnutls_psk_client_credentials_t *")
        check(lib.qd_psk_allocate_client(holder, mac), "allocating PSK credentials")
        self.ptr = ffi.gc(holder[0], lib.gnutls_psk_free_client_credentials)
        self.identity = identity
        check(
            lib.gnutls_psk_set_client_credentials2(
                self.ptr, _datum(identity), _datum(key), lib.GNUTLS_PSK_KEY_RAW
            ),
            "setting PSK",
        )


PskLookup = Callable[[bytes], bytes | None]


class PskServerCredentials:
    """Server PSK credentials; keys are found per handshake by the engine's lookup."""

    kind = "psk-server"

    def __init__(self) -> None:
        holder = ffi.new("gnutls_psk_server_credentials_t *")
        check(lib.qd_psk_allocate_server(holder), "allocating PSK credentials")
        self.ptr = ffi.gc(holder[0], lib.gnutls_psk_free_server_credentials)
        lib.qd_set_psk_server_callback(self.ptr)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def qd_py_psk_lookup(handle: Any, identity: Any, identity_len: int, key_out: Any) -> int:
    lookup: PskLookup = ffi.from_handle(handle)
    try:
        key = lookup(bytes(ffi.buffer(identity, identity_len)))
    except Exception:  # a broken lookup fails the handshake (EIO), not the process
        return -2
    if not key:
        return -1
    return int(lib.qd_datum_set(key_out, key, len(key)))


def new_ticket_key() -> bytes:
    """A fresh 64-byte session-ticket encryption key in GnuTLS's format."""
    d = ffi.new("gnutls_datum_t *")
    check(lib.gnutls_session_ticket_key_generate(d), "generating a ticket key")
    try:
        return bytes(ffi.buffer(d.data, d.size))
    finally:
        lib.qd_free(d.data)


@contextlib.contextmanager
def keylog_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """While open, this process's TLS secrets go to ``path`` (NSS key log format).

    Only on request (``quichsd handshake --keylog``): every session quichsd opens
    replaces GnuTLS's own key-log function, which would follow SSLKEYLOGFILE,
    with one that writes here or nowhere (tls/_glue.c).  The file is created
    0600 and made 0600 if it existed; a symlink is refused.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        lib.qd_keylog_to(fd)
        yield
    finally:
        lib.qd_keylog_to(-1)
        os.close(fd)


class AntiReplay:
    """GnuTLS's 0-RTT replay guard over a ``ReplayStore`` (quichsd/tls/replay_store.py).

    GnuTLS checks the ClientHello's age against ``window_ms`` and asks us to
    remember each 0-RTT ClientHello it would accept until the window is over;
    anything but a fresh entry makes it refuse the early data (the handshake
    goes on as 1-RTT).  tlshd's store accepts everything.

    The daemon makes one with a shared store before it forks its workers
    (``share_anti_replay`` in quic/driver.py), so one object serves them all and
    every worker's copy of the GnuTLS object starts with the same recording
    time.  GnuTLS prefixes its key with that time, which each process later
    moves on by itself, so the store is keyed by the ClientHello's identifier
    alone, the part after the prefix.
    """

    #: GnuTLS's key: recording start (seconds, 8 bytes; nanoseconds, 4) + identifier.
    KEY_PREFIX = 12
    #: GnuTLS passes the expiry in whole seconds, truncated; one more keeps the entry
    #: until the last moment GnuTLS could still accept the same ClientHello.
    EXPIRY_SLACK = 1.0

    def __init__(
        self, window_ms: int = 10_000, capacity: int = 65_536, store: ReplayStore | None = None
    ) -> None:
        holder = ffi.new("gnutls_anti_replay_t *")
        check(lib.gnutls_anti_replay_init(holder), "anti-replay init")
        self.ptr = ffi.gc(holder[0], lib.gnutls_anti_replay_deinit)
        lib.gnutls_anti_replay_set_window(self.ptr, window_ms)
        self._handle = ffi.new_handle(self)
        lib.gnutls_anti_replay_set_ptr(self.ptr, self._handle)
        lib.gnutls_anti_replay_set_add_function(self.ptr, lib.qd_py_antireplay_add)
        self.store = store if store is not None else ReplayStore(capacity)
        #: This process's refusals: in all, and by verdict.
        self.refused = 0
        self.refusals: dict[Verdict, int] = dict.fromkeys(Verdict, 0)

    def add(self, key: bytes, expires: float) -> bool:
        """Records GnuTLS's ``key``; False refuses 0-RTT (a replay, a full or unreachable store)."""
        verdict = self.store.add(key[self.KEY_PREFIX :], expires + self.EXPIRY_SLACK)
        if verdict is Verdict.FRESH:
            return True
        self.refused += 1
        self.refusals[verdict] += 1
        return False


@ffi.def_extern()  # type: ignore[untyped-decorator]
def qd_py_antireplay_add(ptr: Any, expires: int, key: Any, data: Any) -> int:
    store: AntiReplay = ffi.from_handle(ptr)
    try:
        fresh = store.add(bytes(ffi.buffer(key.data, key.size)), float(expires))
    except Exception:  # a broken store refuses 0-RTT, not the handshake
        fresh = False
    return 0 if fresh else int(lib.GNUTLS_E_DB_ENTRY_EXISTS)


__all__ = [
    "GNUTLS_MIN_VERSION",
    "AntiReplay",
    "CertificateCredentials",
    "Cipher",
    "PskClientCredentials",
    "PskServerCredentials",
    "TlsSetupError",
    "gnutls_version",
    "keylog_to",
    "new_ticket_key",
    "priority_for",
]
