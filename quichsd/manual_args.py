# SPDX-License-Identifier: GPL-2.0-only
"""The options of ``quichsd handshake`` (what it does: quichsd/manual.py).

Apart from quichsd/manual.py because the command line builds every subcommand's
options on every run, ``quichsd serve`` included: this module imports nothing
heavier than argparse, so the daemon does not import the QUIC client with them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quichsd.tls.levels import Cipher


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
    client.add_argument(
        "--ticket-out",
        type=Path,
        metavar="FILE",
        help="save the session ticket the server sends (mode 0600), for --ticket-in",
    )
    client.add_argument(
        "--ticket-in", type=Path, metavar="FILE", help="resume the session saved in FILE"
    )
    client.add_argument(
        "--early-data",
        metavar="TEXT",
        help="with --ticket-in: send TEXT on a stream as 0-RTT data and print the reply",
    )
    server = sub.add_parser("server", help="listen on ADDR PORT and run server handshakes")
    server.add_argument("addr")
    server.add_argument("port", type=int)
    server.add_argument("--ca", type=Path, help="trust anchors for client certificates (PEM)")
    server.add_argument(
        "--request-cert",
        choices=["ignore", "request", "require"],
        default="ignore",
        help="ask the client for a certificate (request, require: needs --ca)",
    )
    server.add_argument(
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="serve N clients one after another (default 1; 2 shows a resumption)",
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
            "--groups",
            default="",
            metavar="LIST",
            help="key-exchange groups, GnuTLS names in order, e.g. SECP384R1,X25519",
        )
        each.add_argument(
            "--message",
            help="after the handshake, client: send this on a stream and print the reply; "
            "server: read a stream and answer with this ('' echoes it)",
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
    pki = sub.add_parser(
        "pki",
        help="write a throwaway test PKI (CA, server and client certificates) into DIR",
        description="Writes ca.pem, server.pem, server.key, client.pem and client.key "
        "(ECDSA P-256, valid 30 days, keys mode 0600) for trying the handshake commands. "
        "Not for production.",
    )
    pki.add_argument("directory", type=Path)
    pki.add_argument(
        "--name",
        action="append",
        help="a name (DNS or IP address) for the server certificate; repeatable "
        "(default: localhost and 127.0.0.1)",
    )
