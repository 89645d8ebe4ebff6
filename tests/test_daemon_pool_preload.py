# SPDX-License-Identifier: GPL-2.0-only
"""The fork server, not the parent, imports what workers need (the handshake code, GnuTLS,
the TCP path, seccomp) before it forks the first worker: no worker pays for it on a
request, and none of it delays the parent's start (docs/startup.md)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from quichsd.daemon.forkserver import ForkServer
    from quichsd.daemon.pool import WorkerPool
    from quichsd.daemon.wiring import KERNEL

    WORKER_ONLY = ("quichsd.daemon.handler", "quichsd.daemon.jobs.tcp", "quichsd.tls.engine")
    LIBRARIES = ("_gnutls.abi3.so", "_privilege.abi3.so")

    def mapped(pid):
        with open(f"/proc/{pid}/maps") as maps:
            text = maps.read()
        return [name in text for name in LIBRARIES]

    forkserver = ForkServer.start(KERNEL)

    async def main():
        pool = WorkerPool(
            1, 4, 0, lambda outcome: None, lambda ids, reason: None, forkserver=forkserver
        )
        pool.start()  # its first answer comes once the fork server has imported
        print(*mapped(forkserver.pid), *mapped(pool.workers[0].pid))
        await pool.stop()
        print(*[name in sys.modules for name in WORKER_ONLY], *mapped("self"), pool.spawned)

    asyncio.run(main())
    forkserver.close()
    """
)


def test_fork_server_preloads_what_workers_need_and_the_parent_does_not() -> None:
    # A fresh interpreter: this test session may have imported the modules already.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    children, parent = result.stdout.splitlines()
    assert children.split() == ["True"] * 4  # the fork server's maps, then the worker's
    assert parent.split() == ["False"] * 5 + ["1"]


FAILED_IMPORT = textwrap.dedent(
    """
    import asyncio
    from quichsd.daemon.forkserver import ForkServer
    from quichsd.daemon.pool import WorkerPool
    from quichsd.daemon.wiring import KERNEL

    forkserver = ForkServer.start(KERNEL, preload=("quichsd.no_such_module",))
    reasons = []

    async def main():
        pool = WorkerPool(
            1, 4, 0, lambda outcome: None, lambda ids, reason: None,
            forkserver=forkserver, on_fatal=reasons.append,
        )
        pool.start()
        await asyncio.sleep(0.2)
        await pool.stop()
        print(len(pool.workers), sorted(set(reasons)))

    asyncio.run(main())
    forkserver.close()
    """
)


def test_a_fork_server_that_cannot_import_stops_the_daemon_with_a_reason() -> None:
    """Its import error (a broken installation) is printed by the fork server; the parent,
    whose first worker can then never be forked, hears one reason, without a traceback."""
    result = subprocess.run(
        [sys.executable, "-c", FAILED_IMPORT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "No module named 'quichsd.no_such_module'" in result.stderr
    workers, _, reasons = result.stdout.strip().partition(" ")
    assert workers == "0"
    (reason,) = ast.literal_eval(reasons)
    assert re.fullmatch(
        r"the fork server exited \(pid \d+, exited with code 1\): no worker can be forked", reason
    ), reason


def test_the_parent_does_not_load_what_only_workers_run() -> None:
    """The dispatch table names its jobs rather than importing them, and the kernel
    wiring imports kTLS only when a worker installs it: the parent's start-up (what
    stands between exec and READY=1, docs/startup.md) never loads a TLS path."""
    worker_only = (
        "quichsd.daemon.handler",
        "quichsd.daemon.jobs.quic",
        "quichsd.daemon.jobs.tcp",
        "quichsd.tls.engine",
        "quichsd.ktls.install",
        "cryptography",
    )
    probe = (
        "import sys, quichsd.daemon.main, quichsd.cli\n"
        f"print([m for m in {worker_only!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_workers_load_no_second_x509_library() -> None:
    """What the fork server preloads for its workers reads certificates through GnuTLS
    alone: cryptography (about 10 MiB per process family) stays out of the daemon."""
    probe = (
        "import importlib, sys\n"
        "from quichsd.daemon.forkserver import PRELOAD\n"
        "for name in PRELOAD: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
