"""``quichsd handshake client|server``: a handshake on a QUIC socket opened here.

For a developer of a QUIC kernel consumer: does our agent, with these
credentials, complete a handshake with that peer, and what was negotiated?
On a real IPPROTO_QUIC socket by default; ``--userspace`` runs the same agent
over the userspace model of the kernel socket (loopback only), for machines
without the QUIC module.  Every failure is one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography import x509

from quichsd.api import client_credentials, load_psk_file, server_credentials
from quichsd.quic import sockopt
from quichsd.quic.abi import IPPROTO_QUIC, Config
from quichsd.quic.blocking import run_handshake
from quichsd.quic.driver import Credentials, HandshakeResult
from quichsd.tls import Role, TlsSetupError
from quichsd.tls.binding import keylog_to
from quichsd.tls.levels import Cipher

EXIT_FAILED = 1
EXIT_USAGE = 2

NO_QUIC_MODULE = (
    "the kernel has no QUIC module (IPPROTO_QUIC 261 unsupported); "
    "load it (modprobe quic) or use --userspace"
)


class ManualError(Exception):
    """One line for the person at the terminal."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    client = sub.add_parser("client", help="connect to HOST PORT and run the client handshake")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("--ca", type=Path, help="trust anchors (PEM); default: the system's")
    client.add_argument(
        "--no-verify",
        action="store_true",
        help="anonymous client that does not check the server (insecure)",
    )
    server = sub.add_parser("server", help="listen on ADDR PORT and run one server handshake")
    server.add_argument("addr")
    server.add_argument("port", type=int)
    server.add_argument("--ca", type=Path, help="trust anchors for client certificates (PEM)")
    server.add_argument(
        "--request-cert",
        choices=["ignore", "request", "require"],
        default="ignore",
        help="ask the client for a certificate",
    )
    for each in (client, server):
        each.add_argument("--alpn", default="", help="comma-separated ALPN list, e.g. smb,h3")
        each.add_argument("--cert", type=Path, help="our certificate chain (PEM)")
        each.add_argument("--key", type=Path, help="our private key (PEM)")
        each.add_argument(
            "--psk-file",
            type=Path,
            help="PSK as 'identity:hexkey' (client: offered; server: accepted)",
        )
        each.add_argument("--peer-name", help="name to verify the server as (and SNI)")
        each.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        each.add_argument("--cipher", choices=[c.name for c in Cipher], default="ANY")
        each.add_argument(
            "--message",
            help="after the handshake, send this on a stream and "
            "print the reply (--userspace only)",
        )
        each.add_argument(
            "--keylog",
            type=Path,
            help="write this handshake's TLS secrets to FILE (0600, NSS key log format) "
            "for a packet analyser; SSLKEYLOGFILE is never used",
        )
        each.add_argument(
            "--userspace",
            action="store_true",
            help="use the userspace model of the kernel QUIC socket (loopback)",
        )


def run(args: argparse.Namespace) -> int:
    try:
        with ExitStack() as stack:
            result, sock = _run(args, stack)
            print(_describe(result, args.role))
            if not result.ok:
                return EXIT_FAILED
            if args.message is not None:
                _exchange(sock, args)
            return 0
    except ManualError as exc:
        print(f"quichsd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TlsSetupError, OSError, ValueError) as exc:
        print(f"quichsd: {args.role} handshake not started: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace, stack: ExitStack) -> tuple[HandshakeResult, Any]:
    alpn = tuple(p.strip() for p in args.alpn.split(",") if p.strip())
    config = Config(payload_cipher_type=int(Cipher[args.cipher]))
    if args.keylog is not None:
        print(f"quichsd: warning: writing TLS secrets to {args.keylog}", file=sys.stderr)
        stack.enter_context(keylog_to(args.keylog))
    if args.role == "client":
        creds = _client_credentials(args)
        sock = stack.enter_context(_client_socket(args, alpn, config))
    else:
        creds = _server_credentials(args)
        sock = stack.enter_context(_accepted_socket(args, alpn, config, stack))
    return run_handshake(sock, Role(args.role), creds, args.timeout), sock


def _client_credentials(args: argparse.Namespace) -> Credentials:
    psk = load_psk_file(args.psk_file) if args.psk_file else None
    return client_credentials(
        cafile=args.ca,
        certfile=args.cert,
        keyfile=args.key,
        psk=psk,
        peer_name=args.peer_name or args.host,
        verify=not args.no_verify,
    )


def _server_credentials(args: argparse.Namespace) -> Credentials:
    if args.psk_file:
        identity, key = load_psk_file(args.psk_file)
        return server_credentials(psk_lookup=lambda asked: key if asked == identity else None)
    if args.cert is None or args.key is None:
        raise ManualError("a server needs --cert and --key (or --psk-file)")
    return server_credentials(certfile=args.cert, keyfile=args.key, cafile=args.ca)


def _kernel_socket(host: str, port: int, passive: bool) -> tuple[socket.socket, Any]:
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE if passive else 0
        )
    except socket.gaierror as exc:
        raise ManualError(f"cannot resolve {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.socket(family, socket.SOCK_DGRAM, IPPROTO_QUIC), address
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ESOCKTNOSUPPORT):
            raise ManualError(NO_QUIC_MODULE) from None
        raise


def _client_socket(args: argparse.Namespace, alpn: tuple[str, ...], config: Config) -> Any:
    if args.userspace:
        from quichsd.model import ModelQuicSocket

        return ModelQuicSocket.connect(
            (_loopback(args.host), args.port),
            alpn=alpn,
            config=config,
            server_name=args.peer_name or args.host,
        )
    sock, address = _kernel_socket(args.host, args.port, passive=False)
    if alpn:
        sockopt.set_alpn(sock, alpn)
    sockopt.set_config(sock, config)
    sock.connect(address)
    return sock


def _accepted_socket(
    args: argparse.Namespace, alpn: tuple[str, ...], config: Config, stack: ExitStack
) -> Any:
    if args.userspace:
        from quichsd.model import ModelQuicListener

        listener: Any = stack.enter_context(
            ModelQuicListener((_loopback(args.addr), args.port), alpn=alpn, config=config)
        )
        print(f"listening on {listener.address[0]}:{listener.address[1]} (userspace)", flush=True)
        return _accept(listener.accept, args.timeout)
    sock, address = _kernel_socket(args.addr, args.port, passive=True)
    stack.callback(sock.close)
    if alpn:
        sockopt.set_alpn(sock, alpn)  # before listen(): ALPN also routes to listeners
    sockopt.set_config(sock, config)
    sock.bind(address)
    sock.listen(1)
    print(f"listening on {args.addr}:{args.port}", flush=True)
    sock.settimeout(args.timeout)
    return _accept(lambda _timeout: sock.accept()[0], args.timeout)


def _accept(accept: Callable[[float], Any], timeout: float) -> Any:
    try:
        return accept(timeout)
    except (TimeoutError, BlockingIOError):
        raise ManualError(f"no client connected within {timeout:g} s") from None


def _loopback(host: str) -> str:
    address = "127.0.0.1" if host == "localhost" else host
    if not address.startswith("127."):
        raise ManualError(f"--userspace talks to loopback only (127.0.0.0/8), not {host}")
    return address


def _describe(result: HandshakeResult, role: str) -> str:
    if not result.ok:
        return (
            f"{role} handshake FAILED: {result.reason} (errno {result.status}, "
            f"{errno.errorcode.get(result.status, '?')})"
        )
    done = result.complete
    peer = "-"
    if done is not None and done.peer_certificates:
        peer = x509.load_der_x509_certificate(done.peer_certificates[0]).subject.rfc4514_string()
    elif done is not None and done.psk_identity:
        peer = "PSK " + done.psk_identity.decode(errors="replace")
    return f"{role} handshake OK: QUIC v1, {result.summary()}, peer {peer}"


def _exchange(sock: Any, args: argparse.Namespace) -> None:
    if not hasattr(sock, "send_stream"):
        print("(--message needs --userspace: stream I/O on kernel sockets is the consumer's)")
        return
    from quichsd.model.streams import echo_back, echo_over

    if args.role == "client":
        reply = echo_over(sock, args.message.encode(), args.timeout)
        print(f"reply: {reply.decode(errors='replace')}")
    else:
        data = echo_back(sock, args.timeout, reply=args.message.encode() or None)
        print(f"received: {data.decode(errors='replace')}")
