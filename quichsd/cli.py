"""The ``quichsd`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from quichsd import __version__
from quichsd.tls.levels import Cipher


def _cmd_demo(args: argparse.Namespace) -> int:
    from quichsd.demo import describe, run_demo

    outcome = run_demo(cipher=int(Cipher[args.cipher]), kind=args.key)
    for line in describe(outcome):
        print(line)
    ok = outcome.full.client.complete is not None and outcome.resumed.client.complete is not None
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quichsd",
        description="TLS handshake agent for Linux kernel QUIC and kTLS sockets.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"quichsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
        args = parser.parse_args(["demo", *(argv or [])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
