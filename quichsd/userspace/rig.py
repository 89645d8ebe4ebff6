# SPDX-License-Identifier: GPL-2.0-only
"""The real daemon on the models: a rig for end-to-end tests, benchmarks and demos.

``DaemonRig`` plays the kernel and its consumers around an unmodified
``quichsd serve`` process:

* a ``FamilyModel`` (the handshake netlink family) on a UNIX address in a
  private temporary directory;
* a configuration file there (``config_text()`` writes tlshd's format plus our
  ``[quichsd]`` section);
* the daemon as a subprocess, ``python -m quichsd.userspace.serve --family ADDRESS
  --quic -c CONFIG -s`` (``quichsd serve``'s ``serve()`` with the models' wiring),
  so the configuration, the signal handling and the process model (parent +
  fork server + workers) are the production ones; its stderr log goes to a file (``log()``,
  ``wait_for_log()``);
* consumer-side helpers: ``client_request()`` connects a model QUIC client
  socket, exports it (``quichsd.userspace.remote``) and submits a CLIENTHELLO;
  ``server_request()`` accepts from a ``ModelQuicListener``, exports and
  submits a SERVERHELLO; ``submit()`` resubmits on EAGAIN (the family's
  pending limit) until a deadline;
* keyring helpers: ``add_psk()`` / ``add_der()`` put ``user`` keys in a
  keyring of the rig's own, linked into our session keyring, which the
  daemon subprocess inherits (so it searches it and may read the keys);
  closing the rig unlinks that keyring, and with it every key in it.  A
  process without a session keyring gets an anonymous one on first use;
  ``start()`` makes that happen before the daemon is forked, so both share it;
* process control: ``reload()`` (SIGHUP, waits for the log line),
  ``stop()`` (SIGTERM, returns the exit code), ``worker_pids()``,
  ``worker_holding()`` (which worker has a request's fd);
* ``check_invariants()``: every request submitted to the family model got
  exactly one completion and the model saw ``accepts == dones``, no
  unanswered request and no ignored (second) DONE.

Every wait is bounded; ``close()`` (or leaving the ``with`` block) ends the
daemon (SIGKILL to its process group as a last resort), the family model, the
sockets and the keys, also when a test fails.  Everything is on 127.0.0.1.

Peer X.509 keys: a client X.509 handshake makes the daemon add one
``asymmetric`` key per server certificate to the *user* keyring
(handshake-netlink.md §9).  The rig unlinks those it sees in REMOTE_AUTH
when it closes.

Use::

    rig = DaemonRig()
    rig.write_config(config_text(client={"x509.truststore": ca_path},
                                 status_socket=rig.status_socket))
    with rig:
        sock, handle = rig.client_request(("127.0.0.1", port), "x509",
                                          peername="server.example")
        assert handle.wait(10).status == 0    # sock is now an ESTABLISHED model socket
        rig.check_invariants()

"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from quichsd.daemon import keyring
from quichsd.daemon.identities import MUTUAL_AUTH_MARKER
from quichsd.netlink.constants import AuthMode, MessageType
from quichsd.quic.abi import Config
from quichsd.userspace.family import Completion, FamilyModel, RequestHandle
from quichsd.userspace.family_request import State
from quichsd.userspace.listener import ModelQuicListener
from quichsd.userspace.quic_socket import ModelQuicSocket
from quichsd.userspace.remote import ExportedSocket, export_socket

__all__ = [
    "AUTH_MODES",
    "DaemonExited",
    "DaemonRig",
    "Request",
    "config_text",
    "run_daemon_once",
]

#: Default bound on every wait of the rig (seconds).
DEFAULT_WAIT = 15.0
#: Names for ``auth=`` (the ACCEPT's AUTH_MODE).
AUTH_MODES: dict[str, int] = {
    "anon": int(AuthMode.UNAUTH),
    "unauth": int(AuthMode.UNAUTH),
    "psk": int(AuthMode.PSK),
    "x509": int(AuthMode.X509),
}
_RELOADED = "configuration reloaded"
#: A consumer keyring's permissions: possessor all; user view, read, search, link.
CONSUMER_KEYRING_PERM = 0x3F1B0000
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DaemonExited(RuntimeError):
    """The daemon ended when it should have been serving; carries its code and log."""

    def __init__(self, code: int | None, log: str) -> None:
        super().__init__(f"quichsd exited with {code}; its log:\n{log}")
        self.code = code
        self.log = log


class Request(NamedTuple):
    """A consumer's socket and its handshake request (``handle.wait()`` for the DONE)."""

    sock: ModelQuicSocket
    handle: RequestHandle


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
    lines = ["# written by quichsd.userspace.rig", "[debug]", f"loglevel={loglevel}"]
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


def _daemon_command(
    config: Path, family_address: str, entry: Sequence[str] = DAEMON_ENTRY
) -> list[str]:
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


def _daemon_env() -> dict[str, str]:
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
        _daemon_command(config, family_address),
        env=_daemon_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stderr


@dataclass(frozen=True)
class _Submission:
    """A request's parameters besides its socket, gathered once so that ``submit()``,
    ``client_request()``, ``server_request()`` and ``client_requests()`` hand on one
    value instead of repeating the same keywords."""

    message_type: int
    auth: str | int
    timeout_ms: int | None
    peer_identities: Sequence[int]
    cert: int
    privkey: int
    peername: str | None
    keyring: int | None


@dataclass(eq=False)
class _Tracked:
    request: Request
    exported: ExportedSocket | None
    closed: bool = False


@dataclass
class Counts:
    """What ``check_invariants()`` found (for reports and further assertions)."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    accepts: int = 0
    dones: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class DaemonRig:
    """A FamilyModel, a config file and the real daemon; see the module doc."""

    def __init__(
        self,
        config: str | None = None,
        *,
        family_present: bool = True,
        pending_max: int = 50,
        supports_remote_auth: bool = True,
        wait: float = DEFAULT_WAIT,
        daemon_args: Sequence[str] = (),
        entry: Sequence[str] = DAEMON_ENTRY,
    ) -> None:
        """``entry``: the interpreter's arguments before the launcher's (a test's own
        script that wraps ``serve.main``, for instance); ``daemon_args``: the launcher's
        further options (``--fork-per-request``)."""
        self.wait = wait
        self.daemon_args = tuple(daemon_args)
        self.entry = tuple(entry)
        self._tmp = tempfile.TemporaryDirectory(prefix="quichsd-rig-")
        self.dir = Path(self._tmp.name)
        self.family = FamilyModel(
            address=str(self.dir / "handshake.sock"),
            family_present=family_present,
            pending_max=pending_max,
            supports_remote_auth=supports_remote_auth,
        )
        self.config_path = self.dir / "quichsd.conf"
        self.status_socket = self.dir / "status.sock"
        self.config_path.write_text(
            config if config is not None else config_text(status_socket=self.status_socket)
        )
        self.log_path = self.dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        #: Submissions refused with EAGAIN and retried (the family's pending limit).
        self.eagain_retries = 0
        self._family_started = False
        self._tracked: list[_Tracked] = []
        self._keyring: int | None = None
        self._consumer_keyrings: list[int] = []
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DaemonRig:
        """Starts the family model and the daemon; returns once it joined and forked workers."""
        try:
            if not self._family_started:
                self.family.start()
                self._family_started = True
            # Before the fork: the first use of our session keyring may install one (an
            # anonymous "_ses"), and the daemon must inherit that one to possess our keys.
            _ = self.keyring
            self.start_daemon()
        except BaseException:
            self.close()
            raise
        return self

    def start_daemon(self) -> None:
        """(Re)starts the daemon process (after ``stop()``, for instance)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the daemon is already running")
        earlier = set(self.family.listeners())  # a daemon stopped a moment ago may linger
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *_daemon_command(self.config_path, self.family.address, self.entry),
                    *self.daemon_args,
                ],
                env=_daemon_env(),
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

    def __enter__(self) -> DaemonRig:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ends everything the rig started; safe to call twice and after failures."""
        if self._closed:
            return
        self._closed = True
        try:
            for tracked in self._tracked:
                self._close_tracked(tracked)
            with contextlib.suppress(Exception):
                if self.process is not None and self.process.poll() is None:
                    self.stop(timeout=self.wait)
            self._kill_group()
        finally:
            if self._family_started:
                self.family.stop()
            self._forget_peer_keys()
            if self._keyring is not None:
                with contextlib.suppress(keyring.KeyringError):
                    keyring.unlink_key(self._keyring)
                self._keyring = None
            for serial in self._consumer_keyrings:
                with contextlib.suppress(keyring.KeyringError):
                    keyring.unlink_key(serial, keyring.KEY_SPEC_PROCESS_KEYRING)
            for tracked in self._tracked:
                if tracked.exported is not None:
                    tracked.exported.wait_stopped(self.wait)
            self._tmp.cleanup()

    # -- the daemon process -----------------------------------------------------------------

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

    def worker_holding(self, request: Request, timeout: float | None = None) -> int:
        """The pid of the worker that holds ``request``'s socket (waits until one does)."""
        tracked = self._find(request)
        assert tracked.exported is not None
        link = f"socket:[{os.fstat(tracked.exported.fileno()).st_ino}]"
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        while True:
            for pid in self.worker_pids():
                if link in _fd_links(pid):
                    return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker holds the request's socket ({link})")
            time.sleep(0.01)

    # -- keyring --------------------------------------------------------------------------------

    @property
    def keyring(self) -> int:
        """The rig's keyring (linked into our session keyring, so the daemon possesses it)."""
        if self._keyring is None:
            name = f"quichsd-rig-{os.getpid()}-{secrets.token_hex(4)}"
            self._keyring = keyring.add_key("keyring", name, b"", keyring.KEY_SPEC_SESSION_KEYRING)
        return self._keyring

    def add_key(self, description: str, payload: bytes, key_type: str = "user") -> int:
        """A key in the rig's keyring; its serial."""
        return keyring.add_key(key_type, description, payload, self.keyring)

    def add_psk(self, identity: str, key: bytes) -> int:
        """A PSK as a ``user`` key whose description is its identity; the serial."""
        return self.add_key(identity, key)

    def add_der(self, description: str, der: bytes) -> int:
        """A DER certificate or private key as a ``user`` key; the serial for the ACCEPT."""
        return self.add_key(description, der)

    def new_keyring(
        self, name: str | None = None, keys: Mapping[str, bytes] | None = None
    ) -> tuple[int, dict[str, int]]:
        """A consumer's keyring *not* reachable from the session keyring (for ACCEPT's
        KEYRING), holding ``keys`` (description -> payload) as ``user`` keys: its serial
        and theirs.  As in the real-kernel floor, uid 0 may view, search and link the
        keyring, but only a possessor may read the keys: the daemon must link it."""
        description = name or f"quichsd-rig-consumer-{secrets.token_hex(4)}"
        serial = keyring.add_key("keyring", description, b"", self.keyring)
        serials = {
            key: keyring.add_key("user", key, payload, serial)
            for key, payload in (keys or {}).items()
        }
        keyring.set_permissions(serial, CONSUMER_KEYRING_PERM)
        # Kept alive as the consumer keeps its keyring (a reference), from this process's
        # keyring, which the daemon does not share; reachable for the daemon only through
        # the serial the consumer passes: take it out of our session tree.
        keyring.link_key(serial, keyring.KEY_SPEC_PROCESS_KEYRING)
        self._consumer_keyrings.append(serial)
        keyring.unlink_key(serial, self.keyring)
        return serial, serials

    def _forget_peer_keys(self) -> None:
        for tracked in self._tracked:
            handle = tracked.request.handle
            completion = handle.completion
            if (
                completion is None
                or completion.status != 0
                or handle.message_type != MessageType.CLIENTHELLO
                or handle.auth_mode != AuthMode.X509
            ):
                continue
            for serial in completion.remote_auth:
                if serial not in (0, MUTUAL_AUTH_MARKER):
                    with contextlib.suppress(keyring.KeyringError):
                        keyring.unlink_key(serial, keyring.KEY_SPEC_USER_KEYRING)

    # -- consumer side ------------------------------------------------------------------------

    def submit(
        self,
        sock: ExportedSocket | int,
        message_type: int,
        auth: str | int,
        *,
        timeout_ms: int | None = None,
        peer_identities: Sequence[int] = (),
        cert: int = 0,
        privkey: int = 0,
        peername: str | None = None,
        keyring: int | None = None,
        retry_for: float | None = None,
    ) -> RequestHandle:
        """``FamilyModel.submit`` that resubmits on EAGAIN for up to ``retry_for`` s."""
        sub = _Submission(
            message_type, auth, timeout_ms, peer_identities, cert, privkey, peername, keyring
        )
        return self._submit(sock, sub, retry_for)

    def _submit(
        self, sock: ExportedSocket | int, sub: _Submission, retry_for: float | None
    ) -> RequestHandle:
        """``submit()`` on gathered parameters: the one place that retries on EAGAIN."""
        deadline = time.monotonic() + (self.wait if retry_for is None else retry_for)
        auth_mode = AUTH_MODES[sub.auth] if isinstance(sub.auth, str) else sub.auth
        while True:
            try:
                return self.family.submit(
                    sock,
                    sub.message_type,
                    auth_mode,
                    timeout_ms=sub.timeout_ms,
                    peer_identities=sub.peer_identities,
                    cert=sub.cert,
                    privkey=sub.privkey,
                    peername=sub.peername,
                    keyring=sub.keyring,
                )
            except OSError as exc:
                if exc.errno != errno.EAGAIN or time.monotonic() > deadline:
                    raise
                self.eagain_retries += 1
                time.sleep(0.002)

    def client_request(
        self,
        server_address: tuple[str, int],
        auth: str | int = "x509",
        *,
        alpn: Iterable[bytes | str] = (b"echo",),
        peername: str | None = None,
        server_name: str | None = None,
        timeout_ms: int | None = 10_000,
        cert: int = 0,
        privkey: int = 0,
        peer_identities: Sequence[int] = (),
        keyring: int | None = None,
        config: Config | None = None,
        message_type: int = MessageType.CLIENTHELLO,
        retry_for: float | None = None,
    ) -> Request:
        """A connected model client socket, exported and submitted (CLIENTHELLO)."""
        sock = ModelQuicSocket.connect(
            server_address,
            alpn=alpn,
            config=config,
            server_name=server_name if server_name is not None else peername,
        )
        sub = _Submission(
            message_type, auth, timeout_ms, peer_identities, cert, privkey, peername, keyring
        )
        return self._submit_socket(sock, sub, retry_for)

    def server_request(
        self,
        listener: ModelQuicListener,
        auth: str | int = "x509",
        *,
        timeout_ms: int | None = 10_000,
        cert: int = 0,
        privkey: int = 0,
        peer_identities: Sequence[int] = (),
        peername: str | None = None,
        keyring: int | None = None,
        accept_timeout: float | None = None,
        message_type: int = MessageType.SERVERHELLO,
        retry_for: float | None = None,
    ) -> Request:
        """The next connection from ``listener``, exported and submitted (SERVERHELLO)."""
        sock = listener.accept(timeout=self.wait if accept_timeout is None else accept_timeout)
        sub = _Submission(
            message_type, auth, timeout_ms, peer_identities, cert, privkey, peername, keyring
        )
        return self._submit_socket(sock, sub, retry_for)

    def _submit_socket(
        self, sock: ModelQuicSocket, sub: _Submission, retry_for: float | None
    ) -> Request:
        """Exports ``sock`` and submits it; on any failure closes both, so none leaks."""
        exported: ExportedSocket | None = None
        try:
            exported = export_socket(sock)
            handle = self._submit(exported, sub, retry_for)
        except BaseException:
            if exported is not None:
                exported.close()
            sock.close()
            raise
        return self._track(sock, handle, exported)

    def _track(
        self, sock: ModelQuicSocket, handle: RequestHandle, exported: ExportedSocket
    ) -> Request:
        """Records a submitted request, so that ``close()`` and ``finish()`` can end it."""
        request = Request(sock, handle)
        self._tracked.append(_Tracked(request, exported))
        return request

    def client_requests(
        self,
        server_address: tuple[str, int],
        count: int,
        auth: str | int = "x509",
        *,
        alpn: Iterable[bytes | str] = (b"echo",),
        peername: str | None = None,
        timeout_ms: int | None = 10_000,
        cert: int = 0,
        privkey: int = 0,
        peer_identities: Sequence[int] = (),
        retry_for: float | None = None,
    ) -> list[Request]:
        """A burst: ``count`` client sockets connected and exported first, then
        submitted back to back (resubmitting on EAGAIN)."""
        alpn = tuple(alpn)
        sub = _Submission(
            MessageType.CLIENTHELLO,
            auth,
            timeout_ms,
            peer_identities,
            cert,
            privkey,
            peername,
            None,
        )
        prepared: list[tuple[ModelQuicSocket, ExportedSocket]] = []
        requests: list[Request] = []
        try:
            for _ in range(count):
                sock = ModelQuicSocket.connect(server_address, alpn=alpn, server_name=peername)
                try:
                    prepared.append((sock, export_socket(sock)))
                except BaseException:
                    sock.close()
                    raise
            while prepared:
                sock, exported = prepared[0]
                handle = self._submit(exported, sub, retry_for)
                prepared.pop(0)
                requests.append(self._track(sock, handle, exported))
        finally:
            for sock, exported in prepared:  # not submitted: an error cut the burst short
                exported.close()
                sock.close()
        return requests

    def exported(self, request: Request) -> ExportedSocket:
        """The fd-bearing end submitted for ``request`` (its server thread's state)."""
        exported = self._find(request).exported
        assert exported is not None
        return exported

    def finish(self, request: Request) -> None:
        """The consumer is done with ``request``: closes its socket and exported end.

        The family model keeps its entry (the kernel keeps the request until the
        socket is destroyed); the invariants still count it.
        """
        self._close_tracked(self._find(request))

    def release(self, request: Request) -> None:
        """``finish()``, then forget the request here and in the family model, so that a
        run of many requests (bench/soak.py) keeps the rig's own state bounded."""
        tracked = self._find(request)
        self._close_tracked(tracked)
        self._tracked.remove(tracked)
        self.family.forget(request.handle)

    def _find(self, request: Request) -> _Tracked:
        for tracked in self._tracked:
            if tracked.request.handle is request.handle:
                return tracked
        raise KeyError("not a request of this rig")

    @staticmethod
    def _close_tracked(tracked: _Tracked) -> None:
        if tracked.closed:
            return
        tracked.closed = True
        if tracked.exported is not None:
            tracked.exported.close()
        tracked.request.sock.close()

    @property
    def requests(self) -> list[Request]:
        return [t.request for t in self._tracked]

    # -- invariants ------------------------------------------------------------------------------

    def wait_all(self, timeout: float | None = None) -> list[Completion]:
        """Waits for the DONE of every request the family model has; their completions."""
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        completions = []
        for handle in list(self.family.requests):
            if handle.state is State.CANCELLED:
                continue
            completions.append(handle.wait(max(0.0, deadline - time.monotonic())))
        return completions

    def check_invariants(
        self, timeout: float | None = None, *, allow_cancelled: bool = False
    ) -> Counts:
        """Exactly one DONE per ACCEPT, for every request the family model holds.

        Waits (bounded) for outstanding DONEs first, then requires: every
        request completed (``allow_cancelled``: or cancelled by the consumer,
        as after the daemon stopped), nothing accepted and unanswered,
        ``accepts == dones`` and no ignored second DONE.
        """
        deadline = time.monotonic() + (self.wait if timeout is None else timeout)
        while time.monotonic() < deadline:
            if not self.family.unanswered() and all(
                h.state in (State.COMPLETED, State.CANCELLED) for h in self.family.requests
            ):
                break
            time.sleep(0.02)
        handles = list(self.family.requests)
        counts = Counts(requests=len(handles))
        problems: list[str] = []
        for index, handle in enumerate(handles):
            if handle.state is State.COMPLETED:
                assert handle.completion is not None
                counts.completed += 1
                status = handle.completion.status
                counts.statuses[status] = counts.statuses.get(status, 0) + 1
            elif handle.state is State.CANCELLED and allow_cancelled:
                counts.cancelled += 1
            else:
                problems.append(f"request {index}: {handle.state.value}, no completion")
        stats = self.family.stats
        counts.accepts, counts.dones = stats.accepts, stats.dones
        unanswered = self.family.unanswered()
        if unanswered:
            problems.append(f"{len(unanswered)} accepted requests have no DONE")
        if stats.accepts != stats.dones:
            problems.append(f"{stats.accepts} ACCEPTs but {stats.dones} DONEs")
        if stats.dones_ignored:
            problems.append(f"{stats.dones_ignored} DONEs for finished requests (a second DONE)")
        if problems:
            raise AssertionError(
                "handshake invariants violated:\n  "
                + "\n  ".join(problems)
                + f"\nmodel stats: {stats}\ndaemon log:\n{self.log()[-4000:]}"
            )
        return counts


# -- /proc ---------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a mapping (``CapEff``, ``NoNewPrivs``, ``Seccomp``...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


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
