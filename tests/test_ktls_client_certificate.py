# SPDX-License-Identifier: GPL-2.0-only
"""TCP path: the configured client certificate reaches a server that lists only RSA-PSS.

The same credentials code as the QUIC path (``CertificateCredentials``'s
retrieve callback, ``tls/_glue.c``); here our TCP server runs with its
signature schemes narrowed to RSA-PSS, as a Go server's CertificateRequest
would list them.  GnuTLS 3.7's own selection would send an empty Certificate.
"""

from __future__ import annotations

from typing import Any

import pytest
from ktls_support import handshake_pair, loopback_pair
from quichsd.tls._gnutls import ffi, lib

import quichsd.ktls.session as session_module
from quichsd.ktls import TcpCredentials
from quichsd.ktls.priority import PriorityKind, priority_text
from quichsd.tls import AuthMode, CertificateCredentials
from quichsd.tls.binding import check, gnutls_version
from quichsd.tls.selfsigned import Issued, issue

#: The server's kTLS cipher selection marks its priority requests (the client keeps all).
SERVER_ONLY = (52,)
RSA_PSS_ONLY = ":-SIGN-ALL:+SIGN-RSA-PSS-RSAE-SHA256:+SIGN-RSA-PSS-RSAE-SHA384"


@pytest.fixture
def strict_server_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    real = session_module.priority_cache
    kept: list[Any] = []

    def narrowed(kind: PriorityKind, only: tuple[int, ...] | None = None) -> Any:
        if only != SERVER_ONLY:
            return real(kind, only)
        text = priority_text(kind, only) + RSA_PSS_ONLY
        holder = ffi.new("gnutls_priority_t *")
        flags = lib.GNUTLS_PRIORITY_INIT_DEF_APPEND
        check(lib.gnutls_priority_init2(holder, text.encode(), ffi.NULL, flags), text)
        cache = ffi.gc(holder[0], lib.gnutls_priority_deinit)
        kept.append(cache)
        return cache

    monkeypatch.setattr(session_module, "priority_cache", narrowed)


def test_rsa_client_certificate_reaches_an_rsa_pss_only_tcp_server(
    strict_server_priority: None, ca: Issued
) -> None:
    server_leaf = issue(ca, ("server.test",), kind="rsa")
    client_leaf = issue(ca, ("client.test",), kind="rsa")
    server = TcpCredentials(
        AuthMode.X509,
        certificates=CertificateCredentials(
            chain=server_leaf.cert_pem, key=server_leaf.key_pem, trust=ca.cert_pem
        ),
    )
    client = TcpCredentials(
        AuthMode.X509,
        certificates=CertificateCredentials(
            chain=client_leaf.cert_pem, key=client_leaf.key_pem, trust=ca.cert_pem
        ),
        peer_name="server.test",
    )
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, client, server, server_kw={"ciphers": SERVER_ONLY})
    assert rc.ok and rs.ok, (gnutls_version(), rc.reason, rs.reason)
    assert rs.completion is not None
    assert rs.completion.peer_certificates[:1] == (client_leaf.cert_der,)
