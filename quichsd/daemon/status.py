# SPDX-License-Identifier: GPL-2.0-only
"""The status socket: the daemon's counters for ``quichsd status``, root only.

Server (in the daemon parent's event loop): a UNIX stream socket at
``[quichsd] status_socket`` (default ``/run/quichsd/status.sock``), created
with mode 0600 in a directory of mode 0700; a peer whose uid is neither 0
nor ours (SO_PEERCRED) is refused.  A client sends one line, ``json`` or
``openmetrics``, and reads the answer until EOF:

* ``json``: the snapshot (``quichsd.daemon.metrics_snapshot.snapshot``), one object;
* ``openmetrics``: the OpenMetrics 1.0 text exposition, ending ``# EOF``,
  written by prometheus_client from our collector (``metrics_openmetrics``)
  (so ``socat - UNIX-CONNECT:/run/quichsd/status.sock <<< openmetrics`` feeds
  a scraper's text-file collector).

The default path is used only where its directory exists (systemd's
``RuntimeDirectory=quichsd`` makes it); a path set in the configuration gets
its directory created.  A status socket that cannot be set up is logged and
skipped: it never stops the daemon.

Client: ``query(path, what)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quichsd.daemon.config import DaemonConfig
from quichsd.daemon.metrics import Snapshot

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("quichsd")

DEFAULT_SOCKET = DaemonConfig().status_socket
REQUESTS = ("json", "openmetrics")
#: A client that says nothing for this long gets the JSON snapshot.
REQUEST_TIMEOUT = 2.0
MAX_REQUEST = 64


class StatusUnavailable(OSError):
    """``quichsd status`` could not reach the daemon; the message says why and what to do."""


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _prepare_directory(path: Path, explicit: bool) -> bool:
    parent = path.parent
    if parent.is_dir():
        return True
    if not explicit:  # the default path outside systemd: not worth a warning
        log.debug(
            "status socket off: %s does not exist (systemd's RuntimeDirectory= creates it; "
            "or set [quichsd] status_socket)",
            parent,
        )
        return False
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("status socket off: cannot create %s: %s", parent, exc.strerror)
        return False
    return True


def _claim(path: Path) -> bool:
    """Removes a stale socket at ``path``; False if a live daemon answers there."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return True
    if not stat.S_ISSOCK(mode):
        log.warning("status socket off: %s exists and is not a socket", path)
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: left by a daemon that died
        return True
    finally:
        probe.close()
    log.warning("status socket off: another daemon answers on %s", path)
    return False


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o177)  # born 0600: no window in which others could connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class StatusServer:
    """Serves ``snapshot()`` on a UNIX socket from the running event loop."""

    def __init__(self, path: Path, snapshot: Callable[[], Snapshot]) -> None:
        self.path = path
        self._snapshot = snapshot
        #: Made on the first OpenMetrics request: prometheus_client is not imported
        #: before the daemon joins the group (docs/startup.md).
        self._registry: CollectorRegistry | None = None
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self.served = 0
        self.refused = 0

    @classmethod
    async def start(
        cls, path: Path, snapshot: Callable[[], Snapshot], *, explicit: bool = True
    ) -> StatusServer | None:
        """A running server, or None (logged) if the socket cannot be set up."""
        server = cls(path, snapshot)
        if not _prepare_directory(path, explicit) or not _claim(path):
            return None
        try:
            sock = _bind(path)
        except OSError as exc:
            log.warning("status socket off: cannot listen on %s: %s", path, exc.strerror)
            return None
        server._inode = os.stat(path).st_ino
        server._server = await asyncio.start_unix_server(server._client, sock=sock)
        log.debug("status socket on %s", path)
        return server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock) if sock is not None else None
            if uid not in (0, os.getuid()):
                self.refused += 1
                writer.write(b"error: not allowed\n")
                return
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError):
                line = b""
            request = line[:MAX_REQUEST].strip().decode(errors="replace").lower() or "json"
            writer.write(self.answer(request).encode())
            self.served += 1
        except Exception as exc:  # one bad client must not disturb the daemon
            log.debug("status client: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
                await writer.wait_closed()

    def answer(self, request: str) -> str:
        if request == "openmetrics":
            from quichsd.daemon.metrics_openmetrics import expose, registry_for

            if self._registry is None:
                self._registry = registry_for(self._snapshot)
            return expose(self._registry)
        if request == "json":
            return json.dumps(self._snapshot(), sort_keys=True) + "\n"
        return f"error: unknown request {request!r}; ask for one of {', '.join(REQUESTS)}\n"

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        # Only our own socket: a successor may have bound the path already.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


# -- client -------------------------------------------------------------------------------------


def query(path: Path, what: str = "json", timeout: float = 5.0) -> str:
    """Asks the daemon on ``path``; its answer.  ``StatusUnavailable`` if none."""
    if what not in REQUESTS:
        raise ValueError(f"ask for one of {REQUESTS}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise StatusUnavailable(
                2, f"{path}: no status socket (is quichsd running? is status_socket set?)"
            ) from None
        except PermissionError:
            raise StatusUnavailable(13, f"{path}: permission denied (run as root)") from None
        except ConnectionRefusedError:
            raise StatusUnavailable(111, f"{path}: nobody listens (quichsd stopped?)") from None
        sock.sendall(what.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except TimeoutError:
        raise StatusUnavailable(110, f"{path}: no answer within {timeout:g} s") from None
    finally:
        sock.close()
    text = b"".join(chunks).decode("utf-8", "replace")
    if text.startswith("error:"):
        raise StatusUnavailable(1, f"{path}: {text[6:].strip()}")
    return text


def query_snapshot(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    raw = query(path, "json", timeout)
    try:
        value = json.loads(raw)
    except ValueError:
        raise StatusUnavailable(1, f"{path}: not a quichsd status answer") from None
    if not isinstance(value, dict):
        raise StatusUnavailable(1, f"{path}: not a quichsd status answer")
    return value
