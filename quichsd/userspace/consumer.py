# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's consumers on the models: requests submitted to the family model.

``Consumer`` plays NFS, NVMe or a QUIC user around the family model:
``client_request()`` connects a model QUIC client socket, exports it
(``remote.py``) and submits a CLIENTHELLO; ``server_request()`` accepts from a
``ModelQuicListener``, exports and submits a SERVERHELLO; ``submit()`` resubmits on
EAGAIN (the family's pending limit) until a deadline; ``finish()`` / ``release()``
end a request as its consumer would.  ``check_invariants()``: every request
submitted got exactly one completion and the model saw ``accepts == dones``, no
unanswered request and no ignored (second) DONE.

Peer X.509 keys: a client X.509 handshake makes the daemon add one ``asymmetric``
key per server certificate to the *user* keyring (docs/kernel-abi.md §REMOTE-AUTH);
``forget_peer_keys()`` unlinks those seen in REMOTE_AUTH.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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

__all__ = ["AUTH_MODES", "Consumer", "Counts", "Request"]

#: Names for ``auth=`` (the ACCEPT's AUTH_MODE).
AUTH_MODES: dict[str, int] = {
    "anon": int(AuthMode.UNAUTH),
    "unauth": int(AuthMode.UNAUTH),
    "psk": int(AuthMode.PSK),
    "x509": int(AuthMode.X509),
}


class Request(NamedTuple):
    """A consumer's socket and its handshake request (``handle.wait()`` for the DONE)."""

    sock: ModelQuicSocket
    handle: RequestHandle


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


class Consumer:
    """Requests on ``family``, each wait bounded by ``wait`` seconds; see the module doc."""

    def __init__(self, family: FamilyModel, *, wait: float) -> None:
        self.family = family
        self.wait = wait
        #: Submissions refused with EAGAIN and retried (the family's pending limit).
        self.eagain_retries = 0
        self._tracked: list[_Tracked] = []

    def _diagnostics(self) -> str:
        """More context for a broken invariant (the rig adds the daemon's log)."""
        return ""

    def close_requests(self) -> None:
        """Closes every request's socket and exported end."""
        for tracked in self._tracked:
            self._close_tracked(tracked)

    def wait_exports_stopped(self) -> None:
        """Waits (bounded) for the exported ends' serving threads to end."""
        for tracked in self._tracked:
            if tracked.exported is not None:
                tracked.exported.wait_stopped(self.wait)

    def exported_inode(self, request: Request) -> int:
        """The inode of the socket submitted for ``request`` (what /proc shows)."""
        return os.fstat(self.exported(request).fileno()).st_ino

    def forget_peer_keys(self) -> None:
        """Unlinks the keys the daemon added for successful X.509 client requests."""
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
                + f"\nmodel stats: {stats}{self._diagnostics()}"
            )
        return counts


