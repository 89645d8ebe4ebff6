"""The ``quichsd`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from quichsd import __version__
from quichsd.tls.levels import Cipher


def _cmd_demo(args: argparse.Namespace) -> int:
    from quichsd.demo import describe, run_demo

    outcome = run_demo(cipher=int(Cipher[args.cipher]), kind=args.key)
    for line in describe(outcome):
        print(line)
    ok = outcome.full.client.complete is not None and outcome.resumed.client.complete is not None
    return 0 if ok else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from quichsd.daemon.main import ServeOptions, serve

    if args.version:
        print(f"quichsd {__version__}", file=sys.stderr)
        return 0
    return serve(
        ServeOptions(
            config=args.config,
            stderr=args.stderr,
            model_family=args.model_family,
            model_quic=args.model_quic,
        )
    )


def _cmd_handshake(args: argparse.Namespace) -> int:
    from quichsd.manual import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quichsd",
        description="TLS handshake agent for Linux kernel QUIC and kTLS sockets: "
        "a drop-in for tlshd.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"quichsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="answer the kernel's handshake requests (the daemon, in the foreground)",
        description="Joins the kernel's handshake netlink family and runs each requested "
        "TLS handshake in a pre-forked worker, answering every accepted request with "
        "exactly one DONE. Reads tlshd's configuration. SIGHUP or SIGUSR1 reloads it; "
        "SIGTERM stops accepting, lets handshakes in flight finish, then exits.",
    )
    serve.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default: /etc/tlshd.conf if present, else /etc/tlshd/config)",
    )
    serve.add_argument("-s", "--stderr", action="store_true", help="also log to stderr")
    serve.add_argument("-v", "--version", action="store_true", help="print the version")
    serve.add_argument("--model-family", metavar="ADDRESS", help=argparse.SUPPRESS)
    serve.add_argument("--model-quic", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)

    handshake = sub.add_parser(
        "handshake",
        help="run one QUIC handshake by hand (client or server) and print the result",
        description="Opens a QUIC socket (IPPROTO_QUIC; --userspace: the userspace model), "
        "runs our handshake agent on it and prints what was negotiated.",
    )
    from quichsd.manual import add_arguments

    add_arguments(handshake)
    handshake.set_defaults(func=_cmd_handshake)

    demo = sub.add_parser(
        "demo",
        help="run an in-memory QUIC handshake (full, then resumed with 0-RTT) and print it",
        description="Runs our GnuTLS client engine against our server engine in memory: "
        "a full X.509 handshake, then a resumption with 0-RTT from its ticket.",
    )
    demo.add_argument(
        "--cipher", choices=[c.name for c in Cipher], default="ANY", help="payload cipher"
    )
    demo.add_argument("--key", choices=["ecdsa", "rsa"], default="ecdsa", help="certificate key")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
