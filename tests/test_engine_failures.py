# SPDX-License-Identifier: GPL-2.0-only
"""Every way our two engines refuse each other, with the exact TLS alert and DONE errno.

Alert numbers are RFC 8446 §6 AlertDescription values; QUIC closes with
CRYPTO_ERROR 0x100 + alert.  Where GnuTLS sends another alert than the RFC
suggests, the test pins what GnuTLS really sends and says why.

Not covered: a peer that sends no quic_transport_parameters.  Both engines
always send the extension, and stripping it from a ClientHello or
EncryptedExtensions in flight changes the transcript, so the peer fails
earlier (bad CertificateVerify / Finished) than the check being aimed at.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from cryptography.x509.oid import NameOID

from quichsd.tls import (
    AlpnNegotiated,
    AuthMode,
    CertificateCredentials,
    CertificateRequest,
    Cipher,
    HandshakeEngine,
    HandshakeFailed,
    Level,
    PskClientCredentials,
    Role,
    SendHandshake,
    State,
)
from quichsd.tls.failures import alert_text
from quichsd.tls.memory import PairResult, Side
from quichsd.tls.selfsigned import Issued, issue, make_ca

EngineFactory = Callable[..., HandshakeEngine]  # conftest's make_client / make_server
Exchange = Callable[..., PairResult]  # conftest's exchange

HANDSHAKE, INITIAL = Level.HANDSHAKE, Level.INITIAL

ALERT_UNEXPECTED_MESSAGE = 10
ALERT_HANDSHAKE_FAILURE = 40
ALERT_BAD_CERTIFICATE = 42
ALERT_ILLEGAL_PARAMETER = 47
ALERT_DECRYPT_ERROR = 51
ALERT_INTERNAL_ERROR = 80
ALERT_UNKNOWN_PSK_IDENTITY = 115
ALERT_CERTIFICATE_REQUIRED = 116
ALERT_NO_APPLICATION_PROTOCOL = 120


def _failure(side: Side) -> HandshakeFailed:
    assert side.complete is None, side.complete
    failed = side.of(HandshakeFailed)
    assert len(failed) == 1, side.events
    event = failed[0]
    assert isinstance(event, HandshakeFailed)
    return event


def _assert_refused(
    result: PairResult,
    client: HandshakeEngine,
    server: HandshakeEngine,
    *,
    by: Role,
    alert: int,
    code: int = errno.EACCES,
    peer_code: int = errno.EACCES,
) -> tuple[HandshakeFailed, HandshakeFailed]:
    """``by`` detected the problem and sent ``alert``; the peer learnt it from that alert."""
    detector, told = (
        (result.client, result.server) if by is Role.CLIENT else (result.server, result.client)
    )
    detected, informed = _failure(detector), _failure(told)
    assert (detected.errno, detected.alert) == (code, alert), detected
    # The peer did not send an alert of its own: it was closed with ours.
    assert (informed.errno, informed.alert) == (peer_code, None), informed
    assert f"TLS alert {alert_text(alert)}" in informed.reason
    assert client.state is State.FAILED and server.state is State.FAILED
    return detected, informed


def _handshake_bytes(side: Side) -> list[SendHandshake]:
    return [e for e in side.events if isinstance(e, SendHandshake) and e.level == HANDSHAKE]


# -- the client refuses the server's certificate ---------------------------------------

# GnuTLS reports every failed chain check as GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR (the
# reason is only in the status bits) and gnutls_alert_send_appropriate() maps that single
# code to bad_certificate (42): never unknown_ca (48) or certificate_expired (45).  The
# status bits do reach the reason text, which is what the operator reads.


@pytest.mark.parametrize(
    ("case", "peer_name", "creds_fixture", "why"),
    [
        ("wrong name", "other.test", "server_creds", "name"),
        ("unknown CA", "server.test", "untrusted_server_creds", "issuer is unknown"),
        ("expired", "server.test", "expired_server_creds", "expired"),
    ],
)
def test_client_refuses_server_certificate(
    case: str,
    peer_name: str,
    creds_fixture: str,
    why: str,
    request: pytest.FixtureRequest,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    client = make_client(peer_name=peer_name)
    server = make_server(certificates=request.getfixturevalue(creds_fixture))
    result = exchange(client, server)
    detected, _ = _assert_refused(
        result, client, server, by=Role.CLIENT, alert=ALERT_BAD_CERTIFICATE
    )
    assert why in detected.reason, detected.reason
    # The client never answered: no Finished (nor anything else) at HANDSHAKE level.
    assert _handshake_bytes(result.client) == []


def test_unauth_client_verifies_by_default(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    untrusted_server_creds: CertificateCredentials,
) -> None:
    # Unlike tlshd's QUIC anonymous client, ours checks the trust store unless told not to.
    client = make_client(auth=AuthMode.UNAUTH)
    server = make_server(certificates=untrusted_server_creds)
    result = exchange(client, server)
    detected, _ = _assert_refused(
        result, client, server, by=Role.CLIENT, alert=ALERT_BAD_CERTIFICATE
    )
    assert "issuer is unknown" in detected.reason


def test_x509_client_verifies_even_with_verify_peer_false(
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    untrusted_server_creds: CertificateCredentials,
) -> None:
    client = make_client(verify_peer=False)
    server = make_server(certificates=untrusted_server_creds)
    result = exchange(client, server)
    _assert_refused(result, client, server, by=Role.CLIENT, alert=ALERT_BAD_CERTIFICATE)


# -- the server refuses the client's certificate ----------------------------------------


def test_require_without_client_certificate(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client = make_client()
    server = make_server(certificate_request=CertificateRequest.REQUIRE)
    result = exchange(client, server)
    failed = _failure(result.server)
    assert (failed.errno, failed.alert) == (errno.EACCES, ALERT_CERTIFICATE_REQUIRED)
    assert server.state is State.FAILED
    # TLS 1.3: the client is done when it sends its (empty) Certificate and Finished, before
    # the server reads them; it learns of the refusal from the connection close afterwards.
    assert result.client.complete is not None
    before = client.state
    closed = client.peer_alert(ALERT_CERTIFICATE_REQUIRED)
    assert closed == [HandshakeFailed(errno.EACCES, None, closed[0].reason)]  # type: ignore[union-attr]
    assert (before, client.state) == (State.COMPLETE, State.FAILED)


@pytest.mark.parametrize("request_mode", [CertificateRequest.REQUEST, CertificateRequest.REQUIRE])
@pytest.mark.parametrize(
    ("case", "why"),
    [("expired", "expired"), ("impostor CA", "signature in the certificate is invalid")],
)
def test_server_refuses_client_certificate(
    request_mode: CertificateRequest,
    case: str,
    why: str,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
    ca: Issued,
) -> None:
    if case == "expired":
        leaf = issue(ca, ("client.test",), expired=True)
    else:
        # Same issuer name as the trusted CA, another key: the GnuTLS client finds the issuer
        # in the server's certificate_authorities list and sends it, the signature fails.
        (name,) = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        leaf = issue(make_ca(str(name.value)), ("client.test",))
    assert leaf.cert.issuer == ca.cert.subject
    creds = CertificateCredentials(chain=leaf.cert_pem, key=leaf.key_pem, trust=ca.cert_pem)
    client = make_client(certificates=creds)
    server = make_server(certificate_request=request_mode)
    result = exchange(client, server)
    failed = _failure(result.server)
    assert (failed.errno, failed.alert) == (errno.EACCES, ALERT_BAD_CERTIFICATE)
    # The verification status reaches the reason (our verify callback journals it).
    assert why in failed.reason, failed.reason
    assert result.client.complete is not None  # as above: the client finished first


# -- ALPN --------------------------------------------------------------------------------


def test_alpn_mismatch(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = make_client(alpn=(b"smb",)), make_server(alpn=(b"nfs", b"h3"))
    result = exchange(client, server)
    detected, _ = _assert_refused(
        result, client, server, by=Role.SERVER, alert=ALERT_NO_APPLICATION_PROTOCOL
    )
    assert "ALPN" in detected.reason
    assert result.client.of(AlpnNegotiated) == [] == result.server.of(AlpnNegotiated)
    # Refused at the ClientHello: the server sent nothing at all.
    assert result.server.of(SendHandshake) == []


def test_client_refuses_server_that_ignores_its_alpn(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    # RFC 9001 §8.1: QUIC clients also close with no_application_protocol.
    client, server = make_client(alpn=(b"h3",)), make_server()
    result = exchange(client, server)
    detected, _ = _assert_refused(
        result, client, server, by=Role.CLIENT, alert=ALERT_NO_APPLICATION_PROTOCOL
    )
    assert "ALPN" in detected.reason
    assert _handshake_bytes(result.client) == []  # its Finished is withheld


def test_server_refuses_client_without_alpn(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    # RFC 9001 §8.1 again; GnuTLS's mandatory check only runs when the extension is present.
    client, server = make_client(), make_server(alpn=(b"h3",))
    result = exchange(client, server)
    detected, _ = _assert_refused(
        result, client, server, by=Role.SERVER, alert=ALERT_NO_APPLICATION_PROTOCOL
    )
    assert "ALPN" in detected.reason
    # Its flight is dropped, and so are the keys for it: nothing was sent under them.
    assert result.server.events == [detected]


# -- cipher --------------------------------------------------------------------------------


def test_no_common_cipher(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client = make_client(cipher=Cipher.AES_128_CCM)
    server = make_server(cipher=Cipher.AES_256_GCM)
    result = exchange(client, server)
    _assert_refused(result, client, server, by=Role.SERVER, alert=ALERT_HANDSHAKE_FAILURE)


# -- PSK -------------------------------------------------------------------------------------


def _psk_pair(
    make_client: EngineFactory,
    make_server: EngineFactory,
    identity: bytes,
    key: bytes,
    lookup: Callable[[bytes], bytes | None],
) -> tuple[HandshakeEngine, HandshakeEngine]:
    client = make_client(auth=AuthMode.PSK, psk=PskClientCredentials(identity, key))
    return client, make_server(auth=AuthMode.PSK, psk_lookup=lookup)


def test_wrong_psk_key(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = _psk_pair(
        make_client, make_server, b"host", b"k" * 32, {b"host": b"K" * 32}.get
    )
    result = exchange(client, server)
    # The server cannot verify the PSK binder.  RFC 8446 §6.2 calls that decrypt_error (51);
    # GnuTLS returns GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER from the binder check, which
    # gnutls_alert_send_appropriate() turns into illegal_parameter (47).
    detected, _ = _assert_refused(
        result, client, server, by=Role.SERVER, alert=ALERT_ILLEGAL_PARAMETER
    )
    assert "illegal parameter" in detected.reason.lower()
    assert result.server.of(SendHandshake) == []


def test_unknown_psk_identity(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = _psk_pair(
        make_client, make_server, b"stranger", b"k" * 32, {b"host": b"k" * 32}.get
    )
    result = exchange(client, server)
    # EKEYREJECTED on both sides: NVMe revokes the key it offered on this status.
    _assert_refused(
        result,
        client,
        server,
        by=Role.SERVER,
        alert=ALERT_UNKNOWN_PSK_IDENTITY,
        code=errno.EKEYREJECTED,
        peer_code=errno.EKEYREJECTED,
    )


def test_psk_lookup_that_raises_fails_the_handshake_not_the_process(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    def broken(identity: bytes) -> bytes | None:
        raise RuntimeError("keyring unavailable")

    client, server = _psk_pair(make_client, make_server, b"host", b"k" * 32, broken)
    result = exchange(client, server)
    # Our key store failing is not the client's fault: EIO and internal_error, never
    # EKEYREJECTED (NVMe would revoke a key that may be valid).
    _assert_refused(
        result,
        client,
        server,
        by=Role.SERVER,
        alert=ALERT_INTERNAL_ERROR,
        code=errno.EIO,
        peer_code=errno.EACCES,
    )


# -- corrupted handshake bytes ------------------------------------------------------------


def _flip(sender: Role, level: int, offset: int) -> Callable[[Role, int, bytes], bytes]:
    """Flips the low bit of byte ``offset`` in ``sender``'s first message at ``level``."""
    done = False

    def tamper(who: Role, at: int, data: bytes) -> bytes:
        nonlocal done
        if done or who is not sender or at != level:
            return data
        done = True
        changed = bytearray(data)
        changed[offset] ^= 0x01
        return bytes(changed)

    return tamper


@pytest.mark.parametrize(
    ("what", "level", "offset", "alert"),
    [
        # handshake type 2 -> 3: not the ServerHello the client waits for.
        ("ServerHello type", INITIAL, 0, ALERT_UNEXPECTED_MESSAGE),
        # A byte of ServerHello.random: the transcripts differ, so the server's
        # CertificateVerify signature fails on the client (GNUTLS_E_PK_SIG_VERIFY_FAILED).
        ("ServerHello random", INITIAL, 10, ALERT_DECRYPT_ERROR),
        # handshake type 8 -> 9: EncryptedExtensions expected.
        ("EncryptedExtensions type", HANDSHAKE, 0, ALERT_UNEXPECTED_MESSAGE),
        # The last byte of the server Finished's verify_data (GNUTLS_E_ERROR_IN_FINISHED_PACKET).
        ("server Finished", HANDSHAKE, -1, ALERT_DECRYPT_ERROR),
    ],
)
def test_corrupted_server_flight(
    what: str,
    level: int,
    offset: int,
    alert: int,
    make_client: EngineFactory,
    make_server: EngineFactory,
    exchange: Exchange,
) -> None:
    client, server = make_client(), make_server()
    result = exchange(client, server, tamper=_flip(Role.SERVER, level, offset))
    _assert_refused(result, client, server, by=Role.CLIENT, alert=alert)
    assert _handshake_bytes(result.client) == []


def test_corrupted_client_finished(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    client, server = make_client(), make_server()
    result = exchange(client, server, tamper=_flip(Role.CLIENT, HANDSHAKE, -1))
    failed = _failure(result.server)
    assert (failed.errno, failed.alert) == (errno.EACCES, ALERT_DECRYPT_ERROR)
    assert server.state is State.FAILED
    assert client.state is State.COMPLETE  # it sent a good Finished; the damage was in transit


def test_truncated_length_waits_for_more_rather_than_failing(
    make_client: EngineFactory, make_server: EngineFactory, exchange: Exchange
) -> None:
    # The ServerHello's 24-bit length made 64 KiB larger: the client waits for the rest
    # (in QUIC the connection's idle/handshake timer ends this, not TLS).
    client, server = make_client(), make_server()
    result = exchange(client, server, tamper=_flip(Role.SERVER, INITIAL, 1))
    assert client.state is State.HANDSHAKING
    assert result.client.of(HandshakeFailed) == [] and result.client.of(SendHandshake)[1:] == []
