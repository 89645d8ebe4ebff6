# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check`` on each side's X.509 files: trust store, CRL, certificate, key, chain.

Every verdict that a handshake would also reach is GnuTLS's, through the same
binding the daemon uses: a trust store or CRL GnuTLS cannot load, a key it
cannot load or that does not match the certificate (``CertificateCredentials``,
as the worker builds them), a chain it does not trust (``tls/verify.py``, the
call ``gnutls_certificate_verify_peers`` makes).  ``cryptography`` only reads
names, dates and what its parser warns about, to word the lines.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from quichsd.check.environment import Environment
from quichsd.check.report import Check, State
from quichsd.daemon.config import X509Files
from quichsd.tls.binding import (
    CertificateCredentials,
    TlsSetupError,
    gnutls_version,
    key_load_error,
    sign_test,
)
from quichsd.tls.verify import ChainVerdict, credentials_trusting, verify_chain

#: A certificate expiring sooner than this is a warning.
EXPIRY_WARNING = datetime.timedelta(days=14)
#: What GnuTLS's status text starts with whenever a chain is refused; the rest says why.
_NOT_TRUSTED = "The certificate is NOT trusted. "


def _read(path: Path) -> bytes:
    return path.read_bytes()


def load_certificates(data: bytes, notes: list[str] | None = None) -> list[x509.Certificate]:
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


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value!s}" if names else cert.subject.rfc4514_string() or "(no subject)"


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def describe_chain(verdict: ChainVerdict, now: datetime.datetime) -> tuple[bool, str]:
    """GnuTLS's verdict in words, and the validity periods on its path at ``now``.

    GnuTLS judged the chain's structure (signatures, CA flags, constraints,
    revocation, the anchor); the periods are compared here so a test can move
    the clock.  At the real time both together are the daemon's verdict.
    """
    used = [x509.load_der_x509_certificate(der) for der in verdict.used]
    if not verdict.trusted:
        last = used[-1]
        if verdict.signer_not_found and last.issuer == last.subject:
            return False, f"ends at {_subject(last)}, a root nobody here trusts"
        if verdict.signer_not_found:
            return (
                False,
                f"no issuer found for {_subject(last)} (issuer {last.issuer.rfc4514_string()})",
            )
        return False, f"GnuTLS refuses it: {verdict.reason.removeprefix(_NOT_TRUSTED)}"
    assert verdict.anchor is not None  # a trusted chain ends at an anchor
    anchor = x509.load_der_x509_certificate(verdict.anchor)
    for middle in used[1:]:
        if not _valid_at(middle, now):
            return False, f"intermediate {_subject(middle)} is not valid now"
    if not _valid_at(anchor, now):
        return False, f"trust anchor {_subject(anchor)} is not valid now"
    if verdict.anchor == verdict.used[-1] and len(used) == 1:
        return True, f"{_subject(anchor)} is itself trusted"
    return True, f"chains to {_subject(anchor)}"


def _check_trust_file(label: str, path: Path) -> Check:
    notes: list[str] = []
    try:
        data = _read(path)
        certs = load_certificates(data, notes)
    except OSError as exc:
        return Check(label, "fail", f"{path}: {exc.strerror}", "fix the path or the permissions")
    except ValueError as exc:
        return Check(label, "fail", f"{path}: not PEM/DER certificates ({exc})", "replace it")
    if not certs:
        return Check(label, "fail", f"{path}: no certificates", "put the trusted CAs in it")
    loaded = CertificateCredentials().add_trust(data)  # as the worker loads it
    if loaded < 0:
        why = TlsSetupError("GnuTLS cannot load it", loaded).strerror
        return Check(label, "fail", f"{path}: {why}", "replace it")
    if loaded == 0:
        return Check(label, "fail", f"{path}: GnuTLS finds no certificate in it", "replace it")
    counted = f"{path}: {len(certs)} certificate{'s' * (len(certs) != 1)}"
    if notes:
        return Check(label, "warn", f"{counted}; one {notes[0]}", "replace that certificate")
    return Check(label, "ok", counted)


def _check_crl(label: str, path: Path) -> Check:
    try:
        data = _read(path)
    except OSError as exc:
        return Check(label, "fail", f"{path}: {exc.strerror}", "fix the path or the permissions")
    rc = CertificateCredentials().add_crl(data)
    if rc < 0:
        why = TlsSetupError("GnuTLS", rc).strerror
        return Check(label, "fail", f"{path}: not a CRL ({why})", "replace it")
    return Check(label, "ok", f"{path}: readable")


def check_side(
    side: str, files: X509Files, env: Environment, other: X509Files | None = None
) -> list[Check]:
    """[authenticate.<side>]: trust store, CRL, certificate and key.

    ``other`` is the other section: our certificate is checked by peers, so a
    CA (or a CRL) that only the other section lists still counts.
    """
    out: list[Check] = []
    if files.truststore is not None:
        out.append(_check_trust_file(f"{side} trust store", files.truststore))
    if files.crl is not None:
        out.append(_check_crl(f"{side} CRL", files.crl))
    for cert_path, key_ref, label in (
        (files.certificate, files.private_key, f"{side} certificate"),
        (files.pq_certificate, files.pq_private_key, f"{side} PQ certificate"),
    ):
        if cert_path is None and key_ref is None:
            continue
        out += _check_pair(label, cert_path, key_ref, files, env, other)
    return out


def _validity(label: str, leaf: x509.Certificate, now: datetime.datetime) -> Check:
    subject = _subject(leaf)
    if now < leaf.not_valid_before_utc:
        return Check(
            label,
            "fail",
            f"{subject} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the clock, or install a certificate valid now",
        )
    if now > leaf.not_valid_after_utc:
        return Check(
            label,
            "fail",
            f"{subject} expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
            "renew the certificate",
        )
    left = leaf.not_valid_after_utc - now
    state: State = "warn" if left < EXPIRY_WARNING else "ok"
    return Check(
        label,
        state,
        f"{subject}, valid until {leaf.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
        "renew it soon" if state == "warn" else "",
    )


def _check_key(
    label: str, key_ref: str, chain: bytes, subject: str, cert_path: Path
) -> list[Check]:
    """The key as the worker loads it: GnuTLS reads it and pairs it with the chain."""
    key_label = label.replace("certificate", "private key")
    if ":" in key_ref and not key_ref.startswith("/"):
        return [Check(key_label, "warn", f"{key_ref.split(':', 1)[0]}: URL not checked here", "")]
    key_path = Path(key_ref)
    try:
        key = _read(key_path)
    except OSError as exc:
        return [Check(key_label, "fail", f"{key_path}: {exc.strerror}", "fix path or permissions")]
    unreadable = key_load_error(key)
    if unreadable is not None:
        return [
            Check(
                key_label,
                "fail",
                f"{key_path}: not an unencrypted private key ({unreadable})",
                "store the key unencrypted (PEM or DER, PKCS#8 or traditional)",
            )
        ]
    try:
        CertificateCredentials(chain=chain, key=key)
    except TlsSetupError as exc:
        return [
            Check(
                key_label,
                "fail",
                f"{key_path} does not belong to {subject} in {cert_path} ({exc.strerror})",
                "pair the certificate with its own key",
            )
        ]
    return [
        Check(key_label, "ok", f"{key_path} matches the certificate"),
        _check_signing(label.replace("certificate", "signing"), key_path),
    ]


def _check_chain(
    label: str, chain: bytes, files: X509Files, env: Environment, other: X509Files | None
) -> Check:
    """Trusted by a peer holding this configuration's trust stores and CRLs?"""
    sections = [files, other] if other is not None else [files]
    stores = [s.truststore for s in sections if s.truststore is not None]
    stores += [p for p in env.system_trust if p.exists()]
    used, anchors = [], []
    for path in dict.fromkeys(stores):
        try:
            anchors.append(_read(path))
            used.append(str(path))
        except OSError:
            continue
    crls = []
    for path in (s.crl for s in sections if s.crl is not None):
        try:
            crls.append(_read(path))
        except OSError:
            continue
    chain_label = label.replace("certificate", "chain")
    try:
        verdict = verify_chain(chain, credentials_trusting(anchors, crls))
    except TlsSetupError as exc:
        why = f"GnuTLS cannot read the chain: {exc.strerror}"
        return Check(chain_label, "fail", why, "replace the certificate file")
    chained, why = describe_chain(verdict, env.now())
    if chained:
        return Check(chain_label, "ok", why)
    where = ", ".join(used) or "no trust store"
    return Check(
        chain_label,
        "fail",
        f"{why} (trusted: {where})",
        "append the intermediates to the certificate file, and put the root CA in "
        "x509.truststore or the system store",
    )


def _check_pair(
    label: str,
    cert_path: Path | None,
    key_ref: str | None,
    files: X509Files,
    env: Environment,
    other: X509Files | None,
) -> list[Check]:
    if cert_path is None or key_ref is None:
        missing = "x509.private_key" if cert_path is not None else "x509.certificate"
        return [Check(label, "fail", f"{missing} is not set", f"set {missing} too, or neither")]
    notes: list[str] = []
    try:
        data = _read(cert_path)
        certs = load_certificates(data, notes)
    except OSError as exc:
        return [Check(label, "fail", f"{cert_path}: {exc.strerror}", "fix the path or permissions")]
    except ValueError as exc:
        return [Check(label, "fail", f"{cert_path}: not a certificate ({exc})", "replace it")]
    if not certs:
        return [Check(label, "fail", f"{cert_path}: no certificate in it", "replace it")]
    leaf = certs[0]
    subject = _subject(leaf)
    out = [_validity(label, leaf, env.now())]
    out += [Check(label, "warn", f"{subject} {note}", "issue a new certificate") for note in notes]
    out += _check_key(label, key_ref, data, subject, cert_path)
    out.append(_check_chain(label, data, files, env, other))
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


def _key_kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return str(key.curve.name)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "Ed448"
    return ""


def _check_signing(label: str, key_path: Path) -> Check:
    """Can this host's GnuTLS sign with the key under the scheme peers ask for it?"""
    from cryptography.hazmat.primitives import serialization

    data = _read(key_path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:  # GnuTLS loaded it; name its type in its words
        return Check(label, "warn", f"key type not recognised here ({exc})", "")
    kind = _key_kind(key)
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
