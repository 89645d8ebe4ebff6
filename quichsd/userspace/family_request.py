# SPDX-License-Identifier: GPL-2.0-only
"""Consumer-side view of one request submitted to the family model.

Split from ``family`` so the kernel-consumer API (what tests hold on to) reads on
its own: ``RequestHandle.wait`` / ``cancel`` / ``release`` and the counters.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class _Owner(Protocol):
    def _cancel(self, req: RequestHandle) -> bool: ...

    def _release(self, req: RequestHandle) -> None: ...


class RequestCancelled(Exception):
    """``RequestHandle.wait`` on a request the consumer cancelled."""


class Completion(NamedTuple):
    """What the consumer's done callback gets: wire status and the REMOTE_AUTH list."""

    status: int
    remote_auth: list[int]

    @property
    def kernel_status(self) -> int:
        """Status as the consumer sees it (negative errno)."""
        return -self.status

    @property
    def peerid(self) -> int:
        """Only the first REMOTE_AUTH value reaches the consumer (0 = none)."""
        return self.remote_auth[0] if self.remote_auth else 0


class State(enum.Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass
class ModelStats:
    """Counters for assertions such as "every ACCEPT got exactly one DONE"."""

    readies: int = 0
    readies_dropped: int = 0
    accepts: int = 0
    dones: int = 0
    dones_ignored: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class RequestHandle:
    """A submitted request as the kernel consumer sees it."""

    def __init__(self, model: _Owner, fd: int, key: tuple[int, int], **params: Any) -> None:
        self._model = model
        self._fd = fd
        self.key = key
        self.handler_class: int = params["handler_class"]
        self.message_type: int = params["message_type"]
        self.auth_mode: int = params["auth_mode"]
        self.timeout_ms: int | None = params["timeout_ms"]
        self.peer_identities: list[int] = params["peer_identities"]
        self.cert: int = params["cert"]
        self.privkey: int = params["privkey"]
        self.peername: str | None = params["peername"]
        self.keyring: int | None = params["keyring"]
        self.state = State.PENDING
        self.accepted_by: int | None = None
        self.completion: Completion | None = None
        #: monotonic clock at submission (READY) and at completion (DONE), for latency figures
        self.submitted_at = time.monotonic()
        self.finished_at: float | None = None
        self._finished = threading.Event()

    def wait(self, timeout: float) -> Completion:
        """Block until DONE; ``TimeoutError`` after ``timeout``; ``RequestCancelled``."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"no DONE within {timeout:g} s (state {self.state.value})")
        if self.completion is None:
            raise RequestCancelled("request was cancelled")
        return self.completion

    def cancel(self) -> bool:
        """``tls_handshake_cancel``: True if the request was still outstanding."""
        return self._model._cancel(self)

    def release(self) -> None:
        """The consumer's socket is destroyed: forget the request (ends EBUSY)."""
        self._model._release(self)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def _finish(self, state: State, completion: Completion | None) -> None:
        self.state = state
        self.completion = completion
        self.finished_at = time.monotonic()
        self._close_fd()
        self._finished.set()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
