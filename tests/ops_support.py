# SPDX-License-Identifier: GPL-2.0-only
"""Helpers for the operations tests (notify, journal, status): PKI files, handshake pairs,
a NOTIFY_SOCKET listener."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quichsd.tls.selfsigned import Issued, issue, make_ca
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig, Request, config_text

SERVER_NAME = "server.test"
ALPN = "echo"
WAIT = 15.0


@dataclass(frozen=True)
class PkiFiles:
    ca: Issued
    server: Issued
    ca_path: Path
    chain_path: Path
    key_path: Path


def write_pki(directory: Path) -> PkiFiles:
    ca = make_ca("quichsd ops CA")
    server = issue(ca, (SERVER_NAME,))
    files = PkiFiles(
        ca, server, directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    )
    files.ca_path.write_bytes(ca.cert_pem)
    files.chain_path.write_bytes(server.cert_pem + ca.cert_pem)
    files.key_path.write_bytes(server.key_pem)
    return files


def x509_config(pki: PkiFiles, extra: str = "", **settings: Any) -> str:
    """Clients trust the CA; the server presents its chain.  ``extra`` lands in [quichsd]."""
    return config_text(
        client={"x509.truststore": pki.ca_path},
        server={"x509.certificate": pki.chain_path, "x509.private_key": pki.key_path},
        extra=extra,
        **settings,
    )


def x509_pair(rig: DaemonRig, listener: ModelQuicListener) -> tuple[Request, Request]:
    """The daemon on both ends of one connection: a client and a server request."""
    client = rig.client_request(listener.address, "x509", peername=SERVER_NAME)
    server = rig.server_request(listener, "x509")
    return client, server


def psk_pair(rig: DaemonRig, listener: ModelQuicListener, key: bytes) -> tuple[Request, Request]:
    serial = rig.add_psk(f"quichsd-ops-{secrets.token_hex(4)}", key)
    client = rig.client_request(listener.address, "psk", peer_identities=[serial])
    server = rig.server_request(listener, "psk")
    return client, server


def statuses(*requests: Request) -> list[int]:
    return [request.handle.wait(WAIT).status for request in requests]


@dataclass(frozen=True)
class Notice:
    at: float
    text: str
    context: object

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.text.splitlines())


class NotifyListener:
    """A NOTIFY_SOCKET: collects the datagrams (with ``context()`` taken on arrival)."""

    def __init__(self, address: str | bytes, context: Callable[[], object] = lambda: None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.notices: list[Notice] = []
        self._context = context
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="notify-listener")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            notice = Notice(time.monotonic(), data.decode(), self._context())
            with self._lock:
                self.notices.append(notice)

    def snapshot(self) -> list[Notice]:
        with self._lock:
            return list(self.notices)

    def wait_for(self, predicate: Callable[[Notice], bool], timeout: float = WAIT) -> Notice:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for notice in self.snapshot():
                if predicate(notice):
                    return notice
            time.sleep(0.01)
        raise AssertionError(f"no matching notice in {[n.text for n in self.snapshot()]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        with contextlib.suppress(OSError):
            self.sock.close()
