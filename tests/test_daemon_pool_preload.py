# SPDX-License-Identifier: GPL-2.0-only
"""The fork server imports the TCP path before it forks, so no worker pays for it on a request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from quichsd.daemon.forkserver import ForkServer
    from quichsd.daemon.pool import WorkerPool
    from quichsd.daemon.wiring import KERNEL

    TCP_JOB_MODULE = "quichsd.daemon.jobs.tcp"
    forkserver = ForkServer.start(KERNEL)
    after = TCP_JOB_MODULE in sys.modules

    async def main():
        pool = WorkerPool(
            1, 4, 0, lambda outcome: None, lambda ids, reason: None, forkserver=forkserver
        )
        pool.start()
        await pool.stop()
        print(after, pool.spawned)

    asyncio.run(main())
    forkserver.close()
    """
)


def test_tcp_job_module_is_loaded_before_the_workers_fork() -> None:
    # A fresh interpreter: this test session may have imported the module already.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1"]
