# SPDX-License-Identifier: GPL-2.0-only
"""Setting up a GnuTLS session for one handshake: one C call, planned once per config.

After every GnuTLS step the interpreter runs with cold caches, so each Python
bytecode and each call into the binding costs far more than it looks.  What a
config asks of a session (flags, priorities, credentials, SNI, tickets, ALPN,
...) is therefore turned into a ``struct qd_plan`` once per ``EngineConfig``,
when the first engine of that config is made (``plan_for``), and ``qd_open()``
applies it in C.  The config itself stays a plain value.
"""

from __future__ import annotations

import errno
import weakref
from typing import Any

from quichsd.tls._gnutls import ffi, lib
from quichsd.tls.binding import PskServerCredentials, TlsSetupError, priority_for
from quichsd.tls.config import AuthMode, CertificateRequest, EngineConfig, Role
from quichsd.tls.records import plan_handle

MAX_TRANSPORT_PARAMETERS = 512  # QD_TP_MAX, checked by qd_open()

_CERT_REQUEST = {
    CertificateRequest.IGNORE: lib.GNUTLS_CERT_IGNORE,
    CertificateRequest.REQUEST: lib.GNUTLS_CERT_REQUEST,
    CertificateRequest.REQUIRE: lib.GNUTLS_CERT_REQUIRE,
}
#: qd_open() step -> what TlsSetupError says failed (credentials: see SessionPlan).
_STEPS = {
    lib.QD_STEP_INIT: "gnutls_init",
    lib.QD_STEP_HOOKS: "registering the QUIC hooks",
    lib.QD_STEP_PRIORITY: "setting priorities",
    lib.QD_STEP_TICKETS: "enabling tickets",
    lib.QD_STEP_EARLY_DATA: "early data size",
    lib.QD_STEP_SNI: "setting SNI",
    lib.QD_STEP_RESUMPTION: "loading resumption data",
    lib.QD_STEP_ALPN: "setting ALPN",
}
_psk_server_credentials: PskServerCredentials | None = None
#: id(config) -> its plan, for as long as that config object lives (a finalizer drops
#: the entry).  By identity, not equality: a config's fields need not be hashable, and
#: two equal configs made apart cost what they did when each built its own plan.
_plans: dict[int, SessionPlan] = {}


def _shared_psk_server_credentials() -> PskServerCredentials:
    global _psk_server_credentials
    if _psk_server_credentials is None:
        _psk_server_credentials = PskServerCredentials()
    return _psk_server_credentials


class SessionPlan:
    """What one (valid) config asks of every session, as ``qd_open()`` takes it.

    Owns everything the plan and GnuTLS sessions point to (credentials, the
    PSK lookup's handle, anti-replay state, the C copies of names and keys):
    an engine holds its plan for as long as its session lives.  A plan never
    refers to its config, so ``plan_for``'s entry goes when the config does.
    """

    __slots__ = (
        "_owned",
        "alpn_check",
        "alpn_wanted",
        "handle",
        "psk",
        "psk_identity",
        "psk_server",
        "send_ticket",
        "server",
        "struct",
    )

    def __init__(self, config: EngineConfig) -> None:
        self.server = server = config.role is Role.SERVER
        self.psk = psk = config.auth is AuthMode.PSK
        #: Check at each step that a server's flight carries an ALPN choice (RFC 9001 §8.1).
        self.alpn_check = server and bool(config.alpn)
        self.alpn_wanted = bool(config.alpn)
        self.send_ticket = server and not psk and config.ticket_key is not None
        self.psk_identity = config.psk.identity if psk and not server and config.psk else None
        self.psk_server = psk and server  # its identity is the client's, known at the end
        self.struct = plan = ffi.new("struct qd_plan *")
        owned: list[Any] = []
        if server:
            flags = lib.GNUTLS_SERVER | lib.GNUTLS_NO_AUTO_SEND_TICKET
        else:
            flags = lib.GNUTLS_CLIENT
        if config.early_data and not psk:
            flags |= lib.GNUTLS_ENABLE_EARLY_DATA | lib.GNUTLS_NO_END_OF_EARLY_DATA
        plan.flags = flags
        priority = priority_for(config.cipher, config.groups, config.signatures)
        plan.priority = priority
        creds: Any
        if psk:
            creds = _shared_psk_server_credentials() if server else config.psk
            plan.cred_type = lib.GNUTLS_CRD_PSK
        else:
            creds = config.certificates
            plan.cred_type = lib.GNUTLS_CRD_CERTIFICATE
        plan.creds = creds.ptr
        owned += (priority, creds)
        plan.cert_request = -1
        if server and psk:
            lookup = ffi.new_handle(config.psk_lookup)
            owned.append(lookup)
            plan.psk_handle = lookup
        elif server:
            # A client's certificate is checked by qd_verify_client (set in qd_session_attach).
            plan.cert_request = _CERT_REQUEST[config.certificate_request]
            if config.ticket_key is not None:
                key = ffi.new("unsigned char[]", config.ticket_key)  # 64 bytes: validated
                owned.append(key)
                plan.ticket_key = key
            if config.early_data:
                plan.early_data = 1
                if config.anti_replay is not None:
                    owned.append(config.anti_replay)
                    plan.anti_replay = config.anti_replay.ptr
        elif not psk:
            if config.peer_name:
                name = ffi.new("char[]", config.peer_name.encode())
                owned.append(name)
                plan.name = name
            plan.verify = config.auth is AuthMode.X509 or config.verify_peer
            plan.resume = 1  # an external PSK client has nothing to resume
        if config.alpn:
            datums = ffi.new("gnutls_datum_t[]", len(config.alpn))
            owned.append(datums)
            for datum, proto in zip(datums, config.alpn, strict=True):
                buf = ffi.new("unsigned char[]", proto)
                owned.append(buf)
                datum.data = buf
                datum.size = len(proto)
            plan.alpn = datums
            plan.alpn_count = len(config.alpn)
        self._owned = tuple(owned)
        self.handle = plan_handle(plan)  # what open_session() takes: made last

    def setup_error(self, step: int, rc: int) -> Exception:
        """Why ``qd_open()`` could not set the session up, as the engine raises it."""
        if step == lib.QD_STEP_MEMORY:
            return MemoryError("GnuTLS session")
        if step == lib.QD_STEP_TRANSPORT_PARAMETERS:
            return TlsSetupError(
                f"transport parameters must be 1..{MAX_TRANSPORT_PARAMETERS} bytes",
                code=errno.EINVAL,
            )
        if step == lib.QD_STEP_CREDENTIALS:
            what = "PSK credentials" if self.psk else "certificate credentials"
        else:
            what = _STEPS.get(step, f"session setup step {step}")
        return TlsSetupError(what, rc)


def plan_for(config: EngineConfig) -> SessionPlan:
    """``config``'s plan, made by its first engine and kept while ``config`` lives.

    Raises TlsSetupError (with the errno DONE should carry) for an impossible
    config, at every engine made from it: nothing is cached for one.
    """
    key = id(config)
    plan = _plans.get(key)
    if plan is None:
        config.validate()
        plan = SessionPlan(config)
        _plans[key] = plan
        weakref.finalize(config, _plans.pop, key, None)
    return plan
