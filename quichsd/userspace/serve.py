# SPDX-License-Identifier: GPL-2.0-only
"""The real daemon against the userspace models: ``quichsd serve`` with a model wiring.

``python -m quichsd.userspace.serve --family ADDRESS [--quic] [--fork-per-request] -c CONFIG [-s]``
runs ``quichsd.daemon.main.serve`` unchanged (configuration, signals, fork server, workers)
with the family model at ADDRESS instead of the kernel's netlink family; ``--quic`` makes
the workers take exported model QUIC sockets (``remote.py``) as QUIC sockets;
``--fork-per-request`` is tlshd's process model, for bench/daemon.py's comparison.  The
installed ``quichsd serve`` has none of these: they are this launcher's
(daemon/wiring.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from quichsd.daemon.main import ServeOptions, serve
from quichsd.daemon.service import transport_of
from quichsd.daemon.wiring import KERNEL, Wiring
from quichsd.userspace.family_channel import open_model_family
from quichsd.userspace.remote import open_remote_or_kernel, transport_of_remote_or_kernel


def model_wiring(family: str, *, quic: bool, fork_per_request: bool = False) -> Wiring:
    """The kernel's wiring with the family model at ``family`` (and the QUIC model's
    exported sockets with ``quic``)."""
    return replace(
        KERNEL,
        open_family=lambda: open_model_family(family, join=True),
        open_quic_socket=open_remote_or_kernel if quic else KERNEL.open_quic_socket,
        transport_of=transport_of_remote_or_kernel if quic else transport_of,
        fork_per_request=fork_per_request,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quichsd.userspace.serve",
        description="quichsd serve against the userspace kernel models (tests, demos, bench)",
    )
    parser.add_argument("--family", required=True, metavar="ADDRESS", help="family model address")
    parser.add_argument("--quic", action="store_true", help="QUIC fds are exported model sockets")
    parser.add_argument(
        "--fork-per-request", action="store_true", help="a process per request, as tlshd"
    )
    parser.add_argument("-c", "--config", type=Path, metavar="PATH", help="configuration file")
    parser.add_argument("-s", "--stderr", action="store_true", help="also log to stderr")
    args = parser.parse_args(argv)
    wiring = model_wiring(args.family, quic=args.quic, fork_per_request=args.fork_per_request)
    return serve(ServeOptions(config=args.config, stderr=args.stderr), wiring)


if __name__ == "__main__":
    sys.exit(main())
