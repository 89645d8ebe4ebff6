# SPDX-License-Identifier: GPL-2.0-only
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
        from quichsd.userspace.daemon_demo import run_daemon_demo

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
        usage="%(prog)s [-h] [-c PATH] [-s] [-v] [COMMAND ...]",
        description="TLS handshake agent for Linux kernel QUIC and kTLS sockets: "
        "a drop-in for tlshd.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # tlshd's own command line: without a COMMAND these are serve's options, so a unit or
    # script written for tlshd works with only the program name changed.
    _serve_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="quichsd")

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
    _serve_options(serve, top_level=False)
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
        "--unit-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        metavar="DIR",
        help="where quichsd.service goes (default: %(default)s; a package: "
        "/usr/lib/systemd/system)",
    )
    install.add_argument(
        "--config-path",
        type=Path,
        default=Path("/etc/tlshd/config"),
        metavar="PATH",
        help="where the example configuration goes unless a file is there "
        "(default: %(default)s)",
    )
    install.add_argument(
        "--man-dir",
        type=Path,
        default=Path("/usr/local/share/man"),
        metavar="DIR",
        help="man page root; pages go to DIR/man8 and DIR/man5 (default: %(default)s)",
    )
    install.add_argument("--no-man", action="store_true", help="skip the man pages")
    install.add_argument(
        "--exec",
        dest="exec_path",
        metavar="PATH",
        help="absolute path of the quichsd executable for ExecStart= (default: the one "
        "running this command; a package: where it installs the script, e.g. "
        "/usr/sbin/quichsd)",
    )
    install.set_defaults(func=_cmd_install_service)

    handshake = sub.add_parser(
        "handshake",
        help="run one QUIC handshake by hand (client or server) and print the result",
        description="Opens a QUIC socket (IPPROTO_QUIC; --userspace: the userspace model), "
        "runs our handshake agent on it and prints what was negotiated.",
    )
    from quichsd.manual_args import add_arguments

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


def _serve_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """tlshd's options (-c, -s, -v), on ``serve`` and, for tlshd's command line, on the
    top level. The top level's keep their own names (``top_*``): a subcommand's defaults
    would overwrite values the top level parsed under the same name."""
    prefix = "top_" if top_level else ""
    parser.add_argument(
        "-c", "--config", dest=f"{prefix}config", type=Path, metavar="PATH", help=CONFIG_HELP
    )
    parser.add_argument(
        "-s", "--stderr", dest=f"{prefix}stderr", action="store_true",
        help="also log to stderr",
    )
    parser.add_argument(
        "-v", "--version", dest=f"{prefix}version", action="store_true",
        help="print the version",
    )


def _para(text: str) -> str:
    return textwrap.fill(text, 78)


CONFIG_HELP = "configuration file (default: /etc/tlshd.conf if present, else /etc/tlshd/config)"

MAIN_EPILOG = """\
Without a COMMAND, quichsd serves with -c, -s and -v, as tlshd does: a unit or
a script written for tlshd works with the program name changed. Run
"quichsd COMMAND --help" for a command's options.

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
    args, unknown = parser.parse_known_args(argv)
    # An unknown option belongs to the command it follows: its usage, not the top level's.
    command_parser = _command_parsers(parser).get(args.command or "", parser)
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    top = (args.top_config, args.top_stderr, args.top_version)
    if args.command is None:  # tlshd's command line: `quichsd [-c FILE] [-s] [-v]` is serve
        args.config, args.stderr, args.version = top
        return _cmd_serve(args)
    if args.command != "serve" and any(top):
        parser.error(f"-c, -s and -v before a COMMAND are serve's; give {args.command}'s after it")
    if args.command == "serve":
        args.config = args.config or args.top_config
        args.stderr = args.stderr or args.top_stderr
        args.version = args.version or args.top_version
    return int(args.func(args))


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


if __name__ == "__main__":
    sys.exit(main())
