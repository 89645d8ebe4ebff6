# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check``: can this machine run the daemon with this configuration?

Each check gives ✓ (fine), ! (works, but read the note) or ✗ (the daemon
cannot do its job), with the fix for everything not ✓.  Exit status 0 when
nothing is ✗, 1 otherwise, so scripts and packaging hooks can use it.

What is checked, in order: the kernel's handshake netlink family and
CAP_NET_ADMIN (ACCEPT needs it); the transports (the QUIC module, kTLS);
GnuTLS (version, and the binding with its QUIC hooks); the keyrings; the
configuration file; and for each side's certificate, key, trust store and
CRL: readable, parsable, key matching certificate, within its validity,
chained to a trust anchor.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import inspect
import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from quichsd.daemon import keyring
from quichsd.daemon.config import ConfigError, DaemonConfig, X509Files, load_config
from quichsd.daemon.privilege import CAP_NET_ADMIN
from quichsd.ktls.abi import TCP_ULP
from quichsd.quic.abi import IPPROTO_QUIC

State = Literal["ok", "warn", "fail"]

SYSTEM_TRUST = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/ca-bundle.pem"),  # openSUSE
)
#: A certificate expiring sooner than this is a warning.
EXPIRY_WARNING = datetime.timedelta(days=14)
MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_MARKS = {"ok": "ok", "warn": "!!", "fail": "XX"}


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str
    fix: str = ""


@dataclass
class Environment:
    """Where the checks look; tests point these elsewhere."""

    open_family: Callable[[], Any] | None = None
    proc_status: Path = Path("/proc/self/status")
    proc_keys: Path = Path("/proc/keys")
    tls_stat: Path = Path("/proc/net/tls_stat")
    system_trust: Sequence[Path] = SYSTEM_TRUST
    now: Callable[[], datetime.datetime] = field(
        default=lambda: datetime.datetime.now(datetime.UTC)
    )


# -- kernel ---------------------------------------------------------------------------------


def check_family(env: Environment) -> Check:
    name = "handshake netlink family"
    from quichsd.netlink import FamilyUnavailable, HandshakeFamily

    opener = env.open_family or (lambda: HandshakeFamily.open_kernel(join=False))
    try:
        family = opener()
    except FamilyUnavailable:
        return Check(
            name,
            "fail",
            "the kernel has no 'handshake' generic netlink family",
            "boot Linux >= 6.5 built with CONFIG_NET_HANDSHAKE (net/handshake)",
        )
    except OSError as exc:
        return Check(name, "fail", f"cannot ask the kernel: {exc}", "check netlink access")
    with contextlib.closing(family):
        groups = sorted(getattr(family, "groups", {}) or {})
        family_id = getattr(family, "family_id", None)
    if "tlshd" not in groups:
        return Check(
            name,
            "fail",
            f"family present but without the 'tlshd' group (groups: {groups})",
            "use a kernel whose net/handshake has the tlshd handler class",
        )
    return Check(name, "ok", f"present (id {family_id:#x}, group tlshd)")


def _capabilities(proc_status: Path) -> int | None:
    try:
        for line in proc_status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_cap_net_admin(env: Environment) -> Check:
    name = "CAP_NET_ADMIN"
    caps = _capabilities(env.proc_status)
    if caps is None:
        return Check(name, "fail", f"cannot read CapEff from {env.proc_status}", "mount /proc")
    if caps >> CAP_NET_ADMIN & 1:
        return Check(name, "ok", "held (ACCEPT and DONE need it)")
    return Check(
        name,
        "fail",
        "not held: the kernel refuses ACCEPT with EPERM",
        "run as root (the systemd unit keeps CAP_NET_ADMIN in its bounding set)",
    )


def _quic_available() -> tuple[bool, str]:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EPROTOTYPE):
            return False, "no QUIC module: socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC) failed"
        return False, f"socket(IPPROTO_QUIC): {exc.strerror}"
    sock.close()
    return True, "IPPROTO_QUIC sockets available"


def _ktls_available(tls_stat: Path) -> tuple[bool, str]:
    if tls_stat.exists():
        return True, f"tls module loaded ({tls_stat})"
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            client = stack.enter_context(socket.create_connection(server.getsockname(), 2))
            accepted, _ = server.accept()
            stack.enter_context(accepted)
            client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False, "no kTLS: TCP_ULP 'tls' is unknown to this kernel"
            return False, f"kTLS probe on loopback failed: {exc.strerror}"
    return True, "TCP_ULP 'tls' accepted on a loopback connection"


def served_transports() -> frozenset[str]:
    """The transports the daemon answers requests for (HandshakeService's default)."""
    from quichsd.daemon.service import HandshakeService

    default = inspect.signature(HandshakeService).parameters["served_transports"].default
    return frozenset(default) if isinstance(default, frozenset) else frozenset({"quic"})


def check_transports(env: Environment) -> list[Check]:
    """QUIC and kTLS; one that the daemon serves is ✗ only if no served one works."""
    served = served_transports()
    quic_ok, quic_detail = _quic_available()
    ktls_ok, ktls_detail = _ktls_available(env.tls_stat)
    available = {"quic": quic_ok, "tcp": ktls_ok}
    any_served = any(available.get(t, False) for t in served)
    out = []
    for transport, name, ok, detail, fix in (
        (
            "quic",
            "QUIC (IPPROTO_QUIC)",
            quic_ok,
            quic_detail,
            "modprobe quic (the Linux QUIC module)",
        ),
        ("tcp", "kTLS (TLS over TCP)", ktls_ok, ktls_detail, "modprobe tls (CONFIG_TLS)"),
    ):
        if ok:
            out.append(Check(name, "ok", detail))
            continue
        if transport not in served:
            note = f"{detail}; quichsd does not serve {transport} requests (tlshd does)"
            out.append(Check(name, "warn", note, fix))
        elif any_served:
            out.append(Check(name, "warn", f"{detail}; its requests will fail", fix))
        else:
            out.append(Check(name, "fail", f"{detail}; nothing left to serve", fix))
    return out


# -- GnuTLS -----------------------------------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_gnutls() -> Check:
    name = "GnuTLS"
    try:
        from quichsd.tls import binding
        from quichsd.tls._gnutls import lib
    except ImportError as exc:
        return Check(
            name,
            "fail",
            f"the GnuTLS binding does not import: {exc}",
            "rebuild it: apt-get install libgnutls28-dev pkg-config gcc; pip install .",
        )
    version = binding.gnutls_version()
    minimum = binding.GNUTLS_MIN_VERSION
    if _version_tuple(version) < _version_tuple(minimum):
        return Check(
            name,
            "fail",
            f"{version} is older than {minimum} (no QUIC hooks)",
            f"install GnuTLS >= {minimum}",
        )
    hooks = [symbol for symbol in ("qd_session_attach", "qd_step") if not hasattr(lib, symbol)]
    if hooks:
        return Check(name, "fail", f"binding lacks {hooks}", "rebuild quichsd (pip install .)")
    return Check(name, "ok", f"{version} (>= {minimum}), QUIC hooks in the binding")


def check_psk_binders() -> Check:
    """A warning, not a failure: SHA-256 PSKs and certificates are unaffected."""
    from quichsd.tls import binding

    name = "SHA-384 PSKs"
    if binding.psk_binder_hash_supported():
        return Check(name, "ok", "PSK binders use the PSK's own hash")
    return Check(
        name,
        "warn",
        f"GnuTLS {binding.gnutls_version()} computes every PSK binder with SHA-256: NVMe keys "
        "with hash 02 (NVMe0R02 ...) work only against peers that do the same",
        "GnuTLS >= 3.8.11, then rebuild quichsd (pip install .)",
    )


# -- keyrings ---------------------------------------------------------------------------------


def check_keyrings(env: Environment, config: DaemonConfig | None) -> list[Check]:
    try:
        env.proc_keys.read_text()
    except OSError as exc:
        return [
            Check(
                "keyrings",
                "fail",
                f"cannot read {env.proc_keys}: {exc.strerror}",
                "use a kernel with CONFIG_KEYS (and /proc mounted)",
            )
        ]
    found = {name: keyring.find_keyring(name, env.proc_keys) for name in keyring.CONSUMER_KEYRINGS}
    present = [f"{name} {serial:#x}" for name, serial in found.items() if serial is not None]
    absent = [name for name, serial in found.items() if serial is None]
    detail = ", ".join([*present, *(f"{name} not loaded" for name in absent)])
    out = [Check("keyrings", "ok", f"{env.proc_keys} readable; {detail}")]
    for name in config.keyrings if config else ():
        serial = keyring.find_keyring(name, env.proc_keys)
        if serial is None:
            out.append(
                Check(
                    f"keyring {name}",
                    "warn",
                    "configured in [authenticate] keyrings but not found",
                    "create it (keyctl newring) or remove it from the configuration",
                )
            )
        else:
            out.append(Check(f"keyring {name}", "ok", f"present ({serial:#x})"))
    return out


# -- configuration ----------------------------------------------------------------------------


def check_config(path: Path | None) -> tuple[list[Check], DaemonConfig | None]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [
            Check("configuration", "fail", str(exc), "fix the file (see quichsd.conf(5))")
        ], None
    where = str(config.path) if config.path else "defaults"
    out = [Check("configuration", "ok", f"{where} loads")]
    out += [
        Check("configuration", "warn", warning, "remove or correct the line")
        for warning in config.warnings
    ]
    return out, config


# -- certificates -----------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _load_certificates(data: bytes, notes: list[str] | None = None) -> list[x509.Certificate]:
    """Parses PEM or DER; what the parser warns about goes to ``notes``, not stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    if notes is not None:
        notes += [_warning_text(w.message) for w in caught]
    return certs


def _warning_text(message: Warning | str) -> str:
    text = str(message)
    if "serial number" in text and ("negative" in text or "positive" in text):
        return "has a negative serial number (RFC 5280 §4.1.2.2 forbids it; strict peers refuse it)"
    return text.rstrip(".")


def _load_key(data: bytes) -> Any:
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password=None)
    return serialization.load_der_private_key(data, password=None)


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value!s}" if names else cert.subject.rfc4514_string() or "(no subject)"


def _trusted(
    paths: Iterable[Path],
) -> tuple[list[x509.Certificate], list[str]]:
    anchors: list[x509.Certificate] = []
    used = []
    for path in dict.fromkeys(paths):
        try:
            anchors += _load_certificates(_read(path), [])
            used.append(str(path))
        except (OSError, ValueError):
            continue
    return anchors, used


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, and key types it cannot check
        return False
    return True


def chain_to_anchor(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> tuple[bool, str]:
    """Whether ``leaf`` chains to an anchor through ``intermediates`` (all valid ``now``)."""
    anchor_prints = {a.fingerprint(hashes.SHA256()) for a in anchors}
    current = leaf
    seen = 0
    while seen <= len(intermediates):
        for anchor in anchors:
            if _issued_by(current, anchor):
                if not _valid_at(anchor, now):
                    return False, f"trust anchor {_subject(anchor)} is not valid now"
                return True, f"chains to {_subject(anchor)}"
        if current.issuer == current.subject:
            if current.fingerprint(hashes.SHA256()) in anchor_prints:
                return True, f"{_subject(current)} is itself trusted"
            return False, f"ends at {_subject(current)}, a root nobody here trusts"
        nxt = next((c for c in intermediates if _issued_by(current, c)), None)
        if nxt is None:
            return (
                False,
                f"no issuer found for {_subject(current)} "
                f"(issuer {current.issuer.rfc4514_string()})",
            )
        if not _valid_at(nxt, now):
            return False, f"intermediate {_subject(nxt)} is not valid now"
        current = nxt
        seen += 1
    return False, "the chain loops"


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _check_trust_file(label: str, path: Path) -> Check:
    notes: list[str] = []
    try:
        certs = _load_certificates(_read(path), notes)
    except OSError as exc:
        return Check(label, "fail", f"{path}: {exc.strerror}", "fix the path or the permissions")
    except ValueError as exc:
        return Check(label, "fail", f"{path}: not PEM/DER certificates ({exc})", "replace it")
    if not certs:
        return Check(label, "fail", f"{path}: no certificates", "put the trusted CAs in it")
    counted = f"{path}: {len(certs)} certificate{'s' * (len(certs) != 1)}"
    if notes:
        return Check(label, "warn", f"{counted}; one {notes[0]}", "replace that certificate")
    return Check(label, "ok", counted)


def _check_crl(label: str, path: Path) -> Check:
    try:
        data = _read(path)
        if b"-----BEGIN" in data:
            x509.load_pem_x509_crl(data)
        else:
            x509.load_der_x509_crl(data)
    except OSError as exc:
        return Check(label, "fail", f"{path}: {exc.strerror}", "fix the path or the permissions")
    except ValueError as exc:
        return Check(label, "fail", f"{path}: not a CRL ({exc})", "replace it")
    return Check(label, "ok", f"{path}: readable")


def check_side(
    side: str, files: X509Files, env: Environment, other_trust: Path | None = None
) -> list[Check]:
    """[authenticate.<side>]: trust store, CRL, certificate and key.

    ``other_trust`` is the other side's trust store: our certificate is checked
    by peers, so a CA that only the other section lists still counts.
    """
    prefix = f"{side}"
    out: list[Check] = []
    if files.truststore is not None:
        out.append(_check_trust_file(f"{prefix} trust store", files.truststore))
    if files.crl is not None:
        out.append(_check_crl(f"{prefix} CRL", files.crl))
    for cert_path, key_ref, label in (
        (files.certificate, files.private_key, f"{prefix} certificate"),
        (files.pq_certificate, files.pq_private_key, f"{prefix} PQ certificate"),
    ):
        if cert_path is None and key_ref is None:
            continue
        out += _check_pair(label, cert_path, key_ref, files.truststore, env, other_trust)
    return out


def _check_pair(
    label: str,
    cert_path: Path | None,
    key_ref: str | None,
    truststore: Path | None,
    env: Environment,
    other_trust: Path | None = None,
) -> list[Check]:
    if cert_path is None or key_ref is None:
        missing = "x509.private_key" if cert_path is not None else "x509.certificate"
        return [Check(label, "fail", f"{missing} is not set", f"set {missing} too, or neither")]
    notes: list[str] = []
    try:
        chain = _load_certificates(_read(cert_path), notes)
    except OSError as exc:
        return [Check(label, "fail", f"{cert_path}: {exc.strerror}", "fix the path or permissions")]
    except ValueError as exc:
        return [Check(label, "fail", f"{cert_path}: not a certificate ({exc})", "replace it")]
    if not chain:
        return [Check(label, "fail", f"{cert_path}: no certificate in it", "replace it")]
    leaf = chain[0]
    out: list[Check] = []
    now = env.now()
    subject = _subject(leaf)
    # Validity.
    if now < leaf.not_valid_before_utc:
        out.append(
            Check(
                label,
                "fail",
                f"{subject} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                "check the clock, or install a certificate valid now",
            )
        )
    elif now > leaf.not_valid_after_utc:
        out.append(
            Check(
                label,
                "fail",
                f"{subject} expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
                "renew the certificate",
            )
        )
    else:
        left = leaf.not_valid_after_utc - now
        state: State = "warn" if left < EXPIRY_WARNING else "ok"
        out.append(
            Check(
                label,
                state,
                f"{subject}, valid until {leaf.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
                "renew it soon" if state == "warn" else "",
            )
        )
    out += [Check(label, "warn", f"{subject} {note}", "issue a new certificate") for note in notes]
    # Key.
    key_label = label.replace("certificate", "private key")
    if ":" in key_ref and not key_ref.startswith("/"):
        out.append(
            Check(key_label, "warn", f"{key_ref.split(':', 1)[0]}: URL not checked here", "")
        )
    else:
        key_path = Path(key_ref)
        try:
            key = _load_key(_read(key_path))
        except OSError as exc:
            out.append(
                Check(key_label, "fail", f"{key_path}: {exc.strerror}", "fix path or permissions")
            )
        except (ValueError, TypeError) as exc:
            out.append(
                Check(
                    key_label,
                    "fail",
                    f"{key_path}: not an unencrypted private key ({exc})",
                    "store the key unencrypted (PEM or DER, PKCS#8 or traditional)",
                )
            )
        else:
            if _public_der(key.public_key()) == _public_der(leaf.public_key()):
                out.append(Check(key_label, "ok", f"{key_path} matches the certificate"))
                out.append(_check_signing(label.replace("certificate", "signing"), key_path))
            else:
                out.append(
                    Check(
                        key_label,
                        "fail",
                        f"{key_path} does not belong to {subject} in {cert_path}",
                        "pair the certificate with its own key",
                    )
                )
    # Chain.
    stores = [p for p in (truststore, other_trust) if p is not None]
    stores += [p for p in env.system_trust if p.exists()]
    anchors, used = _trusted(stores)
    chained, why = chain_to_anchor(leaf, chain[1:], anchors, now)
    chain_label = label.replace("certificate", "chain")
    if chained:
        out.append(Check(chain_label, "ok", why))
    else:
        where = ", ".join(used) or "no trust store"
        out.append(
            Check(
                chain_label,
                "fail",
                f"{why} (trusted: {where})",
                "append the intermediates to the certificate file, and put the root CA in "
                "x509.truststore or the system store",
            )
        )
    return out


#: Per key type: the TLS 1.3 signature scheme peers commonly request for it (GnuTLS
#: name), and a caveat when many peers do not list it at all.
_SCHEMES: dict[str, tuple[str, str]] = {
    "RSA": ("RSA-PSS-RSAE-SHA256", ""),
    "secp256r1": ("ECDSA-SECP256R1-SHA256", ""),
    "secp384r1": ("ECDSA-SECP384R1-SHA384", ""),
    "secp521r1": ("ECDSA-SECP521R1-SHA512", ""),
    "Ed25519": ("EdDSA-Ed25519", "many peers do not list Ed25519 (qh3's default list omits it)"),
    "Ed448": ("EdDSA-Ed448", "few peers list Ed448"),
}


def _check_signing(label: str, key_path: Path) -> Check:
    """Can this host's GnuTLS sign with the key under the scheme peers ask for it?"""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    from quichsd.tls.binding import gnutls_version, sign_test

    data = _read(key_path)
    key = _load_key(data)
    kind = ""
    if isinstance(key, rsa.RSAPrivateKey):
        kind = "RSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        kind = key.curve.name
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        kind = "Ed25519"
    elif isinstance(key, ed448.Ed448PrivateKey):
        kind = "Ed448"
    if kind not in _SCHEMES:
        return Check(
            label,
            "fail",
            f"TLS 1.3 has no signature scheme for this {type(key).__name__} key",
            "use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key",
        )
    scheme, caveat = _SCHEMES[kind]
    why = sign_test(data, scheme)
    if why is not None:
        return Check(
            label,
            "fail",
            f"GnuTLS {gnutls_version()} cannot sign with this {kind} key as {scheme}: {why}",
            "use another key type, or a GnuTLS that supports it",
        )
    if caveat:
        return Check(
            label,
            "warn",
            f"{kind} key signs as {scheme}; {caveat}",
            "an ECDSA P-256 or RSA key is accepted everywhere",
        )
    return Check(label, "ok", f"{kind} key signs as {scheme} with GnuTLS {gnutls_version()}")


# -- all --------------------------------------------------------------------------------------


def run_checks(config_path: Path | None, env: Environment | None = None) -> list[Check]:
    env = env or Environment()
    checks = [check_family(env), check_cap_net_admin(env)]
    checks += check_transports(env)
    checks.append(check_gnutls())
    if checks[-1].state == "ok":
        checks.append(check_psk_binders())
    config_checks, config = check_config(config_path)
    checks += check_keyrings(env, config)
    checks += config_checks
    if config is not None:
        checks += check_side("client", config.client, env, config.server.truststore)
        checks += check_side("server", config.server, env, config.client.truststore)
    return checks


def exit_status(checks: Iterable[Check]) -> int:
    return 1 if any(c.state == "fail" for c in checks) else 0


def render(checks: Sequence[Check], *, unicode: bool = True) -> str:
    marks = MARKS if unicode else ASCII_MARKS
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"  {marks[c.state]}  {c.name.ljust(width)}  {c.detail}".rstrip())
        if c.fix and c.state != "ok":
            lines.append(f"     {' ' * width}  fix: {c.fix}")
    failed = sum(c.state == "fail" for c in checks)
    warned = sum(c.state == "warn" for c in checks)
    lines += ["", f"{failed} failed, {warned} warnings, {len(checks) - failed - warned} ok"]
    return "\n".join(lines) + "\n"


def _can_encode(text: str) -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def main(config_path: Path | None) -> int:
    # What the certificate parser warns about is in the table (_load_certificates), once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = run_checks(config_path)
    sys.stdout.write(render(checks, unicode=_can_encode("✓✗")))
    return exit_status(checks)
