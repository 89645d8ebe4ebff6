# SPDX-License-Identifier: GPL-2.0-only
"""Shared pieces of the interop tests: our agent on the socket model against unmodified stacks.

Our side is what a kernel consumer plus the agent would be: a ``ModelQuicSocket``
(client) or a ``ModelQuicListener`` + ``accept`` (server), options set on it as
the consumer would, and ``quichsd.api.client_handshake`` / ``server_handshake``.
The other side is an unmodified QUIC stack -- aioquic or qh3, whose asyncio APIs
are the same shape -- running in a background thread with its own event loop.
Everything is UDP on 127.0.0.1 and every wait is bounded by ``WAIT``.

The peer's application code is ours (that is what its API is for): a stream
echo handler and a protocol subclass that records the QUIC events the stack
reports (``HandshakeCompleted``, ``ConnectionTerminated``), so a test can say
what the peer saw on the wire.

Test classes inherit their fixtures from ``InteropFixtures`` (fixtures imported
into a test module would be shadowed by their own parameter names).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aioquic.asyncio import serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket as AioquicTicket

from quichsd import api
from quichsd.quic import sockopt
from quichsd.quic.abi import Config, ConnectionClose
from quichsd.quic.driver import Credentials, HandshakeResult
from quichsd.tls import Cipher
from quichsd.tls.selfsigned import Issued, issue, make_ca
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState
from tests.support import streams

SERVER_NAME = "server.test"
CLIENT_NAME = "client.test"
ALPN = "echo"
#: What our side offers where the test reads the choice back: only ALPN is common.
OUR_ALPN_CHOICES = ("h3", ALPN)
#: Upper bound of every wait in these tests (handshakes take milliseconds on loopback).
WAIT = 5.0
#: CONFIG receive_session_ticket: the client waits up to this many seconds for a ticket.
TICKET_WAIT = 2
CRYPTO_ERROR = 0x100
_ACCEPT_SLICE = 0.05
ALERT_HANDSHAKE_FAILURE = 40
ALERT_BAD_CERTIFICATE = 42
ALERT_NO_APPLICATION_PROTOCOL = 120

#: Kernel cipher number -> the TLS 1.3 suite's name in aioquic's and qh3's CipherSuite.
SUITE_NAMES: dict[int, str] = {
    Cipher.AES_128_GCM: "AES_128_GCM_SHA256",
    Cipher.AES_256_GCM: "AES_256_GCM_SHA384",
    Cipher.CHACHA20_POLY1305: "CHACHA20_POLY1305_SHA256",
}

_T = TypeVar("_T")


# -- certificates, as files (the api takes paths) ---------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA with server and client leaves, a CA nobody trusts, and their files."""

    ca: Issued
    stranger: Issued
    server: Issued
    client: Issued
    stranger_client: Issued
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def stranger_pem(self) -> bytes:
        return self.stranger.cert_pem


def make_pki(directory: Path) -> Pki:
    ca = make_ca("quichsd interop CA")
    stranger = make_ca("quichsd interop stranger CA")
    pki = Pki(
        ca=ca,
        stranger=stranger,
        server=issue(ca, (SERVER_NAME,)),
        client=issue(ca, (CLIENT_NAME,)),
        stranger_client=issue(stranger, (CLIENT_NAME,)),
        directory=directory,
    )
    files = {
        "ca": ca.cert_pem,
        "server": pki.server.cert_pem,
        "server-key": pki.server.key_pem,
        "client": pki.client.cert_pem,
        "client-key": pki.client.key_pem,
        "stranger-client": pki.stranger_client.cert_pem,
        "stranger-client-key": pki.stranger_client.key_pem,
    }
    for name, data in files.items():
        pki.path(name).write_bytes(data)
    return pki


# -- the peer stacks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """One QUIC implementation's asyncio API (aioquic and qh3 share its shape)."""

    name: str
    serve: Callable[..., Coroutine[Any, Any, Any]]
    connect: Callable[..., Any]
    configuration: Callable[..., Any]
    protocol: type[Any]
    cipher_suite: Any
    quic_logger: Callable[[], Any]
    handshake_completed: type[Any]
    connection_terminated: type[Any]
    recorder: Callable[..., Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "recorder", _recorder_class(self.protocol))

    def suites(self, ciphers: Iterable[int]) -> list[Any]:
        return [getattr(self.cipher_suite, SUITE_NAMES[c]) for c in ciphers]


def load_stack(package: str) -> Stack:
    """``"aioquic"`` or ``"qh3"``: the same names live in the same modules in both."""
    asyncio_api = importlib.import_module(f"{package}.asyncio")
    configuration = importlib.import_module(f"{package}.quic.configuration")
    events = importlib.import_module(f"{package}.quic.events")
    logger = importlib.import_module(f"{package}.quic.logger")
    tls = importlib.import_module(f"{package}.tls")
    return Stack(
        name=package,
        serve=asyncio_api.serve,
        connect=asyncio_api.connect,
        configuration=configuration.QuicConfiguration,
        protocol=asyncio_api.QuicConnectionProtocol,
        cipher_suite=tls.CipherSuite,
        quic_logger=logger.QuicLogger,
        handshake_completed=events.HandshakeCompleted,
        connection_terminated=events.ConnectionTerminated,
    )


class EventLog:
    """QUIC events a peer connection reported, appended in the loop thread, read in ours."""

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._cond = threading.Condition()

    def append(self, event: Any) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def of(self, kind: type[_T]) -> list[_T]:
        with self._cond:
            return [e for e in self._events if isinstance(e, kind)]

    def wait_for(self, kind: type[_T], count: int = 1, timeout: float = WAIT) -> list[_T]:
        """The events of ``kind`` once there are ``count`` of them; fails after ``timeout``."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: sum(isinstance(e, kind) for e in self._events) >= count, timeout
            )
            got = [e for e in self._events if isinstance(e, kind)]
        assert found, f"waited {timeout} s for {count} {kind.__name__}; got {got}"
        return got


def _recorder_class(base: type[Any]) -> type[Any]:
    class Recorder(base):  # type: ignore[misc]
        """The stack's own protocol, telling an ``EventLog`` what its connection reports."""

        def __init__(self, *args: Any, log: EventLog, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.log = log

        def quic_event_received(self, event: Any) -> None:
            self.log.append(event)
            super().quic_event_received(event)

    Recorder.__name__ = Recorder.__qualname__ = f"Recording{base.__name__}"
    return Recorder


def zero_rtt_packets_sent(quic_logger: Any) -> int:
    """How many 0-RTT packets a peer's QuicLogger saw its connection send."""
    count = 0
    for trace in quic_logger.to_dict()["traces"]:
        for event in trace["events"]:
            if event["name"].endswith("packet_sent"):
                header = event["data"].get("header", {})
                count += header.get("packet_type") == "0RTT"
    return count


# -- a loop thread for the peer -----------------------------------------------------------


class LoopThread:
    """An asyncio loop in its own thread; ``stop`` cancels what is left and joins it.

    ``errors`` collects what the loop's exception handler saw: exceptions a peer
    stack raised in its own callbacks, which asyncio would otherwise only log (they
    are still logged, for the tests that do not read ``errors``).  ``wait`` bounds
    ``call`` and ``stop``: tests with a longer deadline of their own pass it.
    """

    def __init__(self, name: str, *, wait: float = WAIT) -> None:
        self.loop = asyncio.new_event_loop()
        self.wait = wait
        self.errors: list[str] = []
        self.loop.set_exception_handler(self._record)
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{name}-loop")
        self._thread.start()

    def _record(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.default_exception_handler(context)

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], _T]) -> _T:
        async def run() -> _T:
            return fn()

        return self.submit(run()).result(self.wait)

    def stop(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_default_executor()

        try:
            self.submit(drain()).result(self.wait)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.wait)
            assert not self._thread.is_alive(), "the peer's event loop did not stop"
            self.loop.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read())
    writer.write_eof()


# -- their server ---------------------------------------------------------------------------


class PeerServer:
    """``stack.serve`` on 127.0.0.1 with an echo handler, a ticket store and an event log."""

    def __init__(
        self,
        loop: LoopThread,
        stack: Stack,
        pki: Pki,
        *,
        alpn: tuple[str, ...] = (ALPN,),
        cipher_suites: Iterable[int] = (),
    ) -> None:
        config = stack.configuration(is_client=False, alpn_protocols=list(alpn))
        config.load_cert_chain(str(pki.path("server")), str(pki.path("server-key")))
        if cipher_suites:
            config.cipher_suites = stack.suites(cipher_suites)
        self.events = EventLog()
        self.tickets: dict[bytes, Any] = {}
        self.ticket_lookups = 0
        self._loop = loop

        def fetch(label: bytes) -> Any:
            self.ticket_lookups += 1
            return self.tickets.pop(label, None)  # single use, as a server should

        async def start() -> Any:
            return await stack.serve(
                "127.0.0.1",
                0,
                configuration=config,
                create_protocol=partial(stack.recorder, log=self.events),
                stream_handler=lambda r, w: asyncio.ensure_future(_echo(r, w)),
                session_ticket_handler=lambda t: self.tickets.__setitem__(t.ticket, t),
                session_ticket_fetcher=fetch,
            )

        self.server = loop.submit(start()).result(WAIT)
        transport = self.server._transport
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        self.address: tuple[str, int] = (str(host), int(port))

    def close(self) -> None:
        self._loop.call(self.server.close)


class AioquicServer:
    """aioquic's ``serve`` on 127.0.0.1 with an echo handler and a ticket store, presenting
    ``leaf`` and ``ca``: for the model tests, which hold ``Issued`` objects, not a ``Pki``."""

    def __init__(self, loop: LoopThread, leaf: Issued, ca: Issued, *, retry: bool = False) -> None:
        config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        config.certificate = leaf.cert
        config.private_key = leaf.key  # type: ignore[assignment]
        config.certificate_chain = [ca.cert]
        self.tickets: dict[bytes, AioquicTicket] = {}

        async def start() -> QuicServer:
            return await serve(
                "127.0.0.1",
                0,
                configuration=config,
                stream_handler=lambda r, w: asyncio.ensure_future(_echo(r, w)),
                session_ticket_handler=lambda t: self.tickets.__setitem__(t.ticket, t),
                session_ticket_fetcher=self.tickets.pop,
                retry=retry,
            )

        self._loop = loop
        self.server: QuicServer = loop.submit(start()).result(loop.wait)
        assert self.server._transport is not None
        self.address: tuple[str, int] = self.server._transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        self._loop.call(self.server.close)


# -- their client -------------------------------------------------------------------------------


@dataclass
class PeerClientOutcome:
    """What their client saw: the echo, tickets, its events, or why it failed."""

    reply: bytes | None = None
    error: BaseException | None = None
    tickets: list[Any] = field(default_factory=list)
    events: EventLog = field(default_factory=EventLog)
    zero_rtt_packets: int = 0


def peer_client_config(
    stack: Stack,
    pki: Pki,
    *,
    alpn: tuple[str, ...] = (ALPN,),
    trust: bytes | None = None,
    server_name: str = SERVER_NAME,
    ticket: Any = None,
    cipher_suites: Iterable[int] = (),
    certificate: str | None = "client",
) -> Any:
    """Their client's configuration: verifies our server against ``trust`` (the test CA)."""
    config = stack.configuration(
        is_client=True,
        alpn_protocols=list(alpn),
        server_name=server_name,
        cadata=pki.ca_pem if trust is None else trust,
        session_ticket=ticket,
        quic_logger=stack.quic_logger(),
    )
    if certificate is not None:
        config.load_cert_chain(str(pki.path(certificate)), str(pki.path(f"{certificate}-key")))
    if cipher_suites:
        config.cipher_suites = stack.suites(cipher_suites)
    return config


async def run_peer_client(
    stack: Stack,
    port: int,
    config: Any,
    message: bytes,
    *,
    early_data: bool = False,
    want_ticket: bool = False,
) -> PeerClientOutcome:
    """Connects, sends ``message`` on a stream, reads the echo; never raises.

    ``early_data``: write before the handshake is confirmed (``wait_connected=False``),
    so a client holding a 0-RTT-capable ticket sends it in 0-RTT packets.
    """
    outcome = PeerClientOutcome()
    try:
        async with asyncio.timeout(WAIT):
            async with stack.connect(
                "127.0.0.1",
                port,
                configuration=config,
                create_protocol=partial(stack.recorder, log=outcome.events),
                session_ticket_handler=outcome.tickets.append,
                wait_connected=not early_data,
            ) as client:
                reader, writer = await client.create_stream()
                writer.write(message)
                writer.write_eof()
                outcome.reply = await reader.read()
                while want_ticket and not outcome.tickets:  # it follows HANDSHAKE_DONE
                    await asyncio.sleep(0.01)
    except (Exception, asyncio.CancelledError) as exc:  # reported, not raised
        outcome.error = exc
    if config.quic_logger is not None:
        outcome.zero_rtt_packets = zero_rtt_packets_sent(config.quic_logger)
    return outcome


# -- our side ------------------------------------------------------------------------------------


def client_credentials(pki: Pki, *, peer_name: str = SERVER_NAME) -> Credentials:
    """X.509 with verification: our client checks the server against the test CA."""
    return api.client_credentials(cafile=pki.path("ca"), peer_name=peer_name)


def server_credentials(pki: Pki) -> Credentials:
    """Our server's certificate, and the CA it verifies client certificates against."""
    return api.server_credentials(
        certfile=pki.path("server"), keyfile=pki.path("server-key"), cafile=pki.path("ca")
    )


def echo_over(sock: ModelQuicSocket, message: bytes) -> bytes:
    """Sends ``message`` on a new stream with FIN and returns what comes back on it."""
    return streams.echo_over(sock, message, WAIT)


def echo_back(sock: ModelQuicSocket) -> bytes:
    """Our server's application: reads one stream to its FIN and sends it back."""
    return streams.echo_back(sock, WAIT)


@dataclass
class OurClientOutcome:
    result: HandshakeResult
    alpn: tuple[bytes, ...] = ()
    reply: bytes | None = None
    session_data: bytes = b""
    peer_close: ConnectionClose | None = None  # the peer's CONNECTION_CLOSE, if it sent one


def run_our_client(
    address: tuple[str, int],
    credentials: Credentials,
    *,
    alpn: tuple[str, ...] = (ALPN,),
    config: Config | None = None,
    session_ticket: bytes | None = None,
    message: bytes | None = b"hello from quichsd",
) -> OurClientOutcome:
    """connect(), the client handshake, then (if it worked) one echo; closes the socket."""
    with ModelQuicSocket.connect(
        address, alpn=alpn, config=config, session_ticket=session_ticket
    ) as sock:
        result = api.client_handshake(sock, credentials, timeout=WAIT)
        outcome = OurClientOutcome(result)
        if result.ok:
            outcome.alpn = sockopt.get_alpn(sock)
            outcome.session_data = sockopt.get_session_ticket(sock)
            if message is not None:
                outcome.reply = echo_over(sock, message)
        else:
            outcome.peer_close = _peer_close(sock)
        assert sock.io_failures == []
    return outcome


@dataclass
class OurServerOutcome:
    result: HandshakeResult
    alpn: tuple[bytes, ...] = ()
    echoed: bytes | None = None
    peer_close: ConnectionClose | None = None  # the peer's CONNECTION_CLOSE, if it sent one


def accept(
    listener: ModelQuicListener, give_up: Callable[[], str | None] = lambda: None
) -> ModelQuicSocket:
    """accept() within ``WAIT``; fails early once ``give_up`` says why nobody will come."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return listener.accept(timeout=_ACCEPT_SLICE)
        except BlockingIOError:
            why = give_up()
            if why is not None:
                raise AssertionError(f"no connection to accept: {why}") from None
            if time.monotonic() >= deadline:
                raise


def serve_one(
    listener: ModelQuicListener,
    credentials: Credentials,
    give_up: Callable[[], str | None] = lambda: None,
) -> OurServerOutcome:
    """accept(), the server handshake, then (if it worked) echo one stream; closes the socket."""
    with accept(listener, give_up) as sock:
        result = api.server_handshake(sock, credentials, timeout=WAIT)
        outcome = OurServerOutcome(result)
        if result.ok:
            outcome.alpn = sockopt.get_alpn(sock)
            outcome.echoed = echo_back(sock)
        else:
            outcome.peer_close = _peer_close(sock)
        assert sock.io_failures == []
    return outcome


def _peer_close(sock: ModelQuicSocket) -> ConnectionClose | None:
    """getsockopt(CONNECTION_CLOSE): what the peer closed with (None if it did not close)."""
    close = sockopt.get_connection_close(sock)
    return close if sock.state is SockState.CLOSED and close.errcode else None


def serve_peer_client(
    loop: LoopThread,
    stack: Stack,
    our_listener: ModelQuicListener,
    credentials: Credentials,
    config: Any,
    message: bytes = b"hello from the peer",
    *,
    early_data: bool = False,
    want_ticket: bool = False,
) -> tuple[OurServerOutcome, PeerClientOutcome]:
    """Their client connects to our listener while we accept, handshake and echo."""
    port = our_listener.address[1]
    client = loop.submit(
        run_peer_client(
            stack, port, config, message, early_data=early_data, want_ticket=want_ticket
        )
    )

    def client_gave_up() -> str | None:
        if not client.done():
            return None
        return f"their client ended first: {client.result().error!r}"

    ours = serve_one(our_listener, credentials, client_gave_up)
    return ours, client.result(WAIT + 1)


def listener(
    *, alpn: tuple[str, ...] = (ALPN,), cipher: int = 0, certificate_request: int = 0
) -> ModelQuicListener:
    """``socket(); setsockopt(ALPN); setsockopt(CONFIG); bind(); listen()``."""
    config = Config(payload_cipher_type=cipher, certificate_request=certificate_request)
    return ModelQuicListener(("127.0.0.1", 0), alpn=alpn, config=config)


# -- leaks ---------------------------------------------------------------------------------


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@contextlib.contextmanager
def no_leaks() -> Iterator[None]:
    """Fails if threads or file descriptors outlive the block (given a moment to go)."""
    threads = set(threading.enumerate())
    fds = _open_fds()
    yield
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        extra_threads = set(threading.enumerate()) - threads
        extra_fds = _open_fds() - fds
        if not extra_threads and not extra_fds:
            return
        time.sleep(0.01)
    assert not extra_threads, f"threads left running: {[t.name for t in extra_threads]}"
    assert not extra_fds, f"descriptors left open: {sorted(extra_fds)}"


@dataclass(frozen=True)
class Peer:
    """One peer stack and each way it differs from the others, by name."""

    package: str
    #: The alert its server refuses a ClientHello without a common ALPN protocol with.
    alpn_refusal_alert: int
    #: Exceptions its server raises in its own loop callbacks (known bugs, by text).
    server_loop_errors: tuple[str, ...] = ()
    #: Why its client cannot resume with our tickets (a strict xfail), if it cannot.
    client_resumption_bug: str | None = None


AIOQUIC = Peer("aioquic", alpn_refusal_alert=ALERT_NO_APPLICATION_PROTOCOL)
QH3 = Peer(
    "qh3",
    alpn_refusal_alert=ALERT_HANDSHAKE_FAILURE,
    # A ClientHello in one 1200-byte datagram (ours; aioquic's client does the same)
    # makes its native packet builder raise INTERNAL_ERROR; asyncio swallows it and the
    # handshake completes on the client's retransmission (~0.7 s later).
    server_loop_errors=("packet builder capacity exhausted",),
    client_resumption_bug=(
        "qh3 2.1.0 cannot fit a GnuTLS ticket into its 2048-byte ClientHello buffer"
    ),
)
PEERS = (AIOQUIC, QH3)


def peers(*, client_resumes: bool = False) -> list[Any]:
    """``PEERS`` as pytest parameters; with ``client_resumes``, a peer whose client
    cannot resume with our tickets is a strict expected failure (a fixed stack shows up)."""
    params = []
    for peer in PEERS:
        marks = []
        if client_resumes and peer.client_resumption_bug is not None:
            marks.append(
                pytest.mark.xfail(
                    strict=True, raises=AssertionError, reason=peer.client_resumption_bug
                )
            )
        params.append(pytest.param(peer, id=peer.package, marks=marks))
    return params


class InteropFixtures:
    """Fixtures for the interop test classes, over every peer stack (``peer``).

    ``PEER_ROLE`` says what the peer plays in a class: where it is the server, its
    known server loop errors are tolerated, nowhere else.
    """

    PEER_ROLE: str

    @pytest.fixture(scope="class", params=peers())
    @classmethod
    def peer(cls, request: pytest.FixtureRequest) -> Peer:
        peer: Peer = request.param
        return peer

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, peer: Peer) -> Stack:
        return load_stack(peer.package)

    @pytest.fixture(scope="class")
    @classmethod
    def pki(cls, tmp_path_factory: pytest.TempPathFactory) -> Pki:
        return make_pki(tmp_path_factory.mktemp("interop-pki"))

    @pytest.fixture
    def peer_loop(self, stack: Stack, peer: Peer) -> Iterator[LoopThread]:
        """The peer's event loop; the test fails if it leaves threads or descriptors behind."""
        with no_leaks():
            loop = LoopThread(stack.name)
            try:
                yield loop
            finally:
                loop.stop()
        known = peer.server_loop_errors if self.PEER_ROLE == "server" else ()
        unexpected = [e for e in loop.errors if not any(k in e for k in known)]
        assert not unexpected, f"{stack.name} raised in its event loop: {unexpected}"

    @pytest.fixture
    def peer_server(self, peer_loop: LoopThread, stack: Stack, pki: Pki) -> Iterator[PeerServer]:
        server = PeerServer(peer_loop, stack, pki)
        try:
            yield server
        finally:
            server.close()
