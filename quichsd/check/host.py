# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd check`` on the host: the handshake family, CAP_NET_ADMIN, the transports
(the QUIC module, kTLS), GnuTLS and its binding, and the kernel keyrings.

Each says what is missing and how to get it; the kernel is reached through
``Environment`` so tests can fake it.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import socket
from pathlib import Path

from quichsd.check.environment import Environment
from quichsd.check.report import Check
from quichsd.daemon import keyring
from quichsd.daemon.config import DaemonConfig
from quichsd.daemon.privilege import CAP_NET_ADMIN
from quichsd.ktls.abi import TCP_ULP
from quichsd.quic.abi import IPPROTO_QUIC


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
