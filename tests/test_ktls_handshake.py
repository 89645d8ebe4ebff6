# SPDX-License-Identifier: GPL-2.0-only
"""Our TCP client against our TCP server over a real loopback connection (127.0.0.1).

Both ends run GnuTLS on non-blocking sends/receives driven by one asyncio
loop.  The extracted kTLS material is checked without kernel TLS: one end's
TX must equal the other's RX, and records sealed with one end's TX crypto_info
by the software record layer must open with the other's RX crypto_info.
Statuses follow docs/tlshd-compat.md §TCP-STATUS; the server's access_denied follows
docs/tlshd-compat.md §TCP-ALERTS.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time

import pytest
from ktls_support import (
    TIMEOUT,
    drain_and_close,
    handshake_pair,
    kernel_has_ktls,
    loopback_pair,
    read_records,
)

import quichsd.ktls.session as session_module
from quichsd.ktls import TcpCredentials, TcpHandshakeResult, install_ktls, run_tcp_handshake
from quichsd.ktls.abi import SOL_TCP, TCP_NODELAY, TLS_1_3_VERSION, ContentType
from quichsd.ktls.priority import system_ciphers
from quichsd.tls import AuthMode, CertificateCredentials, Role
from quichsd.tls.binding import gnutls_version, psk_binder_hash_supported
from quichsd.tls.selfsigned import Issued, issue
from tests.support.ktls_soft import RecordLayer

SERVER_NAME = "server.test"
ALERT_BAD_CERTIFICATE, ALERT_CERTIFICATE_EXPIRED, ALERT_UNKNOWN_CA = 42, 45, 48
ALERT_ACCESS_DENIED, ALERT_INTERNAL_ERROR, ALERT_UNKNOWN_PSK_IDENTITY = 49, 80, 115


def x509_client(creds: CertificateCredentials, name: str | None = SERVER_NAME) -> TcpCredentials:
    return TcpCredentials(AuthMode.X509, certificates=creds, peer_name=name)


def x509_server(creds: CertificateCredentials) -> TcpCredentials:
    return TcpCredentials(AuthMode.X509, certificates=creds)


def psk_client(identity: bytes, key: bytes) -> TcpCredentials:
    return TcpCredentials(AuthMode.PSK, psk_identity=identity, psk_key=key)


def psk_server(keys: dict[bytes, bytes]) -> TcpCredentials:
    return TcpCredentials(AuthMode.PSK, psk_lookup=keys.get)


# -- X.509 -----------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", [51, 52, 53, 54])
def test_x509_each_cipher_material_mirrors_and_decrypts(
    cipher: int, client_cert_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(
            c,
            s,
            x509_client(client_cert_creds),
            x509_server(server_creds),
            client_kw={"ciphers": (cipher,)},
            server_kw={"ciphers": (cipher,)},
        )
        assert rc.ok and rs.ok, (rc.reason, rs.reason)
        mc, ms = rc.material, rs.material
        assert mc is not None and ms is not None
        assert rc.cipher == rs.cipher == cipher
        assert mc.version == ms.version == TLS_1_3_VERSION
        assert mc.tx == ms.rx and mc.rx == ms.tx
        assert mc.tx.rec_seq == mc.rx.rec_seq == bytes(8)
        assert mc.tx.key != mc.rx.key
        # Through the socket, in both directions, several records each.
        client_tx, server_rx = RecordLayer(mc.tx), RecordLayer(ms.rx)
        c.sendall(client_tx.seal(b"one") + client_tx.seal(b"two"))
        got = read_records(s, server_rx)
        while len(got) < 2:
            got += read_records(s, server_rx)
        assert got == [(23, b"one"), (23, b"two")]
        s.sendall(RecordLayer(ms.tx).seal(b"back"))
        assert read_records(c, RecordLayer(mc.rx)) == [(23, b"back")]


def test_default_cipher_is_the_systems_first(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
    assert rc.ok and rs.ok
    assert rc.cipher == system_ciphers()[0]


def test_mutual_authentication_reports_both_chains(
    client_cert_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(client_cert_creds), x509_server(server_creds))
    assert rc.ok and rs.ok
    assert rc.completion is not None and rs.completion is not None
    assert len(rc.completion.peer_certificates) == 2  # leaf + CA, as the server sends it
    assert len(rs.completion.peer_certificates) == 2
    assert rc.completion.psk_identity is None


def test_client_without_certificate_is_accepted(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
    assert rc.ok and rs.ok
    assert rs.completion is not None and rs.completion.peer_certificates == ()


def test_wrong_server_name_is_eacces_with_bad_certificate(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(
            c, s, x509_client(trust_creds, "other.test"), x509_server(server_creds)
        )
    assert rc.status == errno.EACCES
    assert "server certificate rejected" in rc.reason and "name" in rc.reason
    assert rc.alert_sent == ALERT_BAD_CERTIFICATE
    assert rs.status == errno.EACCES
    assert rs.alert_received == ALERT_BAD_CERTIFICATE


@pytest.mark.parametrize(
    ("fixture", "alert"),
    [
        ("untrusted_server_creds", ALERT_UNKNOWN_CA),
        ("expired_server_creds", ALERT_CERTIFICATE_EXPIRED),
    ],
)
def test_bad_server_certificate_is_eacces(
    fixture: str, alert: int, trust_creds: CertificateCredentials, request: pytest.FixtureRequest
) -> None:
    server_creds: CertificateCredentials = request.getfixturevalue(fixture)
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
    assert rc.status == errno.EACCES
    assert rc.alert_sent == alert
    assert rs.status == errno.EACCES and rs.alert_received == alert


def test_rejected_client_certificate_gets_access_denied(
    ca: Issued, server_creds: CertificateCredentials
) -> None:
    # Expired but from the trusted CA: a GnuTLS client only sends a certificate whose
    # issuer the server's CertificateRequest names.
    expired = issue(ca, ("client.test",), expired=True)
    client_creds = CertificateCredentials(
        chain=expired.cert_pem, key=expired.key_pem, trust=ca.cert_pem
    )
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(client_creds), x509_server(server_creds))
        assert rs.status == errno.EACCES
        assert "client certificate rejected" in rs.reason
        assert "expired" in rs.reason
        assert rs.alert_sent == ALERT_ACCESS_DENIED
        # TLS 1.3: the client is done before the server reads its certificate; the
        # access_denied then arrives under the server's application traffic key.
        assert rc.ok and rc.material is not None
        drain_and_close(s)
        alert = read_records(c, RecordLayer(rc.material.rx), until_type=ContentType.ALERT)
        assert alert == [(ContentType.ALERT, bytes([2, ALERT_ACCESS_DENIED]))]


def test_anonymous_client_verifies_by_address(ca: Issued) -> None:
    leaf = issue(ca, ("127.0.0.1",))
    server = x509_server(CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem))
    anon = TcpCredentials(
        AuthMode.UNAUTH,
        certificates=CertificateCredentials(trust=ca.cert_pem),
        peer_name="127.0.0.1",
    )
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, anon, server)
    assert rc.ok and rs.ok, rc.reason
    with loopback_pair() as (c, s):
        wrong = TcpCredentials(
            AuthMode.UNAUTH,
            certificates=CertificateCredentials(trust=ca.cert_pem),
            peer_name="127.0.0.2",
        )
        rc, _ = handshake_pair(c, s, wrong, server)
    assert rc.status == errno.EACCES


def test_anonymous_client_without_verification(
    other_ca: Issued, server_creds: CertificateCredentials
) -> None:
    anon = TcpCredentials(
        AuthMode.UNAUTH,
        certificates=CertificateCredentials(trust=other_ca.cert_pem),
        verify_peer=False,
    )
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, anon, x509_server(server_creds))
    assert rc.ok and rs.ok


def test_unauthenticated_server_is_refused(server_creds: CertificateCredentials) -> None:
    async def run() -> int:
        with loopback_pair() as (_c, s):
            creds = TcpCredentials(AuthMode.UNAUTH, certificates=server_creds)
            result = await run_tcp_handshake(s, Role.SERVER, creds, 1, install=None)
            return result.status

    assert asyncio.run(run()) == errno.EIO


# -- PSK --------------------------------------------------------------------------------


#: Suites a SHA-384 PSK can get: AES-256-GCM-SHA384 where GnuTLS computes its binders with
#: SHA-384 (3.8.11+); before that GnuTLS binds every external PSK to SHA-256, and of the
#: SHA-384 list (AES-256-GCM, ChaCha20, as tlshd builds it) only ChaCha20-SHA256 fits.
SHA384_PSK_SUITES = {52} if psk_binder_hash_supported() else {54}


def test_binder_hash_support_follows_the_gnutls_version() -> None:
    version = tuple(int(part) for part in gnutls_version().split(".")[:3])
    assert psk_binder_hash_supported() == (version >= (3, 8, 11))


@pytest.mark.parametrize(
    ("identity", "length", "allowed"),
    [
        (b"host-a", 32, {51, 53}),
        (b"host-a", 48, SHA384_PSK_SUITES),
        (b"host-a", 20, {51, 52, 53, 54}),
        (b"NVMe0R01 nqn.host nqn.subsys", 32, {51, 53}),
        (b"NVMe0R02 nqn.host nqn.subsys", 48, SHA384_PSK_SUITES),
    ],
)
def test_psk_handshake_and_list_selection(identity: bytes, length: int, allowed: set[int]) -> None:
    key = os.urandom(length)
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, psk_client(identity, key), psk_server({identity: key}))
    assert rc.ok and rs.ok, (rc.reason, rs.reason)
    assert rc.cipher in allowed
    assert rc.material is not None and rs.material is not None
    assert rc.material.tx == rs.material.rx
    assert rs.completion is not None and rs.completion.psk_identity == identity
    assert rc.completion is not None and rc.completion.psk_identity == identity


def test_sha384_psk_on_sha256_binders_is_logged_once_per_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identity = b"NVMe0R02 nqn.host nqn.once " + os.urandom(4).hex().encode()
    key = os.urandom(48)
    for _ in range(2):
        with loopback_pair() as (c, s):
            rc, rs = handshake_pair(c, s, psk_client(identity, key), psk_server({identity: key}))
        assert rc.ok and rs.ok, (rc.reason, rs.reason)
    warnings = [r for r in caplog.records if "computes PSK binders with SHA-256" in r.message]
    assert len(warnings) == (0 if psk_binder_hash_supported() else 1)
    assert all(key.hex() not in r.getMessage() for r in caplog.records)


def _lookups_per_handshake(key_length: int) -> int:
    identity = b"NVMe0R01 nqn.host nqn.count"
    key = os.urandom(key_length)
    asked: list[bytes] = []

    def lookup(name: bytes) -> bytes | None:
        asked.append(name)
        return key if name == identity else None

    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(
            c, s, psk_client(identity, key), TcpCredentials(AuthMode.PSK, psk_lookup=lookup)
        )
    assert rc.ok and rs.ok, (rc.reason, rs.reason)
    assert set(asked) == {identity}
    return len(asked)


@pytest.mark.skipif(psk_binder_hash_supported(), reason="GnuTLS >= 3.8.11: the other branch ran")
@pytest.mark.parametrize("key_length", [32, 48])
def test_gnutls_before_3_8_11_asks_for_a_psk_once(key_length: int) -> None:
    assert _lookups_per_handshake(key_length) == 1


@pytest.mark.skipif(
    not psk_binder_hash_supported(), reason="GnuTLS < 3.8.11: the other branch ran"
)
@pytest.mark.parametrize("key_length", [32, 48])
def test_gnutls_3_8_11_asks_for_a_psk_once_per_binder_hash(key_length: int) -> None:
    # What daemon/jobs/common.py's lookup keeps its first answer for: a keyring search each.
    assert _lookups_per_handshake(key_length) == 2


def test_nvme_identity_with_unknown_hash_is_eio_without_handshake() -> None:
    async def run() -> tuple[int, str]:
        with loopback_pair() as (c, _s):
            result = await run_tcp_handshake(
                c, Role.CLIENT, psk_client(b"NVMe0R03 h s", bytes(32)), 1, install=None
            )
            return result.status, result.reason

    status, reason = asyncio.run(run())
    assert status == errno.EIO
    assert "'03'" in reason


def test_unknown_psk_identity_is_ekeyrejected_on_both_ends() -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, psk_client(b"nobody", bytes(32)), psk_server({}))
    assert rc.status == errno.EKEYREJECTED
    assert rc.alert_received == ALERT_UNKNOWN_PSK_IDENTITY
    assert rs.status == errno.EKEYREJECTED
    assert rs.alert_sent == ALERT_UNKNOWN_PSK_IDENTITY


def test_failing_key_lookup_is_eio_not_ekeyrejected() -> None:
    def broken(identity: bytes) -> bytes | None:
        raise RuntimeError("keyring down")

    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(
            c, s, psk_client(b"id", bytes(32)), TcpCredentials(AuthMode.PSK, psk_lookup=broken)
        )
    assert rs.status == errno.EIO
    assert rs.alert_sent == ALERT_INTERNAL_ERROR
    assert rc.status == errno.EACCES  # internal_error: not the key's fault


def test_mismatched_key_fails_and_the_client_sees_the_close() -> None:
    async def run() -> tuple[int, int]:
        with loopback_pair() as (c, s):
            client = asyncio.ensure_future(
                run_tcp_handshake(
                    c, Role.CLIENT, psk_client(b"id", bytes(32)), TIMEOUT, install=None
                )
            )
            server = await run_tcp_handshake(
                s, Role.SERVER, psk_server({b"id": b"\1" * 32}), TIMEOUT, install=None
            )
            s.close()  # what the kernel consumer does after a failed DONE
            return server.status, (await client).status

    server_status, client_status = asyncio.run(run())
    assert server_status == errno.EACCES
    assert client_status == errno.ETIMEDOUT  # premature termination: the consumer may retry


# -- failures on the connection -----------------------------------------------------------


def test_peer_closing_mid_handshake_is_etimedout(trust_creds: CertificateCredentials) -> None:
    async def run() -> tuple[int, str]:
        with loopback_pair() as (c, s):
            s.close()
            result = await run_tcp_handshake(
                c, Role.CLIENT, x509_client(trust_creds), TIMEOUT, install=None
            )
            return result.status, result.reason

    status, reason = asyncio.run(run())
    # tlshd's answer to a close (docs/errno.md); the peer's kernel may answer the
    # ClientHello that follows its FIN with a reset instead.
    assert (status, "closed" in reason) == (errno.ETIMEDOUT, True) or (
        status == errno.ECONNRESET and "reset" in reason
    )


def test_peer_resetting_mid_handshake_is_econnreset(trust_creds: CertificateCredentials) -> None:
    """A reset is not a slow peer: ECONNRESET, not ETIMEDOUT (docs/errno.md)."""

    def reset_after_client_hello(server: socket.socket) -> None:
        server.recv(1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # with a zero linger: RST

    async def run() -> tuple[int, str]:
        with loopback_pair() as (c, s):
            resetting = asyncio.get_running_loop().run_in_executor(
                None, reset_after_client_hello, s
            )
            result = await run_tcp_handshake(
                c, Role.CLIENT, x509_client(trust_creds), TIMEOUT, install=None
            )
            await resetting
            return result.status, result.reason

    status, reason = asyncio.run(run())
    assert status == errno.ECONNRESET
    assert "reset" in reason


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_never_connected_socket_is_enotconn(
    role: Role, trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    """Not a peer that went away (the client's first send used to fail EPIPE and be
    reported as a reset, ETIMEDOUT): nothing was ever there."""
    creds = x509_client(trust_creds) if role is Role.CLIENT else x509_server(server_creds)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unconnected:
        result = asyncio.run(run_tcp_handshake(unconnected, role, creds, TIMEOUT, install=None))
    assert result.status == errno.ENOTCONN
    assert "not connected" in result.reason


def test_silent_peer_times_out(trust_creds: CertificateCredentials) -> None:
    async def run() -> tuple[int, float]:
        with loopback_pair() as (c, _s):
            started = time.monotonic()
            result = await run_tcp_handshake(
                c, Role.CLIENT, x509_client(trust_creds), 0.3, install=None
            )
            return result.status, time.monotonic() - started

    status, took = asyncio.run(run())
    assert status == errno.ETIMEDOUT
    assert 0.25 < took < 3


def test_nodelay_is_on_during_the_handshake_and_restored(
    trust_creds: CertificateCredentials,
) -> None:
    async def run() -> tuple[int, int, int]:
        with loopback_pair() as (c, _s):
            before = c.getsockopt(SOL_TCP, TCP_NODELAY)
            task = asyncio.ensure_future(
                run_tcp_handshake(c, Role.CLIENT, x509_client(trust_creds), TIMEOUT, install=None)
            )
            await asyncio.sleep(0.1)  # the ClientHello is out; waiting for the server
            during = c.getsockopt(SOL_TCP, TCP_NODELAY)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return before, during, c.getsockopt(SOL_TCP, TCP_NODELAY)

    assert asyncio.run(run()) == (0, 1, 0)


def test_nodelay_already_on_stays_on(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        c.setsockopt(SOL_TCP, TCP_NODELAY, 1)
        rc, rs = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
        assert rc.ok and rs.ok
        assert c.getsockopt(SOL_TCP, TCP_NODELAY) == 1
        assert s.getsockopt(SOL_TCP, TCP_NODELAY) == 0


def test_many_handshakes_share_one_loop(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    async def run() -> list[int]:
        pairs = [loopback_pair() for _ in range(16)]
        socks = [p.__enter__() for p in pairs]
        try:
            tasks = []
            for c, s in socks:
                tasks.append(
                    run_tcp_handshake(
                        c, Role.CLIENT, x509_client(trust_creds), TIMEOUT, install=None
                    )
                )
                tasks.append(
                    run_tcp_handshake(
                        s, Role.SERVER, x509_server(server_creds), TIMEOUT, install=None
                    )
                )
            return [r.status for r in await asyncio.gather(*tasks)]
        finally:
            for p in pairs:
                p.__exit__(None, None, None)

    assert asyncio.run(run()) == [0] * 32


# -- handing over to the kernel --------------------------------------------------------------


def _install_on_this_kernel(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> tuple[TcpHandshakeResult, TcpHandshakeResult]:
    with loopback_pair() as (c, s):
        return handshake_pair(
            c,
            s,
            x509_client(trust_creds),
            x509_server(server_creds),
            client_kw={"install": install_ktls},
            server_kw={"install": install_ktls},
        )


@pytest.mark.skipif(not kernel_has_ktls(), reason="this kernel has no kTLS (TCP_ULP tls)")
def test_installing_on_a_kernel_with_ktls(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    rc, rs = _install_on_this_kernel(trust_creds, server_creds)
    assert rc.ok and rs.ok and rc.installed is not None


@pytest.mark.skipif(kernel_has_ktls(), reason="this kernel has kTLS (TCP_ULP tls)")
def test_installing_on_a_kernel_without_ktls(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    """Without kTLS every successful handshake ends EIO, with the reason."""
    rc, rs = _install_on_this_kernel(trust_creds, server_creds)
    for result in (rc, rs):
        assert result.status == errno.EIO
        assert result.completion is not None  # the handshake itself succeeded
        assert result.reason.endswith("kTLS: kernel has no kTLS (TCP_ULP tls: ENOENT)")
        assert result.ktls_error is not None and result.ktls_error.cause == errno.ENOENT


def test_application_data_buffered_by_gnutls_is_eio(
    monkeypatch: pytest.MonkeyPatch,
    trust_creds: CertificateCredentials,
    server_creds: CertificateCredentials,
) -> None:
    installed: list[object] = []
    monkeypatch.setattr(session_module, "pending_application_data", lambda session: 5)
    with loopback_pair() as (c, s):
        rc, _ = handshake_pair(
            c,
            s,
            x509_client(trust_creds),
            x509_server(server_creds),
            client_kw={"install": lambda sock, material: installed.append(material)},
        )
    assert rc.status == errno.EIO
    assert "5 bytes of application data" in rc.reason
    assert installed == []


def test_finished_and_data_in_one_segment_leave_the_data_in_the_socket(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    """GnuTLS reads record by record: nothing past the handshake is consumed."""
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
        assert rc.ok and rs.ok and rc.material is not None and rs.material is not None
        # The server's first data may have been queued before the client finished reading.
        s.sendall(RecordLayer(rs.material.tx).seal(b"early"))
        assert read_records(c, RecordLayer(rc.material.rx)) == [(23, b"early")]


def test_record_size_limit_reaches_the_payload_limit(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, rs = handshake_pair(
            c,
            s,
            x509_client(trust_creds),
            x509_server(server_creds),
            client_kw={"record_size_limit": 512},
        )
    assert rc.ok and rs.ok
    assert rs.material is not None and rc.material is not None
    assert (rs.material.peer_record_limit, rs.material.payload_limit) == (513, 512)
    # GnuTLS's own record_size_limit: 2^14 + 1 under TLS 1.3.
    assert (rc.material.peer_record_limit, rc.material.payload_limit) == (16385, 16384)


def test_summary_lines(
    trust_creds: CertificateCredentials, server_creds: CertificateCredentials
) -> None:
    with loopback_pair() as (c, s):
        rc, _ = handshake_pair(c, s, x509_client(trust_creds), x509_server(server_creds))
        assert rc.summary().startswith("TLS 1.3 TLS_")
    with loopback_pair() as (c, s):
        s.close()
        rc = asyncio.run(
            run_tcp_handshake(c, Role.CLIENT, x509_client(trust_creds), 1, install=None)
        )
    assert rc.summary().startswith("client TCP handshake: the peer ")
    assert rc.summary().endswith(f"(errno {errno.ETIMEDOUT})")


def test_socket_pair_sanity() -> None:
    with loopback_pair() as (c, s):
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP
        assert s.getpeername() == c.getsockname()
