"""The ``quichsd`` command line."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from quichsd import __version__
from quichsd.tls.levels import Cipher


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.daemon:
        from quichsd.daemon_demo import run_daemon_demo

        return run_daemon_demo()
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
            fork_per_request=args.fork_per_request,
        )
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from quichsd.check import main as check_main

    return check_main(args.config)


def _cmd_status(args: argparse.Namespace) -> int:
    from quichsd.daemon.config import ConfigError, load_config
    from quichsd.daemon.metrics_table import render_table
    from quichsd.daemon.status import DEFAULT_SOCKET, StatusUnavailable, query, query_snapshot

    path = args.socket
    if path is None:
        try:
            path = load_config(args.config).status_socket
        except ConfigError:
            path = DEFAULT_SOCKET
    try:
        if args.openmetrics:
            sys.stdout.write(query(path, "openmetrics"))
        elif args.json:
            sys.stdout.write(query(path, "json"))
        else:
            sys.stdout.write(render_table(query_snapshot(path)))
    except StatusUnavailable as exc:
        print(f"quichsd status: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _cmd_install_service(args: argparse.Namespace) -> int:
    from quichsd.install import InstallError, install

    try:
        actions = install(
            destdir=args.destdir,
            unit_dir=args.unit_dir,
            config_path=args.config_path,
            man_dir=None if args.no_man else args.man_dir,
            executable=args.exec_path,
        )
    except (InstallError, OSError) as exc:
        print(f"quichsd install-service: {exc}", file=sys.stderr)
        return 1
    for line in actions:
        print(line)
    return 0


def _cmd_handshake(args: argparse.Namespace) -> int:
    from quichsd.manual import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quichsd",
        description="TLS handshake agent for Linux kernel QUIC and kTLS sockets: "
        "a drop-in for tlshd.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--version", action="version", version=f"quichsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="answer the kernel's handshake requests (the daemon, in the foreground)",
        description=_para(
            "Joins the kernel's handshake netlink family and runs each requested "
            "TLS handshake in a pre-forked worker, answering every accepted request with "
            "exactly one DONE. Reads tlshd's configuration. SIGHUP or SIGUSR1 reloads it; "
            "SIGTERM stops accepting, lets handshakes in flight finish, then exits. Under "
            "systemd (Type=notify) it reports readiness, status and watchdog pings, and "
            "logs to the journal."
        ),
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    # tlshd's process model, for bench/daemon.py's comparison only.
    serve.add_argument("--fork-per-request", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser(
        "check",
        help="check that this machine and configuration can run the daemon",
        description=_para(
            "Checks the kernel (handshake netlink family, CAP_NET_ADMIN, QUIC, kTLS), "
            "GnuTLS, the keyrings, the configuration, and each configured certificate, key, "
            "trust store and CRL. Prints a table: ✓ fine, ! works with a caveat, ✗ broken, "
            "with the fix under each line that is not ✓."
        ),
        epilog="exit status:\n  0  nothing failed (warnings allowed)\n  1  something failed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("-c", "--config", type=Path, metavar="PATH", help=CONFIG_HELP)
    check.set_defaults(func=_cmd_check)

    status = sub.add_parser(
        "status",
        help="show the running daemon's counters (handshakes, latency, workers)",
        description=_para(
            "Asks the running daemon over its status socket (root only) and prints "
            "requests, handshake outcomes by transport and role, failures by errno, latency, "
            "and the worker pool; or the same as OpenMetrics text."
        ),
        epilog="exit status:\n  0  printed\n  1  the daemon could not be reached",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="status socket (default: [quichsd] status_socket of the configuration, "
        "/run/quichsd/status.sock)",
    )
    status.add_argument("-c", "--config", type=Path, metavar="PATH", help=CONFIG_HELP)
    shape = status.add_mutually_exclusive_group()
    shape.add_argument("--openmetrics", action="store_true", help="OpenMetrics 1.0 text exposition")
    shape.add_argument("--json", action="store_true", help="the raw JSON snapshot")
    status.set_defaults(func=_cmd_status)

    install = sub.add_parser(
        "install-service",
        help="install the systemd unit, an example configuration and the man pages",
        description="Writes quichsd.service (ExecStart= naming this installation's quichsd), "
        "the example configuration to /etc/tlshd/config unless that file exists, and the "
        "man pages. Runs no systemctl.",
    )
    install.add_argument(
        "--destdir", type=Path, metavar="DIR", help="staging root (packaging), like DESTDIR"
    )
    install.add_argument(
        "--unit-dir", type=Path, default=Path("/etc/systemd/system"), metavar="DIR"
    )
    install.add_argument(
        "--config-path", type=Path, default=Path("/etc/tlshd/config"), metavar="PATH"
    )
    install.add_argument(
        "--man-dir", type=Path, default=Path("/usr/local/share/man"), metavar="DIR"
    )
    install.add_argument("--no-man", action="store_true", help="skip the man pages")
    install.add_argument(
        "--exec",
        dest="exec_path",
        metavar="PATH",
        help="the quichsd executable for ExecStart= (default: this one)",
    )
    install.set_defaults(func=_cmd_install_service)

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
    demo.add_argument(
        "--daemon",
        action="store_true",
        help="instead: run the real daemon against the userspace kernel models",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def _para(text: str) -> str:
    return textwrap.fill(text, 78)


CONFIG_HELP = "configuration file (default: /etc/tlshd.conf if present, else /etc/tlshd/config)"

MAIN_EPILOG = """\
Run "quichsd COMMAND --help" for a command's options.

files:
  /etc/tlshd/config         configuration: tlshd's, plus a [quichsd] section
  /etc/tlshd.conf           legacy location, read instead when it exists
  /run/quichsd/status.sock  the running daemon's status socket (quichsd status)

see also:
  quichsd(8), quichsd.conf(5), tlshd(8), systemd.service(5)
"""

SERVE_EPILOG = """\
files:
  /etc/tlshd/config         configuration (quichsd.conf(5)); -c overrides
  /etc/tlshd.conf           legacy location, read instead when it exists
  /run/quichsd/status.sock  status socket, mode 0600 ([quichsd] status_socket)

signals:
  SIGHUP, SIGUSR1  reload the configuration; handshakes in flight keep theirs
  SIGTERM, SIGINT  stop accepting, let handshakes in flight finish within
                   [quichsd] shutdown_grace, answer the rest ETIMEDOUT, exit

exit status:
  0  stopped by a signal; -v
  1  the configuration cannot be used, or the kernel has no handshake
     netlink family (tlshd exits 0 there)

environment:
  NOTIFY_SOCKET    systemd Type=notify: READY=1, STATUS=, RELOADING=1,
                   STOPPING=1 are sent there
  WATCHDOG_USEC    systemd WatchdogSec=: WATCHDOG=1 every half of it
  JOURNAL_STREAM   under systemd: records go to the journal with QUICHSD_*
                   fields (request, transport, role, auth, peer, ALPN,
                   cipher, status, errno, duration)
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
