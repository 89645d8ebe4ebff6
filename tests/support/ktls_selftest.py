# SPDX-License-Identifier: GPL-2.0-only
"""``python -m tests.support.ktls_selftest``: the whole TCP + kTLS path on this kernel.

On 127.0.0.1: our client against our server for each kTLS cipher (X.509,
then PSK), each end handing its keys to the kernel; messages both ways
through the kernel's TLS (several records' worth); the kernel's view of the
keys read back with getsockopt; then the same against Python's ``ssl``
(OpenSSL) in userspace on the other end, both roles, with the
NewSessionTickets an OpenSSL server sends arriving as non-data records; and
/proc/net/tls_stat counted before and after.

Prints one line per check and a last line PASS / FAIL / SKIP; exits 0, 1, or
77 when the kernel has no kTLS (the automake "skipped" code).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import platform
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from quichsd.ktls.abi import SOL_TLS, TLS_GET_RECORD_TYPE, TLS_RX, TLS_TX, ContentType, CryptoInfo
from quichsd.ktls.aio import run_tcp_handshake
from quichsd.ktls.handshake import TcpHandshakeResult
from quichsd.ktls.session import TcpCredentials
from quichsd.tls import AuthMode, CertificateCredentials, Role, gnutls_version
from quichsd.tls.levels import CIPHER_SUITE_NAMES
from quichsd.tls.selfsigned import Issued, issue, make_ca
from tests.support.ktls_soft import RecordLayer, split_records

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77
TLS_STAT = Path("/proc/net/tls_stat")
SERVER_NAME = "server.test"
CIPHERS = (51, 52, 53, 54)
TIMEOUT = 20.0
#: Bigger than one record, so the kernel splits and reassembles.
BULK = 40_000


class SelfTestSkip(Exception):
    """The kernel cannot do kTLS at all."""


class SelfTestFailure(Exception):
    pass


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def ok(self, text: str) -> None:
        self.lines.append(f"ok    {text}")
        print(f"ok    {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures += 1
        print(f"FAIL  {text}", flush=True)


def read_tls_stat(path: Path = TLS_STAT) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    stats: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


@contextmanager
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def recv_app(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes of application data from a kTLS socket, skipping other records."""
    data = b""
    while len(data) < size:
        chunk, ancdata, _flags, _addr = sock.recvmsg(size - len(data), socket.CMSG_SPACE(1))
        record_type: int = ContentType.APPLICATION_DATA
        for level, kind, value in ancdata:
            if level == SOL_TLS and kind == TLS_GET_RECORD_TYPE and value:
                record_type = value[0]
        if record_type != ContentType.APPLICATION_DATA:
            continue  # e.g. a NewSessionTicket (22) from an OpenSSL server
        if not chunk:
            raise SelfTestFailure(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def kernel_view(sock: socket.socket, option: int, expected: CryptoInfo) -> str | None:
    """Compares getsockopt(SOL_TLS, TLS_TX/RX) with what was installed; None if equal."""
    size = expected.layout.size
    try:
        blob = sock.getsockopt(SOL_TLS, option, size)
    except OSError as exc:
        return f"getsockopt: {exc.strerror}"
    try:
        seen = CryptoInfo.unpack(blob)
    except ValueError as exc:
        return str(exc)
    if (seen.version, seen.cipher) != (expected.version, expected.cipher):
        return f"kernel reports version {seen.version:#x} cipher {seen.cipher}"
    if seen.key != expected.key and any(seen.key):
        return "kernel reports a different key"
    return None


def _credentials(tmp: Path) -> tuple[Issued, TcpCredentials, TcpCredentials]:
    ca = make_ca("quichsd kTLS self-test CA")
    server = issue(ca, (SERVER_NAME,))
    client = issue(ca, ("client.test",))
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "server.pem").write_bytes(server.cert_pem)
    (tmp / "server.key").write_bytes(server.key_pem)
    (tmp / "client.pem").write_bytes(client.cert_pem)
    (tmp / "client.key").write_bytes(client.key_pem)
    server_creds = TcpCredentials(
        AuthMode.X509,
        certificates=CertificateCredentials(
            chain=server.cert_pem, key=server.key_pem, trust=ca.cert_pem
        ),
    )
    client_creds = TcpCredentials(
        AuthMode.X509,
        certificates=CertificateCredentials(
            chain=client.cert_pem, key=client.key_pem, trust=ca.cert_pem
        ),
        peer_name=SERVER_NAME,
    )
    return ca, client_creds, server_creds


def _check_installed(result: TcpHandshakeResult, who: str) -> None:
    if result.ok:
        return
    error = result.ktls_error
    if error is not None and error.step.startswith("TCP_ULP") and error.cause == errno.ENOENT:
        raise SelfTestSkip(str(error.strerror))
    raise SelfTestFailure(f"{who}: {result.reason} (errno {result.status})")


def _exchange(a: socket.socket, b: socket.socket, label: str) -> None:
    for sender, receiver, what in ((a, b, "client→server"), (b, a, "server→client")):
        message = os.urandom(BULK)
        thread = threading.Thread(target=sender.sendall, args=(message,), daemon=True)
        thread.start()
        got = recv_app(receiver, len(message))
        thread.join(TIMEOUT)
        if got != message:
            raise SelfTestFailure(f"{label} {what}: data differs after the kernel")


def ours_vs_ours(
    report: Report,
    only: tuple[int, ...] | None,
    client: TcpCredentials,
    server: TcpCredentials,
    label: str,
) -> None:
    with loopback_pair() as (c, s):
        for sock in (c, s):
            sock.settimeout(TIMEOUT)

        async def both() -> tuple[TcpHandshakeResult, TcpHandshakeResult]:
            return await asyncio.gather(
                run_tcp_handshake(c, Role.CLIENT, client, TIMEOUT, ciphers=only),
                run_tcp_handshake(s, Role.SERVER, server, TIMEOUT, ciphers=only),
            )

        rc, rs = asyncio.run(both())
        _check_installed(rc, f"{label} client")
        _check_installed(rs, f"{label} server")
        suite = CIPHER_SUITE_NAMES.get(rc.cipher, str(rc.cipher))
        for sock, result, who in ((c, rc, "client"), (s, rs, "server")):
            material = result.material
            assert material is not None
            for option, info, name in ((TLS_TX, material.tx, "TX"), (TLS_RX, material.rx, "RX")):
                problem = kernel_view(sock, option, info)
                if problem:
                    raise SelfTestFailure(f"{label} {who} {name}: {problem}")
        _exchange(c, s, label)
        limit = rc.installed
        extra = (
            f", TLS_TX_MAX_PAYLOAD_LEN {limit.payload_limit}"
            if limit and limit.payload_limit_set
            else ", no TLS_TX_MAX_PAYLOAD_LEN in this kernel"
        )
        report.ok(f"{label} {suite}: handshake, kTLS TX+RX both ends, {BULK} B each way{extra}")


def ours_vs_openssl(
    report: Report, tmp: Path, client: TcpCredentials, server: TcpCredentials
) -> None:
    # Our server (kTLS) ← Python ssl client (OpenSSL in userspace).
    with loopback_pair() as (c, s):
        c.settimeout(TIMEOUT)
        s.settimeout(TIMEOUT)
        errors: list[str] = []
        received: list[bytes] = []
        message = os.urandom(BULK)

        def ssl_client() -> None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(tmp / "ca.pem"))
            ctx.load_cert_chain(str(tmp / "client.pem"), str(tmp / "client.key"))
            try:
                with ctx.wrap_socket(c, server_hostname=SERVER_NAME) as tls:
                    tls.sendall(message)
                    buf = b""
                    while len(buf) < len(message):
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    received.append(buf)
            except (OSError, ssl.SSLError) as exc:
                errors.append(repr(exc))

        thread = threading.Thread(target=ssl_client, daemon=True)
        thread.start()
        rs = asyncio.run(run_tcp_handshake(s, Role.SERVER, server, TIMEOUT))
        _check_installed(rs, "server vs OpenSSL")
        got = recv_app(s, len(message))
        s.sendall(got[::-1])
        thread.join(TIMEOUT)
        if errors:
            raise SelfTestFailure(f"OpenSSL client: {errors[0]}")
        if got != message or received != [message[::-1]]:
            raise SelfTestFailure("our kTLS server and an OpenSSL client disagree on the data")
        report.ok("our server with kTLS ↔ OpenSSL client (userspace), X.509 both ways")

    # Our client (kTLS) → Python ssl server, which sends two NewSessionTickets first.
    with loopback_pair() as (c, s):
        c.settimeout(TIMEOUT)
        s.settimeout(TIMEOUT)
        errors = []
        message = os.urandom(BULK)

        def ssl_server() -> None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tmp / "server.pem"), str(tmp / "server.key"))
            try:
                with ctx.wrap_socket(s, server_side=True) as tls:
                    buf = b""
                    while len(buf) < len(message):
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    tls.sendall(buf[::-1])
            except (OSError, ssl.SSLError) as exc:
                errors.append(repr(exc))

        thread = threading.Thread(target=ssl_server, daemon=True)
        thread.start()
        rc = asyncio.run(run_tcp_handshake(c, Role.CLIENT, client, TIMEOUT))
        _check_installed(rc, "client vs OpenSSL")
        c.sendall(message)
        got = recv_app(c, len(message))
        thread.join(TIMEOUT)
        if errors:
            raise SelfTestFailure(f"OpenSSL server: {errors[0]}")
        if got != message[::-1]:
            raise SelfTestFailure("our kTLS client and an OpenSSL server disagree on the data")
        report.ok("our client with kTLS ↔ OpenSSL server (userspace), tickets skipped as records")


def record_size_limit(report: Report, client: TcpCredentials, server: TcpCredentials) -> None:
    """A peer advertising record_size_limit 513 gets records of at most 512 bytes.

    The client stays in userspace (no kTLS): it opens the server's records with
    the software record layer, so it also checks the kernel's record format and
    the key layout independently, and it seals its own records for the
    server's kernel RX.
    """
    limit = 512
    with loopback_pair() as (c, s):
        c.settimeout(TIMEOUT)
        s.settimeout(TIMEOUT)

        async def both() -> tuple[TcpHandshakeResult, TcpHandshakeResult]:
            return await asyncio.gather(
                run_tcp_handshake(
                    c, Role.CLIENT, client, TIMEOUT, install=None, record_size_limit=limit
                ),
                run_tcp_handshake(s, Role.SERVER, server, TIMEOUT),
            )

        rc, rs = asyncio.run(both())
        _check_installed(rc, "record size client")
        error = rs.ktls_error
        if (
            error is not None
            and error.step.startswith("TLS_TX_MAX_PAYLOAD_LEN")
            and error.cause == errno.ENOPROTOOPT
        ):
            report.ok(f"record size: kernel lacks TLS_TX_MAX_PAYLOAD_LEN, EIO ({rs.reason})")
            return
        _check_installed(rs, "record size server")
        material = rc.material
        assert material is not None
        tx, rx = RecordLayer(material.tx), RecordLayer(material.rx)
        message = os.urandom(BULK)
        thread = threading.Thread(target=s.sendall, args=(message,), daemon=True)
        thread.start()
        buf, got, largest = b"", b"", 0
        while len(got) < len(message):
            chunk = c.recv(65536)
            if not chunk:
                raise SelfTestFailure("record size: connection closed")
            records, buf = split_records(buf + chunk)
            for record in records:
                kind, content = rx.open(record)
                if kind == ContentType.APPLICATION_DATA:
                    got += content
                    largest = max(largest, len(content))
        thread.join(TIMEOUT)
        if got != message:
            raise SelfTestFailure("record size: data differs")
        if largest > limit:
            raise SelfTestFailure(f"record size: kernel sent {largest} B records, limit {limit}")
        c.sendall(b"".join(tx.seal(message[i : i + 9000]) for i in range(0, BULK, 9000)))
        if recv_app(s, len(message)) != message:
            raise SelfTestFailure("record size: kernel RX disagrees with the software records")
        report.ok(
            f"record size: peer limit {limit + 1} → kernel records ≤ {largest} B; "
            "software record layer ↔ kernel both ways"
        )


def run(ciphers: tuple[int, ...], *, openssl: bool = True) -> int:
    print(f"quichsd kTLS self-test: kernel {platform.release()}, GnuTLS {gnutls_version()}")
    report = Report()
    before = read_tls_stat()
    with tempfile.TemporaryDirectory(prefix="quichsd-ktls-") as tmpdir:
        tmp = Path(tmpdir)
        _ca, client, server = _credentials(tmp)
        key = os.urandom(32)
        identity = b"quichsd-selftest"
        psk_client = TcpCredentials(AuthMode.PSK, psk_identity=identity, psk_key=key)
        psk_server = TcpCredentials(AuthMode.PSK, psk_lookup={identity: key}.get)
        steps: list[tuple[str, Callable[[], None]]] = []
        for cipher in ciphers:
            steps.append(
                (
                    f"X.509 {cipher}",
                    partial(ours_vs_ours, report, (cipher,), client, server, "X.509"),
                )
            )
        # A 32-byte key selects the SHA-256 list: the system's order among its ciphers.
        steps.append(("PSK", partial(ours_vs_ours, report, None, psk_client, psk_server, "PSK")))
        steps.append(("record size", partial(record_size_limit, report, client, server)))
        if openssl:
            steps.append(("OpenSSL", partial(ours_vs_openssl, report, tmp, client, server)))
        for name, step in steps:
            try:
                step()
            except SelfTestSkip as exc:
                print(f"SKIP: {exc}")
                return EXIT_SKIP
            except (SelfTestFailure, OSError) as exc:
                report.fail(f"{name}: {exc}")
    after = read_tls_stat()
    if not after:
        report.fail(f"{TLS_STAT} is missing although kTLS was installed")
    else:
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        shown = ", ".join(f"{k} +{v}" for k, v in sorted(delta.items()) if v)
        if delta.get("TlsTxSw", 0) + delta.get("TlsTxDevice", 0) <= 0:
            report.fail(f"{TLS_STAT} counted no kTLS TX sessions ({shown or 'no change'})")
        elif delta.get("TlsRxSw", 0) + delta.get("TlsRxDevice", 0) <= 0:
            report.fail(f"{TLS_STAT} counted no kTLS RX sessions ({shown or 'no change'})")
        else:
            report.ok(f"{TLS_STAT}: {shown}")
    if report.failures:
        print(f"FAIL ({report.failures} failed)")
        return EXIT_FAIL
    print("PASS")
    return EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.ktls_selftest", description=__doc__
    )
    parser.add_argument(
        "--cipher",
        type=int,
        action="append",
        choices=CIPHERS,
        help="kTLS cipher number to test (repeatable; default: all four)",
    )
    parser.add_argument(
        "--no-openssl", action="store_true", help="skip the checks against Python's ssl"
    )
    args = parser.parse_args(argv)
    ciphers = tuple(args.cipher) if args.cipher else CIPHERS
    return run(ciphers, openssl=not args.no_openssl)


if __name__ == "__main__":
    sys.exit(main())
