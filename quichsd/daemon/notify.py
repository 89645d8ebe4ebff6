# SPDX-License-Identifier: GPL-2.0-only
"""systemd's readiness protocol (sd_notify) and the daemon's side of it.

``Notifier`` sends ``KEY=value`` lines to ``$NOTIFY_SOCKET`` through
systemd-python (``systemd.daemon.notify``, libsystemd's sd_notify).  Without
``NOTIFY_SOCKET`` every call is a no-op returning False, so the daemon runs
the same by hand.

``Lifecycle`` drives it for a ``HandshakeService``:

* ``READY=1`` once the service has joined the netlink group and watches it,
  before its first worker is forked (the service calls ``ready()`` from
  ``run()``; docs/startup.md), with a first ``STATUS=``;
* ``STATUS=`` with live counts (in flight, done, failed, workers) every
  ``status_interval`` seconds when they changed;
* ``WATCHDOG=1`` every ``WatchdogSec/2`` when systemd set ``WATCHDOG_USEC``
  (and ``WATCHDOG_PID`` is ours or unset), from the event loop, so a stuck
  loop stops the pings;
* ``RELOADING=1`` (with ``MONOTONIC_USEC=``) before a reload and ``READY=1``
  after it;
* ``STOPPING=1`` when a stop is requested.

Only the parent notifies: systemd accepts messages from the main PID only
(``NotifyAccess=main``), and workers never hold a ``Lifecycle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
#: How often STATUS= is refreshed (when it changed).
STATUS_INTERVAL = 1.0


class Notifier:
    """sd_notify for this process; ``enabled`` when ``NOTIFY_SOCKET`` is set.

    ``environ`` decides only whether to send and the watchdog interval (tests);
    libsystemd reads the socket's address from the process environment itself.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get(NOTIFY_SOCKET) or None
        self.watchdog_interval = _watchdog_interval(env)
        # By name: the repository's systemd/ folder (unit files) must not pass for the package.
        self._daemon = importlib.import_module("systemd.daemon")
        self.sent: list[str] = []  # what was sent, newest last (bounded): for logs and tests

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *lines: str) -> bool:
        """Sends ``lines`` as one message; True if it went out (an unreachable socket
        is no error: systemd may be gone or the daemon run by hand)."""
        if not self.enabled or not lines:
            return False
        state = "\n".join(lines)
        try:
            ok = bool(self._daemon.notify(state))
        except OSError:
            return False
        if ok:
            self.sent.append(state)
            del self.sent[:-64]
        return ok

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WatchdogSec, if systemd asked this process for pings."""
    raw = env.get(WATCHDOG_USEC)
    if not raw:
        return None
    pid = env.get(WATCHDOG_PID)
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


def status_line(service: Any) -> str:
    """``STATUS=`` text: what a ``systemctl status`` reader wants at a glance."""
    statuses = service.statuses
    done = sum(statuses.values())
    failed = done - statuses.get(0, 0)
    workers = len(service.pool.workers)
    return (
        f"{len(service.inflight)} in flight, {done} done, {failed} failed; "
        f"{workers} worker{'s' if workers != 1 else ''}"
    )


class Lifecycle:
    """Readiness, status, watchdog and stop notices for one service run."""

    def __init__(
        self,
        notifier: Notifier,
        status: Callable[[], str],
        *,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self.notifier = notifier
        self._status = status
        self.status_interval = status_interval
        self._last_status: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.is_ready = False

    def _current(self) -> str:
        try:
            return self._status()
        except Exception as exc:  # a status must never take the daemon down
            return f"status unavailable: {exc!r}"

    def ready(self) -> None:
        """The service is serving: READY=1, then periodic STATUS= and WATCHDOG=1."""
        if self.is_ready:
            return
        self.is_ready = True
        text = self._current()
        self._last_status = text
        self.notifier.ready(f"serving: {text}")
        if self._task is None and self.notifier.enabled:
            self._task = asyncio.get_running_loop().create_task(self._tick())

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self, note: str | None = None) -> None:
        text = self._current()
        self._last_status = text
        prefix = f"{note}; " if note else "serving: "
        self.notifier.ready(prefix + text)

    def stopping(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        text = self._current()
        self._last_status = text
        self.notifier.stopping(f"stopping: {text}")

    async def _tick(self) -> None:
        watchdog = self.notifier.watchdog_interval
        step = min(self.status_interval, watchdog) if watchdog else self.status_interval
        next_status = time.monotonic() + self.status_interval
        if watchdog:
            self.notifier.watchdog()
        while True:
            await asyncio.sleep(step)
            if watchdog:
                self.notifier.watchdog()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + self.status_interval
                text = self._current()
                if text != self._last_status:
                    self._last_status = text
                    prefix = "stopping: " if self._stopping else "serving: "
                    self.notifier.status(prefix + text)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
