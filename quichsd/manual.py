# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd handshake client|server|pki``: a handshake on a QUIC socket opened here.

For a developer of a QUIC kernel consumer: does our agent, with these
credentials, complete a handshake with that peer, and what was negotiated?
On a real IPPROTO_QUIC socket by default; ``--userspace`` runs the same agent
over the userspace model of the kernel socket (loopback only), for machines
without the QUIC module.  Every failure is one line and a non-zero exit.

Both ends of a pair reach the same verdict: the client keeps the connection
until the server has confirmed the handshake (``CONFIRM_WAIT``), and the
server, after its handshake (and message), until the client closes
(``LINGER``).  Messages travel on a stream with the stream cmsg, on kernel and
model sockets alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from cryptography import x509

from quichsd.api import client_credentials, load_psk_file, server_credentials
from quichsd.quic import sockopt
from quichsd.quic.abi import IPPROTO_QUIC, Config, TransportParam
from quichsd.quic.blocking import run_handshake
from quichsd.quic.driver import Credentials, HandshakeResult
from quichsd.tls import CertificateRequest, Role, TlsSetupError
from quichsd.tls.binding import keylog_to
from quichsd.tls.levels import Cipher
from quichsd.tls.resumption import seal, unseal

EXIT_FAILED = 1
EXIT_USAGE = 2

#: Seconds a client waits, after its side completes, for the server's confirmation.
CONFIRM_WAIT = 3.0
#: Seconds a client with --ticket-out waits for the server's NewSessionTicket.
TICKET_WAIT = 3
#: Seconds a server waits for its client to close before closing itself.
LINGER = 3.0
#: The --ticket-out / --ticket-in file format.
TICKET_FORMAT = "quichsd-ticket 2"

NO_QUIC_MODULE = (
    "the kernel has no QUIC module (IPPROTO_QUIC 261 unsupported); "
    "load it (modprobe quic) or use --userspace"
)


class ManualError(Exception):
    """One line for the person at the terminal."""


def run(args: argparse.Namespace) -> int:
    role = args.role
    try:
        if role == "pki":
            return _write_pki(args.directory, tuple(args.name or ("localhost", "127.0.0.1")))
        _check_options(args)
        with ExitStack() as keylog:
            if args.keylog is not None:
                print(f"quichsd: warning: writing TLS secrets to {args.keylog}", file=sys.stderr)
                keylog.enter_context(keylog_to(args.keylog))
            return _run_client(args) if role == "client" else _run_server(args)
    except ManualError as exc:
        print(f"quichsd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TlsSetupError, OSError, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"quichsd: {role} handshake not started: {text}", file=sys.stderr)
        return EXIT_FAILED


# -- options ---------------------------------------------------------------------------


def _check_options(args: argparse.Namespace) -> None:
    """Every named file readable (saying which option named it), options that fit together."""
    if args.userspace:
        from quichsd.userspace import missing

        problem = missing()
        if problem is not None:
            raise ManualError(problem)
    for option in ("ca", "cert", "key", "psk_file") + (
        ("ticket_in",) if args.role == "client" else ()
    ):
        path: Path | None = getattr(args, option)
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            flag = "--" + option.replace("_", "-")
            raise ManualError(f"{flag} {path}: {exc.strerror}") from None
    if (args.cert is None) != (args.key is None):
        raise ManualError("--cert and --key go together")
    if args.role == "client":
        if args.early_data is not None and args.ticket_in is None:
            raise ManualError("--early-data needs --ticket-in (0-RTT only when resuming)")
        if args.early_data is not None and args.message is not None:
            raise ManualError("use one of --early-data and --message")
        if args.psk_file and (args.ticket_in or args.ticket_out):
            raise ManualError("--ticket-in and --ticket-out are for certificate handshakes")
    else:
        if args.request_cert != "ignore" and args.ca is None:
            raise ManualError(
                f"--request-cert {args.request_cert} needs --ca (what client certificates "
                "must chain to)"
            )
        if args.count < 1:
            raise ManualError("--count is at least 1")


def _alpn(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p.strip() for p in args.alpn.split(",") if p.strip())


def _groups(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(g.strip().upper() for g in args.groups.split(",") if g.strip())


def _client_credentials(args: argparse.Namespace) -> Credentials:
    psk = load_psk_file(args.psk_file) if args.psk_file else None
    return client_credentials(
        cafile=args.ca,
        certfile=args.cert,
        keyfile=args.key,
        psk=psk,
        peer_name=args.peer_name or args.host,
        verify=not args.no_verify,
        groups=_groups(args),
    )


def _server_credentials(args: argparse.Namespace) -> Credentials:
    if args.psk_file:
        identity, key = load_psk_file(args.psk_file)
        return server_credentials(
            psk_lookup=lambda asked: key if asked == identity else None, groups=_groups(args)
        )
    if args.cert is None or args.key is None:
        raise ManualError("a server needs --cert and --key (or --psk-file)")
    return server_credentials(
        certfile=args.cert, keyfile=args.key, cafile=args.ca, groups=_groups(args)
    )


# -- client ----------------------------------------------------------------------------


def _run_client(args: argparse.Namespace) -> int:
    creds = _client_credentials(args)
    ticket = _read_ticket(args.ticket_in) if args.ticket_in else None
    config = Config(
        payload_cipher_type=int(Cipher[args.cipher]),
        receive_session_ticket=TICKET_WAIT if args.ticket_out else 0,
    )
    with ExitStack() as stack:
        sock = stack.enter_context(_client_socket(args, config, ticket))
        request = args.early_data if args.early_data is not None else args.message
        if args.early_data is not None:
            # Queued before the handshake: the kernel sends it with the 0-RTT key.
            sockopt.send_stream(sock, args.early_data.encode())
        result = run_handshake(sock, Role.CLIENT, creds, args.timeout, confirm_wait=CONFIRM_WAIT)
        print(_describe(result, "client"), flush=True)
        if not result.ok:
            return EXIT_FAILED
        status = 0
        if args.ticket_out is not None:
            status = _write_ticket(args.ticket_out, sock, result)
        if request is not None:
            if args.early_data is None:
                sockopt.send_stream(sock, request.encode())
            print(f"reply: {_read_stream(sock, args.timeout)[1].decode(errors='replace')}")
        return status


@contextmanager
def _client_socket(
    args: argparse.Namespace, config: Config, ticket: tuple[bytes, bytes] | None
) -> Iterator[Any]:
    alpn = _alpn(args)
    session, peer_params = ticket if ticket is not None else (None, None)
    if args.userspace:
        from quichsd.userspace import ModelQuicSocket

        sock: Any = ModelQuicSocket.connect(
            (_loopback(args.host), args.port),
            alpn=alpn,
            config=config,
            session_ticket=session,
            server_name=args.peer_name or args.host,
        )
    else:
        sock, address = _kernel_socket(args.host, args.port, passive=False)
        try:
            if alpn:
                sockopt.set_alpn(sock, alpn)
            sockopt.set_config(sock, config)
            if session is not None:
                sockopt.set_session_ticket(sock, session)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    with sock:
        if peer_params is not None:
            # The peer's parameters from last time: what 0-RTT data may use.
            sockopt.set_transport_param(sock, TransportParam.unpack(peer_params))
        yield sock


def _read_ticket(path: Path) -> tuple[bytes, bytes]:
    """(session data, the server's transport parameters) from a --ticket-out file."""
    try:
        saved = json.loads(path.read_text())
        if saved.get("format") != TICKET_FORMAT:
            raise ValueError("not a quichsd ticket file")
        # The file holds GnuTLS's own session data: this process vouches for the user's
        # 0600 file by sealing it (quichsd/tls/resumption.py), as the daemon does only
        # for tickets its own workers made.
        session = seal(bytes.fromhex(saved["session"]))
        params = bytes.fromhex(saved["peer_transport_param"])
        TransportParam.unpack(params)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManualError(f"--ticket-in {path}: unreadable ticket ({exc})") from None
    return session, params


def _write_ticket(path: Path, sock: Any, result: HandshakeResult) -> int:
    if result.session_ticket is None:
        print(
            f"quichsd: no session ticket from the server within {TICKET_WAIT} s; "
            f"{path} not written",
            file=sys.stderr,
        )
        return EXIT_FAILED
    peer = sockopt.get_transport_param(sock, remote=True)
    body = {
        "format": TICKET_FORMAT,
        "session": unseal(result.session_ticket).hex(),
        "peer_transport_param": dataclasses.replace(peer, remote=True).pack().hex(),
    }
    # A resumption secret: created 0600, and kept so if the file existed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump(body, out)
        out.write("\n")
    print(f"session ticket saved to {path}")
    return 0


# -- server ----------------------------------------------------------------------------


def _run_server(args: argparse.Namespace) -> int:
    creds = _server_credentials(args)
    config = Config(
        payload_cipher_type=int(Cipher[args.cipher]),
        certificate_request=int(CertificateRequest[args.request_cert.upper()]),
    )
    status = 0
    with ExitStack() as stack:
        accept = _listen(args, config, stack)
        for _ in range(args.count):
            with accept() as sock:
                # An accepted socket inherits the listener's; set again, as a consumer may.
                sockopt.set_config(sock, config)
                result = run_handshake(sock, Role.SERVER, creds, args.timeout)
                print(_describe(result, "server"), flush=True)
                if not result.ok:
                    status = EXIT_FAILED
                    continue
                if args.message is not None:
                    _answer(sock, args)
                _linger(sock)
    return status


def _listen(args: argparse.Namespace, config: Config, stack: ExitStack) -> Callable[[], Any]:
    """Starts listening; returns a function that accepts the next connection."""
    alpn = _alpn(args)
    if args.userspace:
        from quichsd.userspace import ModelQuicListener

        listener: Any = stack.enter_context(
            ModelQuicListener((_loopback(args.addr), args.port), alpn=alpn, config=config)
        )
        print(f"listening on {listener.address[0]}:{listener.address[1]} (userspace)", flush=True)
        return lambda: _accept(listener.accept, args.timeout)
    sock, address = _kernel_socket(args.addr, args.port, passive=True)
    stack.callback(sock.close)
    if alpn:
        sockopt.set_alpn(sock, alpn)  # before listen(): ALPN also routes to listeners
    sockopt.set_config(sock, config)
    sock.bind(address)
    sock.listen(args.count)
    print(f"listening on {args.addr}:{args.port}", flush=True)
    sock.settimeout(args.timeout)
    return lambda: _accept(lambda _timeout: sock.accept()[0], args.timeout)


def _accept(accept: Callable[[float], Any], timeout: float) -> Any:
    try:
        return accept(timeout)
    except (TimeoutError, BlockingIOError):
        raise ManualError(f"no client connected within {timeout:g} s") from None


def _answer(sock: Any, args: argparse.Namespace) -> None:
    """Reads the client's message and answers it; a client that sends none is no failure."""
    try:
        stream_id, data = _read_stream(sock, args.timeout)
    except (ManualError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOTCONN, errno.EPIPE):
            raise
        print("received no message (the client closed or sent none)", flush=True)
        return
    print(f"received: {data.decode(errors='replace')}", flush=True)
    sockopt.send_stream(sock, args.message.encode() or data, stream_id, new=False)


def _linger(sock: Any) -> None:
    """Waits (bounded) for the client to close, so the server does not cut its last steps."""
    sock.settimeout(LINGER)
    with suppress(OSError):
        while True:
            sockopt.recv_stream(sock)


# -- both ------------------------------------------------------------------------------


def _read_stream(sock: Any, timeout: float) -> tuple[int, bytes]:
    """One stream's data up to its FIN: (stream id, bytes)."""
    sock.settimeout(timeout)
    try:
        stream_id, data, fin = sockopt.recv_stream(sock)
        while not fin:
            more_id, more, fin = sockopt.recv_stream(sock)
            if more_id != stream_id:
                raise ManualError(f"data on stream {more_id} while reading stream {stream_id}")
            data += more
    except (TimeoutError, BlockingIOError):
        raise ManualError(f"no message from the peer within {timeout:g} s") from None
    return stream_id, data


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


def _loopback(host: str) -> str:
    address = "127.0.0.1" if host == "localhost" else host
    if not address.startswith("127."):
        raise ManualError(f"--userspace talks to loopback only (127.0.0.0/8), not {host}")
    return address


def _describe(result: HandshakeResult, role: str) -> str:
    if not result.ok:
        reason = result.reason.removeprefix(f"{role} handshake: ")
        return (
            f"{role} handshake FAILED: {reason} (errno {result.status}, "
            f"{errno.errorcode.get(result.status, '?')})"
        )
    done = result.complete
    peer = "-"
    if done is not None and done.peer_certificates:
        peer = x509.load_der_x509_certificate(done.peer_certificates[0]).subject.rfc4514_string()
    elif done is not None and done.psk_identity:
        peer = "PSK " + done.psk_identity.decode(errors="replace")
    return f"{role} handshake OK: QUIC v1, {result.summary()}, peer {peer}"


# -- a throwaway PKI -----------------------------------------------------------------------


def _write_pki(directory: Path, names: tuple[str, ...]) -> int:
    from quichsd.tls.selfsigned import issue, make_ca

    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("quichsd throwaway test CA")
    server = issue(ca, names)
    client = issue(ca, ("client",))
    files = {
        "ca.pem": ca.cert_pem,
        "server.pem": server.cert_pem,
        "server.key": server.key_pem,
        "client.pem": client.cert_pem,
        "client.key": client.key_pem,
    }
    for name, data in files.items():
        path = directory / name
        mode = 0o600 if name.endswith(".key") else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    print(f"wrote {', '.join(files)} to {directory} (server names: {', '.join(names)})")
    return 0
