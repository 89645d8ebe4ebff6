# SPDX-License-Identifier: GPL-2.0-only
"""Our TCP handshake against an independent TLS stack: OpenSSL, through Python's ``ssl``
and (for external PSKs, which Python 3.11's ``ssl`` cannot do) the ``openssl`` command.

The kTLS material is proven without kernel TLS: records the OpenSSL peer
sends after the handshake (its NewSessionTickets, then data) open with our
extracted RX crypto_info, and records sealed with our TX crypto_info are read
by OpenSSL as application data.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from ktls_support import TIMEOUT, drain_and_close, loopback_pair, read_records

from quichsd.ktls import TcpCredentials, TcpHandshakeResult, run_tcp_handshake
from quichsd.tls import AuthMode, CertificateCredentials, Role
from quichsd.tls.selfsigned import Issued, issue
from tests.support.ktls_soft import RecordLayer

SERVER_NAME = "server.test"


@dataclass(frozen=True)
class Files:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    stranger_cert: str
    stranger_key: str


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory,
    ca: Issued,
    other_ca: Issued,
    server_leaf: Issued,
    client_leaf: Issued,
) -> Files:
    tmp = tmp_path_factory.mktemp("openssl")
    stranger = issue(other_ca, ("client.test",))

    def put(name: str, data: bytes) -> str:
        path = tmp / name
        path.write_bytes(data)
        return str(path)

    return Files(
        ca=put("ca.pem", ca.cert_pem),
        server_cert=put("server.pem", server_leaf.cert_pem + ca.cert_pem),
        server_key=put("server.key", server_leaf.key_pem),
        client_cert=put("client.pem", client_leaf.cert_pem),
        client_key=put("client.key", client_leaf.key_pem),
        stranger_cert=put("stranger.pem", stranger.cert_pem),
        stranger_key=put("stranger.key", stranger.key_pem),
    )


@contextmanager
def in_thread(target: Callable[[], None]) -> Iterator[None]:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    yield
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def ours(sock: socket.socket, role: Role, creds: TcpCredentials) -> TcpHandshakeResult:
    return asyncio.run(run_tcp_handshake(sock, role, creds, TIMEOUT, install=None))


# -- Python ssl as the server --------------------------------------------------------------


def openssl_server(
    sock: socket.socket, files: Files, out: dict[str, object], *, reply: bool = True
) -> Callable[[], None]:
    def run() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(files.server_cert, files.server_key)
        ctx.load_verify_locations(files.ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        try:
            with ctx.wrap_socket(sock, server_side=True) as tls:
                out["version"] = tls.version()
                out["cipher"] = tls.cipher()
                out["peer"] = tls.getpeercert(binary_form=True)
                if reply:
                    tls.sendall(b"from openssl")
                    out["read"] = tls.recv(100)
        except (OSError, ssl.SSLError) as exc:
            out["error"] = exc

    return run


def test_our_client_against_openssl_server(
    files: Files, client_cert_creds: CertificateCredentials
) -> None:
    out: dict[str, object] = {}
    with loopback_pair() as (c, s), in_thread(openssl_server(s, files, out)):
        creds = TcpCredentials(AuthMode.X509, certificates=client_cert_creds, peer_name=SERVER_NAME)
        result = ours(c, Role.CLIENT, creds)
        assert result.ok, result.reason
        material = result.material
        assert material is not None
        # OpenSSL sends two NewSessionTickets, then our data: all under our RX keys.
        opened = read_records(c, RecordLayer(material.rx))
        assert [kind for kind, _ in opened] == [22, 22, 23]
        assert all(body[0] == 4 for kind, body in opened if kind == 22)  # new_session_ticket
        assert opened[-1] == (23, b"from openssl")
        c.sendall(RecordLayer(material.tx).seal(b"sealed with our TX crypto_info"))
    assert "error" not in out, out.get("error")
    assert out["version"] == "TLSv1.3"
    assert out["read"] == b"sealed with our TX crypto_info"
    assert out["peer"]  # OpenSSL saw our client certificate
    assert result.completion is not None and len(result.completion.peer_certificates) == 2


def test_our_client_rejects_wrong_name_from_openssl(
    files: Files, trust_creds: CertificateCredentials
) -> None:
    out: dict[str, object] = {}
    with loopback_pair() as (c, s), in_thread(openssl_server(s, files, out)):
        creds = TcpCredentials(AuthMode.X509, certificates=trust_creds, peer_name="other.test")
        result = ours(c, Role.CLIENT, creds)
        drain_and_close(c)
    assert result.status == errno.EACCES
    assert "name" in result.reason
    assert "BAD_CERTIFICATE" in str(out["error"])


# -- Python ssl as the client ---------------------------------------------------------------


def openssl_client(
    sock: socket.socket,
    files: Files,
    out: dict[str, object],
    *,
    name: str = SERVER_NAME,
    cert: tuple[str, str] | None = None,
    tls12: bool = False,
) -> Callable[[], None]:
    def run() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(files.ca)
        if cert:
            ctx.load_cert_chain(*cert)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                out["version"] = tls.version()
                tls.sendall(b"from openssl")
                out["read"] = tls.recv(100)
        except (OSError, ssl.SSLError) as exc:
            out["error"] = exc

    return run


@pytest.mark.parametrize("with_cert", [False, True])
def test_openssl_client_against_our_server(
    files: Files, server_creds: CertificateCredentials, with_cert: bool
) -> None:
    out: dict[str, object] = {}
    cert = (files.client_cert, files.client_key) if with_cert else None
    with loopback_pair() as (c, s), in_thread(openssl_client(c, files, out, cert=cert)):
        result = ours(s, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds))
        assert result.ok, result.reason
        material = result.material
        assert material is not None
        assert read_records(s, RecordLayer(material.rx)) == [(23, b"from openssl")]
        s.sendall(RecordLayer(material.tx).seal(b"sealed with our TX crypto_info"))
    assert "error" not in out, out.get("error")
    assert out["read"] == b"sealed with our TX crypto_info"
    assert result.completion is not None
    assert bool(result.completion.peer_certificates) is with_cert


def bio_handshake(
    ctx: ssl.SSLContext, sock: socket.socket
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """An OpenSSL client on memory BIOs, driven until its side of the handshake is done, so
    the caller decides exactly which bytes go out next (its last flight is still queued)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
    while True:
        try:
            tls.do_handshake()
            return tls, incoming, outgoing
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))


def test_untrusted_openssl_client_gets_access_denied(
    files: Files, server_creds: CertificateCredentials
) -> None:
    # A memory-BIO client: it sends its last flight, then reads exactly what comes back.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca)
    ctx.load_cert_chain(files.stranger_cert, files.stranger_key)
    seen: dict[str, object] = {}
    with loopback_pair() as (c, s):

        def client() -> None:
            tls, incoming, outgoing = bio_handshake(ctx, c)
            c.sendall(outgoing.read())
            incoming.write(c.recv(65536))
            try:
                tls.read(100)
            except ssl.SSLError as exc:
                seen["error"] = exc

        with in_thread(client):
            result = ours(s, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds))
            drain_and_close(s)
    assert result.status == errno.EACCES
    assert result.alert_sent == 49
    assert "ACCESS_DENIED" in str(seen["error"])


def test_openssl_client_with_wrong_name_fails_our_server(
    files: Files, server_creds: CertificateCredentials
) -> None:
    out: dict[str, object] = {}
    with loopback_pair() as (c, s), in_thread(openssl_client(c, files, out, name="other.test")):
        result = ours(s, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds))
        drain_and_close(s)
    assert result.status in (errno.EACCES, errno.ETIMEDOUT)
    assert isinstance(out["error"], ssl.SSLCertVerificationError)


def test_tls12_only_client_is_refused(files: Files, server_creds: CertificateCredentials) -> None:
    out: dict[str, object] = {}
    with loopback_pair() as (c, s), in_thread(openssl_client(c, files, out, tls12=True)):
        result = ours(s, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds))
        drain_and_close(s)
    assert result.status == errno.EACCES
    assert isinstance(out["error"], ssl.SSLError)


def test_data_right_behind_finished_stays_in_the_socket(
    files: Files, server_creds: CertificateCredentials
) -> None:
    """Client Finished and the first application record in one TCP segment."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca)
    with loopback_pair() as (c, s):

        def client() -> None:
            tls, _incoming, outgoing = bio_handshake(ctx, c)
            tls.write(b"right behind Finished")
            c.sendall(outgoing.read())  # Finished + data, one send

        with in_thread(client):
            result = ours(s, Role.SERVER, TcpCredentials(AuthMode.X509, certificates=server_creds))
            assert result.ok, result.reason
            assert result.material is not None
            assert read_records(s, RecordLayer(result.material.rx)) == [
                (23, b"right behind Finished")
            ]


# -- the openssl command for external PSKs ------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@needs_openssl
def test_our_psk_client_against_openssl_s_server() -> None:
    key, identity = os.urandom(32), b"quichsd-psk-test"
    port = _free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-tls1_3", "-accept", f"127.0.0.1:{port}", "-nocert",
         "-psk", key.hex(), "-psk_identity", identity.decode(), "-naccept", "1", "-rev"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with c:
            creds = TcpCredentials(AuthMode.PSK, psk_identity=identity, psk_key=key)
            result = ours(c, Role.CLIENT, creds)
            assert result.ok, result.reason
            assert result.cipher in (51, 53)  # a 32-byte key: the SHA-256 list
            material = result.material
            assert material is not None
            c.sendall(RecordLayer(material.tx).seal(b"hello psk\n"))
            opened = read_records(c, RecordLayer(material.rx))
            assert opened[-1] == (23, b"ksp olleh\n")  # s_server -rev
    finally:
        output = server.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
    assert "TLS_AES_128_GCM_SHA256" in output or "TLS_AES_128_CCM_SHA256" in output


@needs_openssl
def test_openssl_s_client_against_our_psk_server(tmp_path: Path) -> None:
    key, identity = os.urandom(32), b"quichsd-psk-test"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            ["openssl", "s_client", "-tls1_3", "-connect", f"127.0.0.1:{port}",
             "-psk", key.hex(), "-psk_identity", identity.decode(), "-quiet", "-ign_eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        listener.settimeout(TIMEOUT)
        s, _ = listener.accept()
    with s:
        s.settimeout(TIMEOUT)
        creds = TcpCredentials(AuthMode.PSK, psk_lookup={identity: key}.get)
        assert client.stdin is not None
        client.stdin.write(b"hello from s_client\n")
        client.stdin.flush()
        result = ours(s, Role.SERVER, creds)
        assert result.ok, result.reason
        assert result.completion is not None and result.completion.psk_identity == identity
        material = result.material
        assert material is not None
        assert read_records(s, RecordLayer(material.rx)) == [(23, b"hello from s_client\n")]
        s.sendall(RecordLayer(material.tx).seal(b"hello from our TX\n"))
        drain_and_close(s)
    stdout, _ = client.communicate(timeout=TIMEOUT)
    assert b"hello from our TX" in stdout


@needs_openssl
def test_openssl_s_client_with_unknown_identity_gets_ekeyrejected() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            ["openssl", "s_client", "-tls1_3", "-connect", f"127.0.0.1:{port}",
             "-psk", "00" * 32, "-psk_identity", "stranger"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        listener.settimeout(TIMEOUT)
        s, _ = listener.accept()
    with s:
        s.settimeout(TIMEOUT)
        result = ours(
            s, Role.SERVER, TcpCredentials(AuthMode.PSK, psk_lookup=lambda identity: None)
        )
        drain_and_close(s)
    output = client.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
    assert result.status == errno.EKEYREJECTED
    assert result.alert_sent == 115
    assert "unknown psk identity" in output.lower()
