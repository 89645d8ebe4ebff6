# SPDX-License-Identifier: GPL-2.0-only
"""The real daemon, end to end: ``quichsd serve`` on the family model and the QUIC socket model.

Every test runs the production command line in a subprocess through
``quichsd.userspace.rig.DaemonRig``: a FamilyModel plays the kernel's handshake
family, model QUIC sockets (exported as real fds) play the consumers'
sockets, and the peers are independent QUIC stacks (aioquic, qh3) or, where
those cannot take part (PSK), the daemon's other role.  Each test ends with
the rig's invariant: one DONE per ACCEPT, nothing unanswered, no second DONE.

Statuses are the DONE wire values (positive errno).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hostile_daemon import HOSTILE_PEERNAME

from quichsd.daemon import keyring
from quichsd.daemon.identities import MUTUAL_AUTH_MARKER
from quichsd.daemon.status import query_snapshot
from quichsd.netlink.constants import AuthMode, MessageType
from quichsd.quic import sockopt
from quichsd.quic.abi import Config, TransportError
from quichsd.tls import Level
from quichsd.tls.selfsigned import Issued, issue, make_ca
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState
from tests.support import streams
from tests.support.procfs import proc_status
from tests.support.rig import DaemonExited, DaemonRig, Request, config_text, run_daemon_once

SERVER_NAME = "server.test"
ALPN = "echo"
WAIT = 15.0
#: Slack on top of a deadline for a DONE to arrive (scheduling, the 0.25 s watchdog tick).
SLACK = 1.5
#: quichsd.daemon.service.OVERRUN_GRACE: how long past its deadline a silent worker lives.
OVERRUN_GRACE = 2.0
CRYPTO_ERROR = int(TransportError.CRYPTO)
#: tests/hostile_daemon.py: ``quichsd serve`` whose workers open netlink for one peer name.
HOSTILE_DAEMON = Path(__file__).with_name("hostile_daemon.py")


# -- PKI and files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued  # server.test, issued by ca
    server_b: Issued  # server.test too, another key: what a reload switches to
    client: Issued  # client.test
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = make_ca("quichsd e2e CA")
    pki = Pki(
        ca=ca,
        server=issue(ca, (SERVER_NAME,)),
        server_b=issue(ca, (SERVER_NAME,)),
        client=issue(ca, ("client.test",)),
        dir=tmp_path_factory.mktemp("pki"),
    )
    pki.path("ca").write_bytes(ca.cert_pem)
    for name, leaf in (("server", pki.server), ("server-b", pki.server_b), ("client", pki.client)):
        pki.path(name).write_bytes(leaf.cert_pem + ca.cert_pem)  # chain: leaf + CA
        pki.path(f"{name}-key").write_bytes(leaf.key_pem)
    return pki


def standard_config(pki: Pki, server: str = "server", **settings: Any) -> str:
    """Clients trust the CA; the server presents ``server`` and checks client certificates."""
    return config_text(
        client={"x509.truststore": pki.path("ca")},
        server={
            "x509.truststore": pki.path("ca"),
            "x509.certificate": pki.path(server),
            "x509.private_key": pki.path(f"{server}-key"),
        },
        **settings,
    )


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture
def make_rig(pki: Pki) -> Iterator[Callable[..., DaemonRig]]:
    """``make_rig(**config settings)``: a started rig with the standard configuration."""
    rigs: list[DaemonRig] = []
    before = _threads()

    def make(
        config: str | None = None, *, family: dict[str, Any] | None = None, **settings: Any
    ) -> DaemonRig:
        rig = DaemonRig(**(family or {}))
        rigs.append(rig)
        settings.setdefault("status_socket", rig.status_socket)
        rig.write_config(config if config is not None else standard_config(pki, **settings))
        return rig.start()

    yield make
    for rig in rigs:
        print(f"--- daemon log ({rig.dir}) ---\n{rig.log()}")  # shown when the test failed
        rig.close()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        left = [t for t in _threads() - before if t.is_alive() and t.name != "aioquic-loop"]
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"threads outlived the test: {left}"


@pytest.fixture
def rig(make_rig: Callable[..., DaemonRig]) -> DaemonRig:
    return make_rig()


# -- independent QUIC peers (aioquic, qh3) in one asyncio loop thread ---------------------------


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(
            lambda _loop, ctx: self.errors.append(f"{ctx.get('message')}: {ctx.get('exception')!r}")
        )
        self._thread = threading.Thread(target=self.loop.run_forever, name="aioquic-loop")
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_default_executor()

        try:
            self.submit(drain()).result(WAIT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            self.loop.close()


@pytest.fixture
def aio() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


def _stack(name: str) -> tuple[Any, Any, Any]:
    """(serve, connect, QuicConfiguration) of ``aioquic`` or ``qh3`` (same shapes)."""
    asyncio_api = importlib.import_module(f"{name}.asyncio")
    configuration = importlib.import_module(f"{name}.quic.configuration")
    return asyncio_api.serve, asyncio_api.connect, configuration.QuicConfiguration


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read())
    writer.write_eof()


class PeerServer:
    """An echo server of ``stack`` on 127.0.0.1 presenting ``chain``."""

    def __init__(self, aio: LoopThread, pki: Pki, stack: str = "aioquic") -> None:
        serve, _connect, configuration = _stack(stack)
        config = configuration(is_client=False, alpn_protocols=[ALPN])
        config.load_cert_chain(str(pki.path("server")), str(pki.path("server-key")))

        async def start() -> Any:
            return await serve(
                "127.0.0.1",
                0,
                configuration=config,
                stream_handler=lambda r, w: asyncio.ensure_future(_echo(r, w)),
            )

        self._aio = aio
        self.server = aio.submit(start()).result(WAIT)
        host, port = self.server._transport.get_extra_info("sockname")[:2]
        self.address: tuple[str, int] = (str(host), int(port))

    def close(self) -> None:
        async def close() -> None:
            self.server.close()

        self._aio.submit(close()).result(WAIT)


@pytest.fixture
def peer_server(aio: LoopThread, pki: Pki) -> Iterator[PeerServer]:
    server = PeerServer(aio, pki)
    yield server
    server.close()


@dataclass
class PeerOutcome:
    reply: bytes | None = None
    server_certificate: bytes | None = None  # DER, as the peer received it
    error: BaseException | None = None


async def aioquic_client(
    port: int,
    pki: Pki,
    message: bytes = b"ping",
    *,
    certificate: str | None = None,
    timeout: float = WAIT,
) -> PeerOutcome:
    """aioquic connects, records the server's certificate, echoes ``message``; never raises."""
    _serve, connect, configuration = _stack("aioquic")
    config = configuration(
        is_client=True, alpn_protocols=[ALPN], server_name=SERVER_NAME, cadata=pki.ca.cert_pem
    )
    if certificate is not None:
        config.load_cert_chain(str(pki.path(certificate)), str(pki.path(f"{certificate}-key")))
    outcome = PeerOutcome()
    try:
        async with asyncio.timeout(timeout):
            async with connect("127.0.0.1", port, configuration=config) as client:
                peer = client._quic.tls._peer_certificate
                outcome.server_certificate = peer.public_bytes(serialization.Encoding.DER)
                reader, writer = await client.create_stream()
                writer.write(message)
                writer.write_eof()
                outcome.reply = await reader.read()
    except (Exception, asyncio.CancelledError) as exc:
        outcome.error = exc
    return outcome


class SilentPeer:
    """A UDP port on 127.0.0.1 that reads everything and answers nothing (or garbage)."""

    def __init__(self, garbage: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received = 0
        self.garbage = garbage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-peer")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.received += 1
            if self.garbage:
                # Long-header-looking junk: an Initial bit pattern, nonsense after it.
                self.sock.sendto(b"\xc3" + secrets.token_bytes(len(data) - 1), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def silent_peer() -> Iterator[SilentPeer]:
    peer = SilentPeer()
    yield peer
    peer.close()


# -- consumer-side helpers --------------------------------------------------------------------


def echo_over(sock: ModelQuicSocket, message: bytes) -> bytes:
    """The consumer uses its socket after DONE: one stream out, its echo back."""
    return streams.echo_over(sock, message, WAIT)


def serve_echo(sock: ModelQuicSocket) -> bytes:
    return streams.echo_back(sock, WAIT)


def done_within(request: Request, seconds: float) -> tuple[int, list[int], float]:
    """(status, remote_auth, seconds waited) of ``request``'s DONE."""
    start = time.monotonic()
    completion = request.handle.wait(seconds)
    return completion.status, completion.remote_auth, time.monotonic() - start


def psk_identity() -> str:
    return f"quichsd-e2e-{secrets.token_hex(6)}"


def _kernel_takes_as_asymmetric_key(der: bytes) -> bool:
    """Whether this kernel's keyring accepts ``der`` as an ``asymmetric`` key."""
    try:
        serial = keyring.add_key(
            "asymmetric", "quichsd e2e probe", der, keyring.KEY_SPEC_USER_KEYRING
        )
    except keyring.KeyringError:
        return False
    keyring.unlink_key(serial, keyring.KEY_SPEC_USER_KEYRING)
    return True


# == client requests =============================================================================


def test_client_x509_against_aioquic(rig: DaemonRig, peer_server: PeerServer, pki: Pki) -> None:
    """X.509 client, trust from [authenticate.client] x509.truststore; peer identities per
    docs/kernel-abi.md §REMOTE-AUTH."""
    request = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    status, remote_auth, _ = done_within(request, WAIT)
    assert status == 0, rig.log()
    assert request.sock.state is SockState.ESTABLISHED
    assert echo_over(request.sock, b"over the daemon's handshake") == b"over the daemon's handshake"
    # One REMOTE_AUTH per certificate the server presented (leaf, CA): the serial of an
    # "asymmetric" key holding it, or 0 when the kernel refuses the key.  This kernel has the
    # asymmetric type and its X.509 parser but no ECDSA verifier (CONFIG_CRYPTO_ECDSA unset):
    # the leaf loads (its signature is not checked), the self-signed ECDSA CA does not, since
    # the parser verifies a self-signature (ENOENT) -- so expect [serial, 0] here.
    assert len(remote_auth) == 2
    leaf_serial, ca_serial = remote_auth
    expect_leaf = _kernel_takes_as_asymmetric_key(pki.server.cert_der)
    expect_ca = _kernel_takes_as_asymmetric_key(pki.ca.cert_der)
    assert (leaf_serial != 0, ca_serial != 0) == (expect_leaf, expect_ca)
    if leaf_serial:
        assert keyring.describe_key(leaf_serial) == ("asymmetric", f"TLS x509 {SERVER_NAME}")
    rig.check_invariants()


def test_kernel_without_remote_auth(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer
) -> None:
    """A kernel whose DONE policy lacks REMOTE_AUTH (before 6.x): the start-up probe finds
    out, and DONE goes without it instead of being refused (EINVAL) and left unanswered."""
    rig = make_rig(family={"supports_remote_auth": False})
    assert "remote-auth False" in rig.wait_for_log("kernel DONE attributes")
    request = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(request, WAIT)[:2] == (0, [])
    rig.check_invariants()


def test_client_x509_against_qh3(rig: DaemonRig, aio: LoopThread, pki: Pki) -> None:
    server = PeerServer(aio, pki, stack="qh3")
    try:
        request = rig.client_request(server.address, "x509", peername=SERVER_NAME)
        status, remote_auth, _ = done_within(request, WAIT)
        assert status == 0, rig.log()
        assert len(remote_auth) == 2
        assert echo_over(request.sock, b"qh3 echo") == b"qh3 echo"
    finally:
        server.close()
    rig.check_invariants()


def test_client_anonymous(rig: DaemonRig, peer_server: PeerServer) -> None:
    """UNAUTH: no identities in DONE.  (Ours still verifies the server, unlike tlshd's.)"""
    request = rig.client_request(peer_server.address, "anon", peername=SERVER_NAME)
    status, remote_auth, _ = done_within(request, WAIT)
    assert (status, remote_auth) == (0, [])
    assert echo_over(request.sock, b"anonymous") == b"anonymous"
    rig.check_invariants()


def test_client_wrong_server_name_is_eacces(rig: DaemonRig, peer_server: PeerServer) -> None:
    request = rig.client_request(peer_server.address, "x509", peername="wrong.test")
    status, remote_auth, _ = done_within(request, WAIT)
    assert (status, remote_auth) == (errno.EACCES, [])
    assert "failed" in rig.wait_for_log(r"failed: .*status 13")
    rig.check_invariants()


# == server requests =============================================================================


def test_server_x509_from_config_files(rig: DaemonRig, aio: LoopThread, pki: Pki) -> None:
    with ModelQuicListener(alpn=[ALPN]) as listener:
        peer = aio.submit(aioquic_client(listener.address[1], pki, b"from aioquic"))
        request = rig.server_request(listener, "x509")
        status, remote_auth, _ = done_within(request, WAIT)
        assert (status, remote_auth) == (0, [])  # the client sent no certificate
        assert serve_echo(request.sock) == b"from aioquic"
        outcome = peer.result(WAIT)
    assert outcome.error is None and outcome.reply == b"from aioquic"
    assert outcome.server_certificate == pki.server.cert_der  # [authenticate.server] files
    rig.check_invariants()


def test_server_x509_from_keyring_serials(rig: DaemonRig, aio: LoopThread, pki: Pki) -> None:
    """CERTIFICATE nest serials in the ACCEPT win over the configuration files."""
    cert = rig.add_der("e2e server cert", pki.server_b.cert_der)
    key_der = pki.server_b.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    privkey = rig.add_der("e2e server key", key_der)
    with ModelQuicListener(alpn=[ALPN]) as listener:
        peer = aio.submit(aioquic_client(listener.address[1], pki))
        request = rig.server_request(listener, "x509", cert=cert, privkey=privkey)
        status, _, _ = done_within(request, WAIT)
        assert status == 0, rig.log()
        serve_echo(request.sock)
        outcome = peer.result(WAIT)
    assert outcome.error is None, outcome.error
    assert outcome.server_certificate == pki.server_b.cert_der
    rig.check_invariants()


@pytest.mark.parametrize("client_cert", [True, False], ids=["client-cert", "no-client-cert"])
def test_server_x509_mutual(rig: DaemonRig, aio: LoopThread, pki: Pki, client_cert: bool) -> None:
    """certificate_request=1: 0xFFFFFFFF per client certificate (leaf + CA), none without."""
    with ModelQuicListener(alpn=[ALPN], config=Config(certificate_request=1)) as listener:
        peer = aio.submit(
            aioquic_client(listener.address[1], pki, certificate="client" if client_cert else None)
        )
        request = rig.server_request(listener, "x509")
        status, remote_auth, _ = done_within(request, WAIT)
        assert status == 0, rig.log()
        assert remote_auth == ([MUTUAL_AUTH_MARKER] * 2 if client_cert else [])
        serve_echo(request.sock)
        assert peer.result(WAIT).error is None
    rig.check_invariants()


# == PSK (the peer is the daemon's other role: aioquic and qh3 have no external PSK) =============


def _pair(
    rig: DaemonRig, listener: ModelQuicListener, client_ids: list[int], **client: Any
) -> tuple[Request, Request]:
    client_request = rig.client_request(
        listener.address, "psk", peer_identities=client_ids, **client
    )
    server_request = rig.server_request(listener, "psk")
    return client_request, server_request


def test_psk_both_roles(rig: DaemonRig) -> None:
    identity = psk_identity()
    serial = rig.add_psk(identity, secrets.token_bytes(32))
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client, server = _pair(rig, listener, [serial])
        client_status, client_auth, _ = done_within(client, WAIT)
        server_status, server_auth, _ = done_within(server, WAIT)
        assert (client_status, server_status) == (0, 0), rig.log()
        # The server found the key by the identity in the ClientHello: its serial.
        assert server_auth == [serial]
        # The client reports the key it used, as tlshd's TCP client does (tlshd's QUIC
        # client reports none, docs/kernel-abi.md §REMOTE-AUTH).
        assert client_auth == [serial]
        echo = threading.Thread(target=serve_echo, args=(server.sock,))
        echo.start()
        assert echo_over(client.sock, b"psk") == b"psk"
        echo.join(WAIT)
    assert f"psk:{identity}" in rig.wait_for_log(f"peer psk:{identity}")
    rig.check_invariants()


def test_psk_unknown_identity_is_ekeyrejected(rig: DaemonRig) -> None:
    """The identity is the description after its last ';' (tlshd's rule): the client offers
    one no key of the server's is described as, and both sides report EKEYREJECTED."""
    identity = psk_identity()
    serial = rig.add_psk(f"only-the-client-knows;{identity}", secrets.token_bytes(32))
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client, server = _pair(rig, listener, [serial])
        server_status, _, _ = done_within(server, WAIT)
        # The consumer closes a socket whose handshake failed; the close carries the
        # agent's CRYPTO_ERROR (0x100 + unknown_psk_identity) to the client.
        rig.finish(server)
        client_status, _, waited = done_within(client, WAIT)
    assert server_status == errno.EKEYREJECTED
    assert client_status == errno.EKEYREJECTED  # the unknown_psk_identity alert
    assert waited < SLACK
    rig.check_invariants()


# == refusals before any handshake ===============================================================


def test_unknown_key_serials_are_enokey(rig: DaemonRig, peer_server: PeerServer) -> None:
    missing = 0x7FFFFFF0
    with ModelQuicListener(alpn=[ALPN]) as listener:
        # A server request naming a certificate serial the keyring does not have.
        client = ModelQuicSocket.connect(listener.address, alpn=[ALPN])
        with client:
            sockopt.send_flight(client, [(Level.INITIAL, b"\x01\x00\x00\x01\x00")])
            server = rig.server_request(listener, "x509", cert=missing, privkey=missing)
            assert done_within(server, WAIT)[0] == errno.ENOKEY
    # A PSK client whose peer identity is no key, and one without any identity.
    psk = rig.client_request(peer_server.address, "psk", peer_identities=[missing])
    no_id = rig.client_request(peer_server.address, "psk")
    assert done_within(psk, WAIT)[0] == errno.ENOKEY
    assert done_within(no_id, WAIT)[0] == errno.ENOKEY
    assert "key 0x7ffffff0" in rig.log()
    rig.check_invariants()


def test_bad_request_parameters(rig: DaemonRig, peer_server: PeerServer) -> None:
    """Message type / auth mode the daemon cannot serve: EINVAL (server UNAUTH: EIO, as tlshd)."""
    cases: dict[str, dict[str, Any]] = {
        "message type UNSPEC": dict(message_type=MessageType.UNSPEC, auth="x509"),
        "message type 7": dict(message_type=7, auth="x509"),
        "auth mode UNSPEC": dict(auth=AuthMode.UNSPEC),
        "auth mode 9": dict(auth=9),
    }
    requests = {
        name: rig.client_request(peer_server.address, peername=SERVER_NAME, **params)
        for name, params in cases.items()
    }
    statuses = {name: done_within(r, WAIT)[0] for name, r in requests.items()}
    assert statuses == dict.fromkeys(cases, errno.EINVAL)
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = ModelQuicSocket.connect(listener.address, alpn=[ALPN])
        with client:
            sockopt.send_flight(client, [(Level.INITIAL, b"\x01\x00\x00\x01\x00")])
            server = rig.server_request(listener, "anon")
            assert done_within(server, WAIT)[0] == errno.EIO
    rig.check_invariants()


# == faults during the handshake =================================================================


@pytest.mark.slow
def test_stalled_peer_times_out_at_the_accept_timeout(
    make_rig: Callable[..., DaemonRig], silent_peer: SilentPeer
) -> None:
    """ACCEPT's TIMEOUT wins over [quichsd] handshake_timeout; without it, the config's applies."""
    rig = make_rig(handshake_timeout=1.2)
    with_timeout = rig.client_request(silent_peer.address, "x509", timeout_ms=600)
    without = rig.client_request(silent_peer.address, "x509", timeout_ms=None)
    status, _, waited = done_within(with_timeout, WAIT)
    assert status == errno.ETIMEDOUT
    assert waited < 0.6 + SLACK
    status, _, waited_more = done_within(without, WAIT)
    assert status == errno.ETIMEDOUT
    assert 1.2 - 0.2 <= waited + waited_more < 1.2 + SLACK
    assert silent_peer.received > 0  # the ClientHello did go out
    rig.check_invariants()


@pytest.mark.slow
def test_frozen_worker_is_killed_past_the_deadline(
    make_rig: Callable[..., DaemonRig], silent_peer: SilentPeer, peer_server: PeerServer
) -> None:
    """A worker that cannot answer (SIGSTOP): the parent ends the request at its deadline
    plus OVERRUN_GRACE with ETIMEDOUT, kills the worker and forks another."""
    rig = make_rig()
    request = rig.client_request(silent_peer.address, "x509", timeout_ms=800)
    start = time.monotonic()
    pid = rig.worker_holding(request)
    os.kill(pid, signal.SIGSTOP)
    status, _, _ = done_within(request, WAIT)
    elapsed = time.monotonic() - start
    assert status == errno.ETIMEDOUT
    assert 0.8 + OVERRUN_GRACE - 0.3 <= elapsed < 0.8 + OVERRUN_GRACE + SLACK
    assert f"killing worker {pid}" in rig.log()
    rig.wait_workers(1, excluding=[pid])  # killed, reaped and replaced (the pool keeps one)
    later = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(later, WAIT)[0] == 0
    rig.check_invariants()


def test_worker_killed_mid_handshake(
    rig: DaemonRig, silent_peer: SilentPeer, peer_server: PeerServer
) -> None:
    """SIGKILL the worker running a handshake: DONE EIO at once; the daemon keeps serving."""
    request = rig.client_request(silent_peer.address, "x509", timeout_ms=20_000)
    pid = rig.worker_holding(request)
    time.sleep(0.2)  # the handshake is under way: the ClientHello went out
    assert silent_peer.received > 0
    os.kill(pid, signal.SIGKILL)
    status, _, waited = done_within(request, WAIT)
    assert status == errno.EIO
    assert waited < SLACK
    rig.wait_workers(1, excluding=[pid])
    later = [
        rig.client_request(peer_server.address, "x509", peername=SERVER_NAME) for _ in range(4)
    ]
    assert [done_within(r, WAIT)[0] for r in later] == [0, 0, 0, 0]
    assert "worker exited" in rig.log()
    rig.check_invariants()


# == privilege (docs/ARCHITECTURE.md, "Process model") =========================================

NO_CAPABILITIES = "0" * 16


def _proc_fds(pid: int) -> dict[int, str]:
    fds = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            fds[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return fds


def _unix_socket_links() -> set[str]:
    """Every AF_UNIX socket of this network namespace, as /proc/PID/fd links name them."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return {f"socket:[{line.split()[6]}]" for line in lines}


def assert_unprivileged(pid: int) -> None:
    """Once the worker has confined itself (a fresh one may still be starting)."""
    deadline = time.monotonic() + WAIT
    while (status := proc_status(pid))["Seccomp"] == "0" and time.monotonic() < deadline:
        time.sleep(0.01)
    sets = {key: status[key] for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    assert sets == dict.fromkeys(sets, NO_CAPABILITIES), (pid, sets)
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2"), pid


ANTI_REPLAY_LOCK = "/memfd:quichsd-anti-replay-lock (deleted)"


def _worker_fds(pid: int) -> list[str]:
    """A worker's fds past stdio, but the one libffi >= 3.4 keeps on its own shared
    object (static trampolines map it; sid's Python has it): no fd of the daemon's."""
    links = (link for fd, link in _proc_fds(pid).items() if fd > 2)
    return sorted(link for link in links if "/libffi.so" not in link)


def test_workers_hold_no_privilege(
    rig: DaemonRig, peer_server: PeerServer, silent_peer: SilentPeer
) -> None:
    """Every worker: no capability in any set, no_new_privs, a seccomp filter (mode 2); and
    besides stdio only its channel and the sockets of the requests it holds -- none of the
    daemon's (netlink, status socket, the other workers' channels).  Requests still succeed."""
    daemon_sockets = {link for link in _proc_fds(rig.pid).values() if link.startswith("socket:")}
    workers = rig.wait_workers(1)  # one at idle: the pool grows with load (pool.py)
    for pid in workers:
        assert_unprivileged(pid)
    unix = _unix_socket_links()
    for pid in workers:
        own = _worker_fds(pid)
        # the daemon-wide 0-RTT anti-replay store's lock (docs/ARCHITECTURE.md), its
        # channel and its event loop's (an epoll fd and its self-pipe, a socketpair)
        assert own[0] == ANTI_REPLAY_LOCK and own[1] == "anon_inode:[eventpoll]", own
        assert len(own) == 5, own
        assert set(own[2:]) <= unix, own  # AF_UNIX all: no netlink, no IP socket
        assert not daemon_sockets & set(own)
    held = rig.client_request(silent_peer.address, "x509", timeout_ms=1_000)
    holder = rig.worker_holding(held)
    assert len(_worker_fds(holder)) == 6  # and the request's socket
    requests = [
        rig.client_request(peer_server.address, "x509", peername=SERVER_NAME) for _ in range(4)
    ]
    assert [done_within(r, WAIT)[0] for r in requests] == [0, 0, 0, 0]
    assert done_within(held, WAIT)[0] == errno.ETIMEDOUT
    assert sorted(rig.worker_pids()) == sorted(workers)  # the same workers served them
    rig.check_invariants()


def test_parent_and_fork_server_keep_one_capability_each(rig: DaemonRig) -> None:
    """The parent keeps CAP_NET_ADMIN (ACCEPT, DONE), the fork server CAP_SETPCAP (for the
    workers to empty their bounding sets), each in every set; neither a thing more."""
    forkserver = rig.forkserver_pid()
    for pid, name, capability in ((rig.pid, None, 12), (forkserver, "quichsd-forksrv", 8)):
        status = proc_status(pid)
        if name:
            assert status["Name"] == name
        for key in ("CapPrm", "CapEff", "CapBnd"):
            assert int(status[key], 16) == 1 << capability, (pid, key, status[key])
        assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0


def test_worker_opening_netlink_is_killed(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer, silent_peer: SilentPeer
) -> None:
    """A worker that tries to open a netlink socket (tests/hostile_daemon.py plays a peer
    that took it over) is killed by its seccomp filter (SIGSYS); every request it held is
    answered EIO at once, the kill is logged, and a new worker serves the next request."""
    rig = make_rig(workers=1, family={"entry": (str(HOSTILE_DAEMON),)})
    held = rig.client_request(silent_peer.address, "x509", timeout_ms=20_000)
    pid = rig.worker_holding(held)
    hostile = rig.client_request(peer_server.address, "x509", peername=HOSTILE_PEERNAME)
    status, _, waited = done_within(hostile, WAIT)
    assert status == errno.EIO, rig.log()
    assert waited < SLACK
    assert done_within(held, SLACK)[0] == errno.EIO  # the worker's other request
    rig.wait_for_log(rf"worker {pid} killed by SIGSYS \(a system call outside its seccomp")
    (replacement,) = rig.wait_workers(1, excluding=[pid])
    assert_unprivileged(replacement)
    later = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(later, WAIT)[0] == 0
    rig.check_invariants()


def test_corrupt_client_hello(rig: DaemonRig) -> None:
    """A QUIC peer whose Initial CRYPTO data is a mangled ClientHello: the server fails with
    EACCES and closes with CRYPTO_ERROR carrying a TLS alert."""
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = ModelQuicSocket.connect(listener.address, alpn=[ALPN])
        with client:
            body = secrets.token_bytes(60)
            sockopt.send_flight(client, [(Level.INITIAL, b"\x01\x00\x00\x3c" + body)])
            server = rig.server_request(listener, "x509")
            status, _, _ = done_within(server, WAIT)
            assert status == errno.EACCES
            rig.finish(server)  # the consumer closes the failed socket: the close goes out
            deadline = time.monotonic() + WAIT
            while client.state is not SockState.CLOSED and time.monotonic() < deadline:
                time.sleep(0.02)
            close = sockopt.get_connection_close(client)
            assert CRYPTO_ERROR <= close.errcode <= CRYPTO_ERROR + 0xFF, close
    rig.check_invariants()


def test_corrupt_server_hello(rig: DaemonRig) -> None:
    """The client's peer answers its ClientHello with a mangled ServerHello: EACCES."""
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = rig.client_request(listener.address, "x509", peername=SERVER_NAME)
        with listener.accept(timeout=WAIT) as server:
            server.settimeout(WAIT)
            level, hello = sockopt.recv_handshake(server)
            assert level == Level.INITIAL and hello[0] == 1  # a ClientHello
            body = secrets.token_bytes(40)
            sockopt.send_flight(server, [(Level.INITIAL, b"\x02\x00\x00\x28" + body)])
            status, _, _ = done_within(client, WAIT)
    assert status == errno.EACCES
    rig.check_invariants()


@pytest.mark.slow
def test_raw_garbage_datagrams(make_rig: Callable[..., DaemonRig]) -> None:
    """UDP junk is not QUIC the socket can open: it is dropped, and the request times out."""
    rig = make_rig()
    peer = SilentPeer(garbage=True)
    try:
        request = rig.client_request(peer.address, "x509", timeout_ms=700)
        status, _, waited = done_within(request, WAIT)
    finally:
        peer.close()
    assert status == errno.ETIMEDOUT
    assert waited < 0.7 + SLACK
    assert request.sock.io_failures == []
    rig.check_invariants()


# == load, reload, shutdown ==================================================================


@pytest.mark.slow
def test_burst_of_500(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer, record_property: Any
) -> None:
    """500 client requests to one aioquic server, in bursts of 100 submitted back to back
    (resubmitted on EAGAIN: the family holds at most 50 pending): one DONE 0 each."""
    rig = make_rig(loglevel=0)
    total, batch = 500, 100
    start = time.monotonic()
    for _ in range(total // batch):
        requests = rig.client_requests(
            peer_server.address, batch, "x509", peername=SERVER_NAME, retry_for=WAIT
        )
        for request in requests:
            assert request.handle.wait(WAIT).status == 0
            rig.finish(request)
    elapsed = time.monotonic() - start
    counts = rig.check_invariants()
    assert counts.statuses == {0: total}
    assert counts.accepts == counts.dones == total
    rate = total / elapsed
    record_property("burst_rate", f"{rate:.1f}/s")
    record_property("eagain_retries", rig.eagain_retries)
    print(
        f"\nburst: {total} handshakes in {elapsed:.2f} s = {rate:.1f}/s, "
        f"{rig.eagain_retries} EAGAIN resubmissions"
    )
    assert elapsed < 30.0


@pytest.mark.slow
def test_reload_mid_burst(make_rig: Callable[..., DaemonRig], aio: LoopThread, pki: Pki) -> None:
    """SIGHUP with requests in flight: they finish with the configuration they were accepted
    under (server certificate A), even when a worker runs them after the reload; requests
    accepted after it get certificate B.  All complete with status 0."""
    rig = make_rig()
    batch = 15
    with ModelQuicListener(alpn=[ALPN], backlog=64) as listener:
        port = listener.address[1]

        def serve_batch() -> tuple[list[Request], list[Future[Any]]]:
            peers = [aio.submit(aioquic_client(port, pki, b"%d" % i)) for i in range(batch)]
            requests = [rig.server_request(listener, "x509") for _ in range(batch)]
            return requests, peers

        workers = rig.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # accepted requests queue up in the workers' channels
        try:
            first, first_peers = serve_batch()
            deadline = time.monotonic() + WAIT
            while rig.family.accepts < batch and time.monotonic() < deadline:
                time.sleep(0.01)
            assert rig.family.accepts == batch
            rig.write_config(
                standard_config(pki, server="server-b", status_socket=rig.status_socket)
            )
            rig.reload()
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        second, second_peers = serve_batch()
        for request in first + second:
            assert request.handle.wait(WAIT).status == 0, rig.log()
            serve_echo(request.sock)
        first_certs = {f.result(WAIT).server_certificate for f in first_peers}
        second_certs = {f.result(WAIT).server_certificate for f in second_peers}
    assert first_certs == {pki.server.cert_der}
    assert second_certs == {pki.server_b.cert_der}
    counts = rig.check_invariants()
    assert counts.statuses == {0: 2 * batch}


def test_reload_with_a_broken_config_keeps_the_old_one(
    rig: DaemonRig, peer_server: PeerServer
) -> None:
    rig.write_config("[quichsd]\nworkers=2\nshutdown_grace=-1\n")
    rig.reload(wait=False)
    text = rig.wait_for_log("reload failed")
    assert f"{rig.config_path}:3: [quichsd] shutdown_grace: must be a positive" in text
    request = rig.client_request(peer_server.address, "x509", peername=SERVER_NAME)
    assert done_within(request, WAIT)[0] == 0  # still the old trust store
    assert rig.running()
    rig.check_invariants()


def test_changed_certificate_file_counts_without_reload(
    make_rig: Callable[..., DaemonRig], aio: LoopThread, pki: Pki
) -> None:
    """As tlshd reads its files at handshake time, new contents under the same path (a
    renewed certificate) are used by the next handshake; only new paths need a reload."""
    probe = DaemonRig()  # only for its directory: files the test rewrites
    try:
        chain = probe.write_file("live.pem", pki.path("server").read_bytes())
        key = probe.write_file("live-key.pem", pki.path("server-key").read_bytes())
        config = config_text(
            client={"x509.truststore": pki.path("ca")},
            server={"x509.certificate": chain, "x509.private_key": key},
        )
        rig = make_rig(config)
        seen = []
        with ModelQuicListener(alpn=[ALPN]) as listener:
            for contents in ("server", "server-b"):
                chain.write_bytes(pki.path(contents).read_bytes())
                key.write_bytes(pki.path(f"{contents}-key").read_bytes())
                peer = aio.submit(aioquic_client(listener.address[1], pki))
                request = rig.server_request(listener, "x509")
                assert done_within(request, WAIT)[0] == 0, rig.log()
                serve_echo(request.sock)
                seen.append(peer.result(WAIT).server_certificate)
        assert seen == [pki.server.cert_der, pki.server_b.cert_der]
        rig.check_invariants()
    finally:
        probe.close()


@pytest.mark.slow
def test_worker_recycling_under_load(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer
) -> None:
    """worker_recycle=3: workers retire all the time under a burst; every request still
    gets status 0 and the pool stays bounded (a retiring worker is replaced when needed)."""
    rig = make_rig(worker_recycle=3, extra="worker_idle_timeout=0.5\n")
    for _ in range(3):
        for request in rig.client_requests(peer_server.address, 40, "x509", peername=SERVER_NAME):
            assert request.handle.wait(WAIT).status == 0, rig.log()[-3000:]
            rig.finish(request)
        # Two, plus retiring ones still finishing or not yet reaped: bounded, never growing.
        assert len(rig.worker_pids()) <= 4
    rig.wait_workers(1)  # back to one once idle
    counts = rig.check_invariants()
    assert counts.statuses == {0: 120}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["daemon", "group"])
def test_sigterm_mid_burst(
    make_rig: Callable[..., DaemonRig],
    peer_server: PeerServer,
    silent_peer: SilentPeer,
    target: str,
) -> None:
    """SIGTERM while requests flow: no new ACCEPTs; those in flight finish (0), one that
    cannot (a stalled peer) gets ETIMEDOUT after shutdown_grace; exit code 0; none
    unanswered.  Requests never accepted stay the kernel's (the consumer cancels them).

    ``group``: SIGTERM reaches the workers too, as from systemd (KillMode=control-group,
    the default); they leave their ending to the parent."""
    grace = 1.0
    rig = make_rig(shutdown_grace=grace)
    stalled = rig.client_request(silent_peer.address, "x509", timeout_ms=30_000)
    rig.worker_holding(stalled)
    submitted: list[Request] = []
    refused: list[int] = []
    stop = threading.Event()

    def submit_forever() -> None:
        while not stop.is_set():
            try:
                submitted.append(
                    rig.client_request(
                        peer_server.address, "x509", peername=SERVER_NAME, retry_for=0.5
                    )
                )
            except OSError as exc:
                # EAGAIN: the daemon stopped ACCEPTing, 50 requests wait; ESRCH: it left.
                refused.append(exc.errno or 0)
                return

    submitter = threading.Thread(target=submit_forever)
    submitter.start()
    try:
        deadline = time.monotonic() + WAIT
        while sum(r.handle.done for r in submitted) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = rig.worker_pids()
        assert not stalled.handle.done
        busy = [r for r in submitted if r.handle.accepted_by is not None and not r.handle.done]
        sent = time.monotonic()
        code = rig.stop(group=target == "group")
        took = time.monotonic() - sent
    finally:
        stop.set()
        submitter.join(WAIT)
    assert code == 0, rig.log()
    assert grace - 0.2 <= took < grace + 3 * SLACK
    assert stalled.handle.wait(0).status == errno.ETIMEDOUT
    assert "daemon shutting down" in rig.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    accepted = [r for r in submitted if r.handle.accepted_by is not None]
    never = [r for r in submitted if r.handle.accepted_by is None]
    assert {r.handle.wait(0).status for r in accepted} <= {0, errno.ETIMEDOUT}
    for request in never:
        request.handle.cancel()  # the consumer's tls_handshake_cancel()
    counts = rig.check_invariants(allow_cancelled=True)
    assert counts.accepts == counts.dones == len(accepted) + 1
    print(
        f"\nSIGTERM to the {target}: {len(busy)} in flight besides the stalled one, "
        f"statuses {counts.statuses}, {len(never)} never accepted (cancelled), "
        f"submitter ended with {refused}, exit after {took:.2f} s"
    )
    assert refused in ([], [errno.EAGAIN], [errno.ESRCH])


# == the pool follows the load (daemon/pool.py) ===============================================


def test_pool_grows_with_load_and_shrinks_when_idle(
    make_rig: Callable[..., DaemonRig], silent_peer: SilentPeer
) -> None:
    """handshakes_per_worker=2: a second worker is forked as soon as the first holds one
    handshake (half of 2), a third once both do, never more than workers=3; after
    worker_idle_timeout without a handshake the pool is back to one.  ``quichsd status``
    (its JSON) counts the workers each time."""
    rig = make_rig(workers=3, extra="handshakes_per_worker=2\nworker_idle_timeout=1\n")
    rig.wait_workers(1)
    held = [rig.client_request(silent_peer.address, "x509", timeout_ms=2_500) for _ in range(6)]
    rig.wait_workers(3)
    holders = {rig.worker_holding(request) for request in held}
    assert len(holders) == 3  # two handshakes each
    pool = query_snapshot(rig.status_socket)["pool"]
    assert (pool["workers"], pool["size"], pool["in_flight"]) == (3, 3, 6)
    assert [done_within(r, WAIT)[0] for r in held] == [errno.ETIMEDOUT] * 6
    assert len(rig.worker_pids()) == 3  # not idle long enough yet
    rig.wait_workers(1, timeout=WAIT)
    pool = query_snapshot(rig.status_socket)["pool"]
    assert (pool["workers"], pool["shrunk"], pool["deaths"]) == (1, 2, 0)
    rig.check_invariants()


@pytest.mark.slow
def test_requests_around_shrinks_are_all_answered(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer
) -> None:
    """One handshake per worker and a 0.2 s idle timeout: bursts separated by pauses
    around that timeout make the pool fork and retire workers while requests come and go.
    Every request succeeds, one DONE each, and no worker died."""
    rig = make_rig(workers=4, extra="handshakes_per_worker=1\nworker_idle_timeout=0.2\n")
    for round_number in range(8):
        requests = rig.client_requests(peer_server.address, 8, "x509", peername=SERVER_NAME)
        assert [r.handle.wait(WAIT).status for r in requests] == [0] * 8, rig.log()[-3000:]
        for request in requests:
            rig.finish(request)
        time.sleep(0.1 + 0.1 * (round_number % 4))
    pool = query_snapshot(rig.status_socket)["pool"]
    assert pool["shrunk"] > 0 and pool["spawned"] > 4 and pool["deaths"] == 0, pool
    counts = rig.check_invariants()
    assert counts.statuses == {0: 64}


def test_fork_server_killed_mid_flight(
    make_rig: Callable[..., DaemonRig], peer_server: PeerServer, silent_peer: SilentPeer
) -> None:
    """SIGKILL to the fork server with requests in flight.  The parent cannot fork a clean
    one any more (it holds the netlink socket, the journal, its loop), so it stops as on
    SIGTERM: the workers it has finish what they hold, every ACCEPTed request gets exactly
    one DONE; then it exits 1 with one line saying why, which systemd's Restart=on-failure
    (systemd/quichsd.service) answers with a fresh daemon."""
    rig = make_rig(shutdown_grace=1.0)
    stalled = rig.client_request(silent_peer.address, "x509", timeout_ms=30_000)
    rig.worker_holding(stalled)
    flowing = rig.client_requests(peer_server.address, 10, "x509", peername=SERVER_NAME)
    forkserver = rig.forkserver_pid()
    os.kill(forkserver, signal.SIGKILL)
    assert rig.wait_exit(WAIT) == 1, rig.log()
    assert stalled.handle.wait(0).status == errno.ETIMEDOUT
    accepted = [r for r in flowing if r.handle.accepted_by is not None]
    assert {r.handle.wait(0).status for r in accepted} <= {0, errno.ETIMEDOUT}
    for request in flowing:
        if request.handle.accepted_by is None:
            request.handle.cancel()  # the kernel's to keep: the consumer cancels it
    counts = rig.check_invariants(allow_cancelled=True)
    assert counts.accepts == counts.dones == len(accepted) + 1
    errors = [line for line in rig.log().splitlines() if line.startswith("quichsd: ")]
    assert errors == [
        f"quichsd: the fork server exited (pid {forkserver}, killed by SIGKILL): "
        "no worker can be forked"
    ], rig.log()


# == start-up failures =======================================================================


def test_bad_config_file_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.conf"
    config.write_text("[debug]\nloglevel=0\n[quichsd]\nworkers=two\n")
    code, stderr = run_daemon_once(config, str(tmp_path / "no-family.sock"))
    assert code != 0
    assert f"{config}:4: [quichsd] workers: 'two' is not an integer" in stderr
    config.write_text("[authenticate.server]\nx509.certificate\n")
    code, stderr = run_daemon_once(config, str(tmp_path / "no-family.sock"))
    assert code != 0 and f"{config}:2: expected 'key=value'" in stderr
    # A NUL byte in the status socket's path: refused by name, not a traceback at bind().
    config.write_bytes(b"[quichsd]\nshutdown_grace=1\nstatus_socket=/run/q\0s\n")
    code, stderr = run_daemon_once(config, str(tmp_path / "no-family.sock"))
    assert code != 0 and "Traceback" not in stderr
    assert f"{config}:3: [quichsd] status_socket: contains a NUL byte" in stderr


def test_no_handshake_family(pki: Pki) -> None:
    rig = DaemonRig(standard_config(pki), family_present=False)
    with pytest.raises(DaemonExited) as info:
        rig.start()
    assert info.value.code == 1
    assert "kernel handshake service is not available" in info.value.log
    assert rig.family.accepts == 0
