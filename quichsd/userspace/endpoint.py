# SPDX-License-Identifier: GPL-2.0-only
"""A UDP socket on 127.0.0.1 and the background thread that feeds its connections.

One endpoint serves a client socket, or a listener and every connection it
accepted.  All connection state behind it is guarded by ``lock``: the I/O
thread takes it to process datagrams and timers, socket calls take it to act.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

logger = logging.getLogger(__name__)

Address = tuple[str, int]
#: The only address the model ever binds or talks to.
LOOPBACK = "127.0.0.1"
_JOIN_TIMEOUT = 5.0
_MIN_WAIT = 0.001


def check_loopback(address: tuple[str, int]) -> Address:
    host, port = address
    if host != LOOPBACK:
        raise ValueError(f"the QUIC model only uses {LOOPBACK}, not {host!r}")
    return (host, int(port))


class Channel(Protocol):
    """One connection as the endpoint sees it."""

    def datagram_received(self, data: bytes, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def timer(self) -> float | None: ...


#: Called for a datagram from an unknown address: a new Channel (a listener's
#: new connection) or None to drop it.
Acceptor = Callable[[bytes, Address, float], Channel | None]


class Endpoint:
    def __init__(
        self,
        lock: threading.RLock,
        *,
        port: int = 0,
        acceptor: Acceptor | None = None,
        name: str = "quic-model",
    ) -> None:
        self.lock = lock
        self._acceptor = acceptor
        self._channels: dict[Address, Channel] = {}
        self._users = 0
        self._stopping = False
        #: Exceptions a connection raised in the I/O thread (tests assert it stays empty).
        self.failures: list[Exception] = []
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._udp.bind((LOOPBACK, port))
            self._udp.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError:
            self._udp.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    @property
    def address(self) -> Address:
        host, port = self._udp.getsockname()
        return (str(host), int(port))

    # -- channels and users (call with the lock held) ----------------------------------

    def add(self, peer: Address, channel: Channel) -> None:
        self._channels[peer] = channel

    def remove(self, peer: Address, channel: Channel) -> None:
        if self._channels.get(peer) is channel:
            del self._channels[peer]

    def retain(self) -> None:
        self._users += 1

    def release(self) -> bool:
        """Drops one user; True when it was the last (then call ``close`` unlocked)."""
        self._users -= 1
        return self._users <= 0

    # -- I/O --------------------------------------------------------------------------

    def send(self, data: bytes, peer: Address) -> None:
        try:
            self._udp.sendto(data, peer)
        except OSError as exc:  # a full buffer or ICMP error: the network lost it
            logger.debug("datagram to %s dropped: %s", peer, exc)

    def wake(self) -> None:
        """Makes the I/O thread look at its timers again (after a socket call acted)."""
        if threading.current_thread() is self.thread:
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def close(self) -> None:
        """Stops the thread and closes the descriptors; call without holding the lock."""
        with self.lock:
            if self._stopping:
                return
            self._stopping = True
            self._channels.clear()
        self.wake()
        if threading.current_thread() is not self.thread:
            self.thread.join(_JOIN_TIMEOUT)
            if self.thread.is_alive():
                raise RuntimeError("the QUIC model's I/O thread did not stop")
        for sock in (self._udp, self._wake_r, self._wake_w):
            sock.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                with self.lock:
                    if self._stopping:
                        return
                    timers = [t for ch in self._channels.values() if (t := ch.timer()) is not None]
                # The floor bounds a spin should a connection keep reporting a past deadline.
                timeout = max(_MIN_WAIT, min(timers) - time.monotonic()) if timers else None
                for key, _ in selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_wakeups()
                    else:
                        self._read_datagrams()
                self._fire_timers()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _read_datagrams(self) -> None:
        while True:
            try:
                data, peer = self._udp.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ECONNREFUSED reported for an earlier send
                logger.debug("recvfrom: %s", exc)
                continue
            address: Address = (str(peer[0]), int(peer[1]))
            with self.lock:
                if self._stopping:
                    return
                channel = self._channels.get(address)
                if channel is None and self._acceptor is not None:
                    channel = self._acceptor(data, address, time.monotonic())
                    if channel is not None:
                        self._channels[address] = channel
                if channel is not None:
                    self._guarded(partial(channel.datagram_received, data, time.monotonic()))

    def _fire_timers(self) -> None:
        with self.lock:
            now = time.monotonic()
            for channel in list(self._channels.values()):
                deadline = channel.timer()
                if deadline is not None and deadline <= now:
                    self._guarded(partial(channel.handle_timer, now))

    def _guarded(self, action: Callable[[], None]) -> None:
        """One connection's bug must not stop the thread that serves the others."""
        try:
            action()
        except Exception as exc:
            logger.exception("QUIC model: a connection failed to process input")
            self.failures.append(exc)
