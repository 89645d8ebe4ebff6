# SPDX-License-Identifier: GPL-2.0-only
"""The real daemon on the models, as a process: its configuration, log, signals and workers.

``DaemonProcess`` runs ``python -m quichsd.userspace.serve --family ADDRESS --quic -c
CONFIG -s`` (``quichsd serve``'s ``serve()`` with the models' wiring, daemon/wiring.py)
as a subprocess in its own process group, so the configuration, the signal handling
and the process model (parent + fork server + workers) are the production ones.  Its
stderr goes to a file (``log()``, ``wait_for_log()``); ``reload()`` is SIGHUP and waits
for the log line, ``stop()`` SIGTERM and returns the exit code; ``worker_pids()`` and
``forkserver_pid()`` read /proc.  ``config_text()`` writes tlshd's format plus our
``[quichsd]`` section.  Every wait is bounded.  ``rig.py`` puts it together with the
family model and the consumers.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from quichsd.userspace.family import FamilyModel

__all__ = [
    "DAEMON_ENTRY",
    "DEFAULT_WAIT",
    "DaemonExited",
    "DaemonProcess",
    "config_text",
    "daemon_command",
    "run_daemon_once",
]

#: Default bound on every wait (seconds).
DEFAULT_WAIT = 15.0
_RELOADED = "configuration reloaded"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DaemonExited(RuntimeError):
    """The daemon ended when it should have been serving; carries its code and log."""

    def __init__(self, code: int | None, log: str) -> None:
        super().__init__(f"quichsd exited with {code}; its log:\n{log}")
        self.code = code
        self.log = log


def config_text(
    *,
    workers: int | None = 2,
    handshake_timeout: float | None = 10.0,
    shutdown_grace: float | None = 2.0,
    worker_recycle: int | None = None,
    status_socket: str | Path | None = None,
    loglevel: int = 0,
    keyrings: Sequence[str] = (),
    client: dict[str, str | Path] | None = None,
    server: dict[str, str | Path] | None = None,
    extra: str = "",
) -> str:
    """A configuration file: ``client``/``server`` map ``x509.*`` keys to paths.

    ``status_socket``: give each rig its own (``rig.dir / "status.sock"``), so that
    daemons running side by side do not compete for the default path.
    """
    lines = ["# written by quichsd.userspace.daemon_process", "[debug]", f"loglevel={loglevel}"]
    if keyrings:
        lines += ["[authenticate]", "keyrings=" + ";".join(keyrings)]
    for section, values in (("client", client), ("server", server)):
        if values:
            lines.append(f"[authenticate.{section}]")
            lines += [f"{key}={value}" for key, value in values.items()]
    settings = {
        "workers": workers,
        "handshake_timeout": handshake_timeout,
        "shutdown_grace": shutdown_grace,
        "worker_recycle": worker_recycle,
        "status_socket": status_socket,
    }
    present = {k: v for k, v in settings.items() if v is not None}
    if present:
        lines.append("[quichsd]")
        lines += [f"{key}={value}" for key, value in present.items()]
    return "\n".join(lines) + "\n" + extra


#: How the rig runs the daemon: the launcher with the models' wiring (``serve.py``).
DAEMON_ENTRY = ("-m", "quichsd.userspace.serve")


def daemon_command(
    config: Path, family_address: str, entry: Sequence[str] = DAEMON_ENTRY
) -> list[str]:
    """The launcher's command line: the models' family at ``family_address``, model QUIC
    sockets, ``config``, the log on stderr."""
    return [
        sys.executable,
        *entry,
        "--family",
        family_address,
        "--quic",
        "-c",
        str(config),
        "-s",
    ]


def daemon_env() -> dict[str, str]:
    """Ours, with this quichsd's root first on PYTHONPATH (from a checkout: the same code
    and a test's wrapper script find what this process imports) and unbuffered output."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_daemon_once(
    config: Path, family_address: str, timeout: float = DEFAULT_WAIT
) -> tuple[int, str]:
    """Runs ``quichsd serve`` expecting it to exit by itself: (exit code, stderr)."""
    proc = subprocess.run(
        daemon_command(config, family_address),
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stderr


class DaemonProcess:
    """The daemon subprocess, serving the family model ``family`` with the configuration
    in ``directory``; see the module doc."""

    def __init__(
        self,
        family: FamilyModel,
        directory: Path,
        config: str | None = None,
        *,
        wait: float = DEFAULT_WAIT,
        daemon_args: Sequence[str] = (),
        entry: Sequence[str] = DAEMON_ENTRY,
    ) -> None:
        """``entry``: the interpreter's arguments before the launcher's (a test's own
        script that wraps ``serve.main``, for instance); ``daemon_args``: the launcher's
        further options (``--fork-per-request``)."""
        self.family = family
        self.dir = directory
        self.wait = wait
        self.daemon_args = tuple(daemon_args)
        self.entry = tuple(entry)
        self.config_path = self.dir / "quichsd.conf"
        self.status_socket = self.dir / "status.sock"
        self.config_path.write_text(
            config if config is not None else config_text(status_socket=self.status_socket)
        )
        self.log_path = self.dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def start_daemon(self) -> None:
        """(Re)starts the daemon process (after ``stop()``, for instance)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the daemon is already running")
        earlier = set(self.family.listeners())  # a daemon stopped a moment ago may linger
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *daemon_command(self.config_path, self.family.address, self.entry),
                    *self.daemon_args,
                ],
                env=daemon_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, so cleanup can reach workers
            )
        self.exit_code = None
        deadline = time.monotonic() + self.wait
        while not set(self.family.listeners()) - earlier:
            self._check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not join the tlshd group:\n{self.log()}")
            time.sleep(0.01)
        # tlshd's process model (bench only) forks per request: no worker to wait for.
        while "--fork-per-request" not in self.daemon_args and not self.worker_pids():
            self._check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon forked no worker:\n{self.log()}")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the daemon was not started")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.exit_code = self.process.returncode
            raise DaemonExited(self.exit_code, self.log())

    def log(self) -> str:
        """The daemon's stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float | None = None) -> str:
        """Waits until the log matches ``pattern`` (a regex) ``count`` times; the log."""
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        regex = re.compile(pattern)
        while True:
            text = self.log()
            if len(regex.findall(text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {count}x {pattern!r} in the daemon log:\n{text}")
            self._check_running()
            time.sleep(0.02)

    def write_config(self, text: str) -> Path:
        """Replaces the configuration file (atomically); ``reload()`` makes it count."""
        scratch = self.config_path.with_suffix(".new")
        scratch.write_text(text)
        scratch.replace(self.config_path)
        return self.config_path

    def write_file(self, name: str, data: bytes | str) -> Path:
        """A file in the rig's directory (certificates, keys, trust stores)."""
        path = self.dir / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def reload(self, *, wait: bool = True) -> None:
        """SIGHUP; with ``wait``, returns once the daemon logged the reload."""
        done = len(re.findall(_RELOADED, self.log()))
        self._signal(signal.SIGHUP)
        if wait:
            self.wait_for_log(_RELOADED, done + 1)

    def stop(self, timeout: float | None = None, *, group: bool = False) -> int:
        """SIGTERM, then waits for the exit; returns the exit code (SIGKILL on timeout).

        ``group``: to the daemon's whole process group, workers included, as systemd
        does with its default KillMode=control-group.
        """
        process = self.process
        if process is None:
            raise RuntimeError("the daemon was not started")
        if process.poll() is None:
            if group:
                os.killpg(self.pid, signal.SIGTERM)
            else:
                self._signal(signal.SIGTERM)
            try:
                process.wait(self.wait if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                process.wait(self.wait)
                raise TimeoutError(f"the daemon did not stop on SIGTERM:\n{self.log()}") from None
        self.exit_code = process.returncode
        return process.returncode

    def wait_exit(self, timeout: float | None = None) -> int:
        """Waits for a daemon that is expected to exit by itself; its exit code."""
        process = self.process
        if process is None:
            raise RuntimeError("the daemon was not started")
        try:
            self.exit_code = process.wait(self.wait if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the daemon did not exit:\n{self.log()}") from None
        return self.exit_code

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running():
            raise DaemonExited(self.process.returncode if self.process else None, self.log())
        os.kill(self.pid, sig)

    def _kill_group(self) -> None:
        """SIGKILL to what is left of the daemon's process group (workers included)."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group is the daemon's pid
        deadline = time.monotonic() + 2.0
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)  # workers leave by themselves once their parent is gone
        if _group_members(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(self.wait)

    def stop_daemon(self) -> None:
        """Stops the daemon if it runs (SIGTERM, bounded), then kills what is left of its
        process group; never raises for a daemon that is already gone."""
        with contextlib.suppress(Exception):
            if self.process is not None and self.process.poll() is None:
                self.stop(timeout=self.wait)
        self._kill_group()

    def forkserver_pid(self) -> int:
        """The daemon's one child: the fork server (daemon/forkserver.py)."""
        (pid,) = [p for p in _children(self.pid) if _state(p) not in ("Z", "X", None)]
        return pid

    def worker_pids(self) -> list[int]:
        """The daemon's live workers, from /proc: the children of its one child, the fork
        server (daemon/forkserver.py)."""
        if not self.running():
            return []
        return [
            pid
            for server in _children(self.pid)
            for pid in _children(server)
            if _state(pid) not in ("Z", "X", None)
        ]

    def wait_workers(
        self, count: int, *, excluding: Iterable[int] = (), timeout: float | None = None
    ) -> list[int]:
        """Waits until the daemon has ``count`` live workers, none of them in ``excluding``
        (workers that were killed: gone, and replaced); their pids."""
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        gone = set(excluding)
        while True:
            pids = self.worker_pids()
            if len(pids) == count and not gone.intersection(pids):
                return pids
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pids)} workers, not {count}:\n{self.log()}")
            self._check_running()
            time.sleep(0.02)

    def worker_holding_inode(self, inode: int, timeout: float | None = None) -> int:
        """The pid of the worker that holds socket ``inode`` (waits until one does)."""
        link = f"socket:[{inode}]"
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        while True:
            for pid in self.worker_pids():
                if link in _fd_links(pid):
                    return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker holds the request's socket ({link})")
            time.sleep(0.01)


# -- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _fd_links(pid: int) -> set[str]:
    links: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return links
    for name in names:
        with contextlib.suppress(OSError):
            links.add(os.readlink(f"/proc/{pid}/fd/{name}"))
    return links
