# SPDX-License-Identifier: GPL-2.0-only
"""A model QUIC socket served over a real fd (``quichsd.userspace.remote``), used elsewhere.

The agents here are forked processes that receive the exported fd by
SCM_RIGHTS, as daemon workers do.  They are forked while the test process
has no other thread (before the aioquic loop and the models' I/O threads
start), so nothing in them can inherit a lock held by a thread that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from interop_support import AioquicServer, LoopThread

from quichsd import api
from quichsd.quic import sockopt
from quichsd.quic.abi import (
    MSG_DONTWAIT,
    MSG_EOR,
    MSG_NOSIGNAL,
    MSG_QUIC_STREAM_FIN,
    QUIC_STREAM_INFO,
    RECV_ANCBUF_SIZE,
    SOL_QUIC,
    Config,
    SockOpt,
    StreamInfo,
    handshake_cmsg,
)
from quichsd.quic.driver import Credentials
from quichsd.tls import AuthMode, CertificateCredentials, Level, SendHandshake
from quichsd.tls.selfsigned import Issued
from quichsd.userspace import ModelQuicListener, ModelQuicSocket, SockState
from quichsd.userspace.remote import (
    ExportedSocket,
    RemoteQuicSocket,
    export_socket,
    is_remote_model_socket,
    open_remote_or_kernel,
    transport_of_remote_or_kernel,
)
from tests.support import streams

SERVER_NAME = "server.test"
ALPN = b"echo"
DEADLINE = 10.0
#: A handshake whose wakeup was lost waits for its deadline; these finish in well under it.
HANDSHAKE_TIMEOUT = 8.0
QUICK = 4.0


# -- leaks ----------------------------------------------------------------------------------


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """No thread (serving, model I/O) and no fd outlives the test."""
    threads = threading.active_count()
    fds = _open_fds()
    yield
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if threading.active_count() <= threads and _open_fds() <= fds:
            break
        time.sleep(0.01)
    assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
    leaked = {fd: _describe(fd) for fd in _open_fds() - fds}
    assert not leaked, leaked


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


# -- agents in forked processes ------------------------------------------------------------


@dataclass
class Context:
    """What a forked agent knows: the credentials, from the session's test PKI."""

    client: Credentials
    server: Credentials


Job = Callable[[dict[str, Any], list[int], Context], dict[str, Any]]


class Agent:
    """A forked process running jobs on fds it receives by SCM_RIGHTS (like a daemon worker)."""

    def __init__(self, context: Context) -> None:
        assert threading.active_count() == 1, "fork before any other thread starts"
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                keep = child.fileno()  # like the daemon's workers: nothing else inherited
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                code = _agent_loop(child, context)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        child.close()
        self.pid = pid
        self.channel = parent

    def submit(self, job: str, fds: Sequence[int] = (), **args: Any) -> None:
        message = json.dumps({"job": job, **args}).encode()
        socket.send_fds(self.channel, [message], list(fds))

    def result(self, timeout: float = DEADLINE * 2) -> dict[str, Any]:
        ready, _, _ = select.select([self.channel], [], [], timeout)
        assert ready, "the agent did not answer"
        data = self.channel.recv(1 << 20)
        assert data, "the agent died"
        reply: dict[str, Any] = json.loads(data)
        if "traceback" in reply:
            raise AssertionError("in the agent:\n" + reply["traceback"])
        return reply

    def run(self, job: str, fds: Sequence[int] = (), **args: Any) -> dict[str, Any]:
        self.submit(job, fds, **args)
        return self.result()

    def close(self) -> int:
        self.channel.close()
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("the agent did not exit")


def _agent_loop(channel: socket.socket, context: Context) -> int:  # pragma: no cover - child
    while True:
        data, fds, _flags, _addr = socket.recv_fds(channel, 1 << 16, 4)
        if not data:
            return 0
        request = json.loads(data)
        try:
            reply = JOBS[request.pop("job")](request, fds, context)
        except BaseException:
            reply = {"traceback": traceback.format_exc()}
        finally:
            for fd in fds:  # jobs take what they use; the rest is closed here
                with contextlib.suppress(OSError):
                    os.close(fd)
        channel.send(json.dumps(reply).encode())


def _take(fds: list[int]) -> RemoteQuicSocket:
    fd = fds.pop(0)
    try:
        return RemoteQuicSocket(fd)
    except BaseException:
        os.close(fd)
        raise


def _job_handshake(args: dict[str, Any], fds: list[int], ctx: Context) -> dict[str, Any]:
    """api.client_handshake / server_handshake (blocking or asyncio) on a RemoteQuicSocket."""
    client = args["role"] == "client"
    creds = ctx.client if client else ctx.server
    with _take(fds) as sock:
        if args["mode"] == "blocking":
            run = api.client_handshake if client else api.server_handshake
            result = run(sock, creds, HANDSHAKE_TIMEOUT)
        else:
            arun = api.client_handshake_async if client else api.server_handshake_async
            result = asyncio.run(arun(sock, creds, HANDSHAKE_TIMEOUT))
        done = result.complete
        return {
            "status": result.status,
            "reason": result.reason,
            "alpn": done.alpn.decode() if done and done.alpn else None,
            "cipher": done.cipher if done else 0,
            "resumed": bool(done and done.resumed),
            "ticket_stored": result.ticket_stored,
            "duration": result.duration,
            "peer": list(sock.getpeername()),
        }


def _job_calls(args: dict[str, Any], fds: list[int], ctx: Context) -> dict[str, Any]:
    with _take(fds) as sock:
        return {"calls": _calls(sock)}


def _job_recv(args: dict[str, Any], fds: list[int], ctx: Context) -> dict[str, Any]:
    """One blocking recvmsg (no MSG_DONTWAIT), with the socket's timeout set to ``timeout``."""
    with _take(fds) as sock:
        sock.settimeout(args["timeout"])
        start = time.monotonic()
        try:
            data, cmsgs, flags, _ = sock.recvmsg(65536, RECV_ANCBUF_SIZE, 0)
        except OSError as exc:
            return {"error": type(exc).__name__, "errno": exc.errno, "elapsed": _since(start)}
        return {
            "data": data.hex(),
            "cmsgs": [[level, kind, payload.hex()] for level, kind, payload in cmsgs],
            "flags": flags,
            "elapsed": _since(start),
        }


def _since(start: float) -> float:
    return time.monotonic() - start


JOBS: dict[str, Job] = {"handshake": _job_handshake, "calls": _job_calls, "recv": _job_recv}


@pytest.fixture(scope="session")
def context(trust_creds: CertificateCredentials, server_creds: CertificateCredentials) -> Context:
    return Context(
        client=Credentials(AuthMode.UNAUTH, certificates=trust_creds, peer_name=SERVER_NAME),
        server=Credentials(AuthMode.X509, certificates=server_creds),
    )


@pytest.fixture
def agent(no_leaks: None, context: Context) -> Iterator[Agent]:
    """Forked before ``aio`` (list it first): the test process has one thread then."""
    forked = Agent(context)
    try:
        yield forked
    finally:
        assert forked.close() == 0


@pytest.fixture
def agents(no_leaks: None, context: Context) -> Iterator[tuple[Agent, Agent]]:
    pair = (Agent(context), Agent(context))
    try:
        yield pair
    finally:
        assert [a.close() for a in pair] == [0, 0]


# -- aioquic in a thread ---------------------------------------------------------------------


@pytest.fixture
def aio() -> Iterator[LoopThread]:
    loop = LoopThread("aioquic", wait=DEADLINE)
    yield loop
    loop.stop()


@pytest.fixture
def aioquic_server(aio: LoopThread, server_leaf: Issued, ca: Issued) -> Iterator[AioquicServer]:
    server = AioquicServer(aio, server_leaf, ca)
    yield server
    server.close()


async def _aioquic_echo_client(port: int, ca: Issued, message: bytes) -> bytes:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN.decode()], server_name=SERVER_NAME, cadata=ca.cert_pem
    )
    async with connect("127.0.0.1", port, configuration=config) as client:
        assert isinstance(client, QuicConnectionProtocol)
        reader, writer = await client.create_stream()
        writer.write(message)
        writer.write_eof()
        return await reader.read()


def _echo_over(sock: ModelQuicSocket, message: bytes) -> bytes:
    """The consumer's use of its socket after the agent's handshake: one echoed stream."""
    return streams.echo_over(sock, message, DEADLINE)


def _serve_echo(sock: ModelQuicSocket) -> None:
    streams.echo_back(sock, DEADLINE)


# -- the same calls on the model and through the fd -------------------------------------------

Outcome = list[Any]


def _outcome(name: str, call: Callable[[], Any]) -> Outcome:
    try:
        value = call()
    except OSError as exc:
        return [name, type(exc).__name__, exc.errno, str(exc)]
    if isinstance(value, bytes):
        value = value.hex()
    elif isinstance(value, tuple):
        value = [v.hex() if isinstance(v, bytes) else v for v in value]
    return [name, "ok", None, value]


def _calls(sock: Any) -> list[Outcome]:
    """Raw socket calls on a connected client whose peer has sent nothing (and its ALPN set)."""
    quic = SOL_QUIC
    hs = handshake_cmsg(Level.HANDSHAKE)
    initial = handshake_cmsg(Level.INITIAL)
    return [
        _outcome("recvmsg dontwait", lambda: sock.recvmsg(4096, 64, MSG_DONTWAIT)[:3]),
        _outcome("unknown option", lambda: sock.getsockopt(quic, 9999, 16)),
        _outcome("ALPN", lambda: sock.getsockopt(quic, SockOpt.ALPN, 256)),
        _outcome("ALPN short buffer", lambda: sock.getsockopt(quic, SockOpt.ALPN, 1)),
        _outcome("KEY_UPDATE early", lambda: sock.setsockopt(quic, SockOpt.KEY_UPDATE, b"\0" * 4)),
        _outcome("TOKEN", lambda: sock.getsockopt(quic, SockOpt.TOKEN, 256)),
        _outcome("CONFIG", lambda: sock.getsockopt(quic, SockOpt.CONFIG, 256)),
        _outcome("CONFIG short set", lambda: sock.setsockopt(quic, SockOpt.CONFIG, b"\1")),
        _outcome("TRANSPORT_PARAM remote", lambda: sockopt.get_transport_param(sock, True).pack()),
        _outcome("TRANSPORT_PARAM_EXT size", lambda: len(sockopt.get_transport_param_ext(sock))),
        _outcome("send without key", lambda: sock.sendmsg([b"x"], hs, MSG_NOSIGNAL)),
        _outcome("send bad flags", lambda: sock.sendmsg([b"x"], initial, 0x1)),
        _outcome("send empty", lambda: sock.sendmsg([b""], initial, 0)),
        _outcome("stream before handshake", lambda: sock.sendmsg([b"x"], [], 0)),
        _outcome("getpeername", lambda: tuple(sock.getpeername())),
    ]


def _model_calls(sock: ModelQuicSocket) -> list[Outcome]:
    class View:
        """The model with a socket's getpeername."""

        def __getattr__(self, name: str) -> Any:
            return getattr(sock, name)

        def getpeername(self) -> tuple[str, int]:
            assert sock.peer_address is not None
            return sock.peer_address

    return _calls(View())


# -- tests: protocol and errno -------------------------------------------------------------------


def test_calls_through_a_child_process_match_the_model(agent: Agent) -> None:
    """Every result and error (class, errno, text) as the model gives it, seen from a worker."""
    with ModelQuicListener(alpn=[ALPN]) as listener:
        port = listener.address[1]
        twins = [ModelQuicSocket.connect(listener.address, alpn=[ALPN]) for _ in range(2)]
        try:
            exported = export_socket(twins[0])
            with exported:
                remote = agent.run("calls", [exported.fileno()])["calls"]
            assert exported.wait_stopped(DEADLINE)
            assert exported.server_failures == []
            direct = _model_calls(twins[1])
        finally:
            for sock in twins:
                sock.close()
    assert remote == direct
    outcomes = {name: (kind, err) for name, kind, err, _ in remote}
    assert outcomes["recvmsg dontwait"] == ("BlockingIOError", errno.EAGAIN)
    assert outcomes["unknown option"] == ("OSError", errno.ENOPROTOOPT)
    assert outcomes["ALPN"] == ("ok", None)
    assert outcomes["KEY_UPDATE early"] == ("BrokenPipeError", errno.EPIPE)
    assert outcomes["send without key"][1] == errno.EINVAL
    assert outcomes["send bad flags"][1] == errno.EINVAL
    assert outcomes["send empty"][1] == errno.EMSGSIZE
    assert [v for name, _, _, v in remote if name == "getpeername"] == [["127.0.0.1", port]]


def test_options_set_remotely_land_on_the_model(no_leaks: None) -> None:
    sock = ModelQuicSocket.client(server_name=SERVER_NAME)
    try:
        with export_socket(sock) as exported:
            remote = RemoteQuicSocket(os.dup(exported.fileno()))
            with remote:
                sockopt.set_alpn(remote, [b"h3", ALPN])
                sockopt.set_config(remote, Config(receive_session_ticket=3))
                sockopt.set_session_ticket(remote, b"t" * 100)
                big = sockopt.get_session_ticket(remote)  # a 4096-byte buffer
                assert big == b"t" * 100
                assert sockopt.get_alpn(sock) == (b"h3", ALPN)
                assert sockopt.get_config(sock).receive_session_ticket == 3
                assert remote.getsockname() == ("0.0.0.0", 0)
                with pytest.raises(OSError) as info:
                    remote.getpeername()  # not connected
                assert info.value.errno == errno.ENOTCONN
                with pytest.raises(OSError) as info:
                    remote.recvmsg(100, 100, MSG_DONTWAIT)  # the model: closed, ENOTCONN
                assert info.value.errno == errno.ENOTCONN
                with pytest.raises(sockopt.QuicSocketError) as qinfo:
                    sockopt.set_alpn(remote, [b"x" * 200])
                assert qinfo.value.errno == errno.EINVAL
            assert remote.fileno() == -1
            with pytest.raises(OSError) as info:
                remote.getsockopt(SOL_QUIC, SockOpt.ALPN, 256)
            assert info.value.errno == errno.EBADF
            # The agent's close is not the consumer's: the model socket still works.
            assert sockopt.get_alpn(sock) == (b"h3", ALPN)
            assert exported.serving
        assert exported.wait_stopped(DEADLINE)
        assert exported.server_failures == []
    finally:
        sock.close()


def test_model_closed_by_its_owner_reads_ebadf(no_leaks: None) -> None:
    sock = ModelQuicSocket.client()
    with export_socket(sock) as exported, RemoteQuicSocket(os.dup(exported.fileno())) as remote:
        sock.close()
        poller = select.poll()
        poller.register(remote.fileno(), select.POLLIN)
        assert poller.poll(QUICK * 1000), "closing the model must wake the agent"
        with pytest.raises(OSError) as info:
            remote.recvmsg(100, 100, MSG_DONTWAIT)
        assert info.value.errno == errno.EBADF


def test_stopped_server_is_enotconn(no_leaks: None) -> None:
    sock = ModelQuicSocket.client()
    try:
        exported = export_socket(sock)
        with exported, RemoteQuicSocket(os.dup(exported.fileno())) as remote:
            assert exported.stop_serving()
            assert not exported.serving
            poller = select.poll()
            poller.register(remote.fileno(), select.POLLIN)
            assert poller.poll(0), "a dead server must wake the agent (POLLHUP)"
            for call in (
                lambda: remote.recvmsg(100, 100, MSG_DONTWAIT),
                lambda: remote.recvmsg(100, 100, 0),
                lambda: remote.getsockopt(SOL_QUIC, SockOpt.ALPN, 256),
            ):
                with pytest.raises(OSError) as info:
                    call()
                assert info.value.errno == errno.ENOTCONN
        assert sockopt.get_alpn(sock) == ()
    finally:
        sock.close()


def test_probe_and_open(no_leaks: None) -> None:
    sock = ModelQuicSocket.client()
    plain = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    read_end, write_end = os.pipe()
    try:
        with export_socket(sock) as exported:
            assert is_remote_model_socket(exported.fileno())
            assert not is_remote_model_socket(plain[0].fileno())
            assert not is_remote_model_socket(tcp.fileno())
            assert not is_remote_model_socket(read_end)
            assert not is_remote_model_socket(4000)  # not open
            assert transport_of_remote_or_kernel(exported.fileno()) == "quic"
            assert transport_of_remote_or_kernel(tcp.fileno()) == "tcp"
            remote = open_remote_or_kernel(os.dup(exported.fileno()))
            assert isinstance(remote, RemoteQuicSocket)
            remote.close()
            kernel = open_remote_or_kernel(os.dup(tcp.fileno()))
            assert isinstance(kernel, socket.socket)
            kernel.close()
            # The probe leaves the fd usable (it reads nothing).
            assert exported.fileno() >= 0
            with pytest.raises(ValueError):
                RemoteQuicSocket(tcp.fileno())
            assert tcp.fileno() >= 0  # left to the caller
        assert exported.wait_stopped(DEADLINE)
    finally:
        sock.close()
        for s in (*plain, tcp):
            s.close()
        os.close(read_end)
        os.close(write_end)


# -- tests: readiness ----------------------------------------------------------------------------


def _poll(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


@pytest.fixture
def server_with_client_hello(
    no_leaks: None, make_client: Callable[..., Any]
) -> Iterator[tuple[ModelQuicSocket, ModelQuicSocket]]:
    """A model server socket holding a ClientHello (our engine sent it on a model client)."""
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = ModelQuicSocket.connect(listener.address, alpn=[ALPN])
        engine = make_client(tp=sockopt.get_transport_param_ext(client), alpn=(ALPN,))
        flight = [(e.level, e.data) for e in engine.start() if isinstance(e, SendHandshake)]
        sockopt.send_flight(client, flight)
        server = listener.accept(timeout=DEADLINE)
        try:
            yield server, client
        finally:
            engine.close()
            server.close()
            client.close()


def test_readiness_follows_the_model(
    server_with_client_hello: tuple[ModelQuicSocket, ModelQuicSocket],
) -> None:
    server, client = server_with_client_hello
    with export_socket(server) as exported, RemoteQuicSocket(os.dup(exported.fileno())) as remote:
        assert _poll(remote.fileno(), QUICK), "the queued ClientHello must make the fd readable"
        # An RPC consumes the notice; a fresh one follows the reply while data waits.
        assert sockopt.get_alpn(remote) == (ALPN,)
        assert _poll(remote.fileno(), 0)
        assert _poll(remote.fileno(), 0)  # polling consumes nothing
        is_remote_model_socket(remote.fileno())  # nor does the probe
        assert _poll(remote.fileno(), 0)
        level, data = sockopt.recv_handshake(remote, dontwait=True)
        assert level == Level.INITIAL and data[0] == 1  # ClientHello
        with pytest.raises(BlockingIOError):
            sockopt.recv_handshake(remote, dontwait=True)
        assert not _poll(remote.fileno(), 0.3), "nothing queued: no notice"
        # Blocking recvmsg: EAGAIN after the timeout, like the model's SO_RCVTIMEO.
        remote.settimeout(0.3)
        start = time.monotonic()
        with pytest.raises(BlockingIOError):
            remote.recvmsg(4096, RECV_ANCBUF_SIZE, 0)
        assert 0.25 <= time.monotonic() - start < QUICK
        remote.settimeout(None)
        # The connection closed under it: readable, and recvmsg says ENOTCONN.
        client.close()
        assert _poll(remote.fileno(), QUICK)
        with pytest.raises(OSError) as info:
            remote.recvmsg(4096, RECV_ANCBUF_SIZE, 0)  # blocking: returns at once
        assert info.value.errno == errno.ENOTCONN
        assert exported.server_failures == []


# -- tests: handshakes in other processes -----------------------------------------------------


@pytest.mark.parametrize("mode", ["blocking", "async"])
def test_client_handshake_in_a_child_against_aioquic(
    agent: Agent, aioquic_server: AioquicServer, mode: str
) -> None:
    """Consumer socket here, exported, passed by SCM_RIGHTS; api.client_handshake there."""
    sock = ModelQuicSocket.connect(
        aioquic_server.address,
        alpn=[ALPN],
        config=Config(receive_session_ticket=2),
        server_name=SERVER_NAME,
    )
    with sock:
        with export_socket(sock) as exported:
            result = agent.run("handshake", [exported.fileno()], role="client", mode=mode)
        assert exported.wait_stopped(DEADLINE)
        assert exported.server_failures == []
        assert result["status"] == 0, result
        assert result["alpn"] == ALPN.decode()
        assert result["ticket_stored"]  # a NewSessionTicket polled through SESSION_TICKET
        assert result["duration"] < HANDSHAKE_TIMEOUT / 2, "a lost wakeup waits for the deadline"
        assert result["peer"] == list(aioquic_server.address)
        assert sock.state is SockState.ESTABLISHED
        assert len(sockopt.get_session_ticket(sock)) > 0
        assert _echo_over(sock, b"after a remote handshake") == b"after a remote handshake"
        assert sock.io_failures == []


def test_server_handshake_in_a_child_against_aioquic(
    agent: Agent, aio: LoopThread, ca: Issued
) -> None:
    with ModelQuicListener(alpn=[ALPN]) as listener:
        reply = aio.submit(_aioquic_echo_client(listener.address[1], ca, b"ping"))
        with listener.accept(timeout=DEADLINE) as sock:
            with export_socket(sock) as exported:
                result = agent.run("handshake", [exported.fileno()], role="server", mode="async")
            assert result["status"] == 0, result
            assert result["alpn"] == ALPN.decode()
            assert sock.state is SockState.ESTABLISHED
            _serve_echo(sock)
            assert reply.result(DEADLINE) == b"ping"
            assert sock.io_failures == []
        assert exported.wait_stopped(DEADLINE)
        assert exported.server_failures == []


def test_our_engine_on_both_ends_in_two_children(agents: tuple[Agent, Agent]) -> None:
    """Both sides remote, in two processes; then a blocking stream recvmsg through the fd."""
    client_agent, server_agent = agents
    with ModelQuicListener(alpn=[ALPN]) as listener:
        client = ModelQuicSocket.connect(listener.address, alpn=[ALPN], server_name=SERVER_NAME)
        with client, export_socket(client) as client_end:
            client_agent.submit("handshake", [client_end.fileno()], role="client", mode="blocking")
            with listener.accept(timeout=DEADLINE) as server, export_socket(server) as server_end:
                server_agent.submit("handshake", [server_end.fileno()], role="server", mode="async")
                client_result = client_agent.result()
                server_result = server_agent.result()
                assert client_result["status"] == 0, client_result
                assert server_result["status"] == 0, server_result
                assert client_result["cipher"] == server_result["cipher"] != 0
                assert client_result["peer"] == ["127.0.0.1", listener.address[1]]
                assert client.state is SockState.ESTABLISHED
                assert server.state is SockState.ESTABLISHED
                # A blocking recvmsg in the child, woken by stream data sent later.
                client_agent.submit("recv", [client_end.fileno()], timeout=None)
                time.sleep(0.3)
                stream_id = server.next_stream_id()
                server.send_stream(stream_id, b"late data", fin=True)
                got = client_agent.result()
                assert bytes.fromhex(got["data"]) == b"late data"
                assert got["elapsed"] >= 0.2
                assert got["flags"] & MSG_EOR
                ((level, kind, payload),) = got["cmsgs"]
                assert (level, kind) == (SOL_QUIC, QUIC_STREAM_INFO)
                info = StreamInfo.unpack(bytes.fromhex(payload))
                assert info.stream_id == stream_id and info.stream_flags & MSG_QUIC_STREAM_FIN
                # And a blocking recvmsg with a timeout: EAGAIN.
                got = client_agent.run("recv", [client_end.fileno()], timeout=0.2)
                assert (got["error"], got["errno"]) == ("BlockingIOError", errno.EAGAIN)
        assert client_end.wait_stopped(DEADLINE) and server_end.wait_stopped(DEADLINE)
        assert client_end.server_failures == server_end.server_failures == []
        assert listener.io_failures == []


# -- the whole daemon: family model, ACCEPT, worker, RemoteQuicSocket, DONE ------------------------


class Daemon:
    """quichsd's HandshakeService in its own process, on the family model, in model mode.

    Spawned, not forked: this test process runs threads (the family model, exported
    sockets, the aioquic loop), and a fork() copies whatever locks they hold at that
    instant into a child that can then deadlock (Python 3.12+ warns about it)."""

    def __init__(self, address: str, files: dict[str, Path]) -> None:
        parent, child = socket.socketpair()
        with child:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; sys.path.insert(0, sys.argv[1]); "
                    "import test_model_remote as t; sys.exit(t._daemon_entry(sys.argv[2:]))",
                    str(Path(__file__).resolve().parent),
                    address,
                    json.dumps({name: str(path) for name, path in files.items()}),
                    str(child.fileno()),
                ],
                pass_fds=[child.fileno()],
            )
        with parent:
            ready, _, _ = select.select([parent], [], [], DEADLINE)
            assert ready and parent.recv(16) == b"ready", "the daemon did not start"

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(DEADLINE * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the daemon did not stop on SIGTERM") from None


def _daemon_entry(argv: Sequence[str]) -> int:  # pragma: no cover - the daemon
    address, files, fd = argv
    started = socket.socket(fileno=int(fd))
    try:
        return _daemon_main(address, {k: Path(v) for k, v in json.loads(files).items()}, started)
    except BaseException:
        traceback.print_exc()
        return 1


def _daemon_main(
    address: str, files: dict[str, Path], started: socket.socket
) -> int:  # pragma: no cover - the daemon
    from quichsd.daemon.config import DaemonConfig, X509Files
    from quichsd.daemon.forkserver import ForkServer
    from quichsd.daemon.service import HandshakeService
    from quichsd.daemon.wiring import KERNEL
    from quichsd.userspace.family_channel import open_model_family

    # The workers, forked from the fork server, take exported model sockets.
    wiring = replace(KERNEL, open_quic_socket=open_remote_or_kernel)
    config = DaemonConfig(
        client=X509Files(truststore=files["ca"]),
        server=X509Files(certificate=files["chain"], private_key=str(files["key"])),
        handshake_timeout=HANDSHAKE_TIMEOUT,
        shutdown_grace=1.0,
    )

    async def main() -> None:
        family = open_model_family(address, join=True)
        try:
            service = HandshakeService(
                family,
                config,
                workers=1,
                transport_probe=transport_of_remote_or_kernel,
                forkserver=forkserver,
            )
            asyncio.get_running_loop().call_soon(started.send, b"ready")
            await service.run(install_signals=True)
        finally:
            family.close()

    forkserver = ForkServer.start(wiring)  # before the loop, as `quichsd serve` does
    try:
        asyncio.run(main())
    finally:
        forkserver.close()
    return 0


@pytest.fixture
def daemon_files(tmp_path: Path, ca: Issued, server_leaf: Issued) -> dict[str, Path]:
    files = {
        "ca": tmp_path / "ca.pem",
        "chain": tmp_path / "server-chain.pem",
        "key": tmp_path / "server-key.pem",
    }
    files["ca"].write_bytes(ca.cert_pem)
    files["chain"].write_bytes(server_leaf.cert_pem + ca.cert_pem)
    files["key"].write_bytes(server_leaf.key_pem)
    return files


@pytest.fixture
def family_and_daemon(no_leaks: None, daemon_files: dict[str, Path]) -> Iterator[Any]:
    from quichsd.userspace.family import FamilyModel

    with FamilyModel() as family:
        daemon = Daemon(family.address, daemon_files)
        try:
            yield family
        finally:
            assert daemon.stop() == 0


@pytest.mark.parametrize("role", ["client", "server"])
def test_full_chain_through_the_daemon(
    family_and_daemon: Any, aio: LoopThread, server_leaf: Issued, ca: Issued, role: str
) -> None:
    """Model socket → export → family submit → ACCEPT (SCM_RIGHTS) → worker (SCM_RIGHTS) →
    RemoteQuicSocket → handshake with aioquic → DONE; then the consumer uses its socket."""
    from quichsd.netlink.constants import AuthMode as NlAuth
    from quichsd.netlink.constants import MessageType

    family = family_and_daemon
    if role == "client":
        server = AioquicServer(aio, server_leaf, ca)
        try:
            sock = ModelQuicSocket.connect(server.address, alpn=[ALPN], server_name=SERVER_NAME)
            with sock, export_socket(sock) as exported:
                handle = family.submit(
                    exported,
                    MessageType.CLIENTHELLO,
                    NlAuth.UNAUTH,
                    timeout_ms=int(HANDSHAKE_TIMEOUT * 1000),
                    peername=SERVER_NAME,
                )
                completion = handle.wait(DEADLINE * 2)
                assert completion.status == 0, completion
                assert sock.state is SockState.ESTABLISHED
                assert _echo_over(sock, b"through the daemon") == b"through the daemon"
                assert sock.io_failures == []
        finally:
            server.close()
    else:
        with ModelQuicListener(alpn=[ALPN]) as listener:
            reply = aio.submit(_aioquic_echo_client(listener.address[1], ca, b"daemon ping"))
            with listener.accept(timeout=DEADLINE) as sock, export_socket(sock) as exported:
                handle = family.submit(
                    exported,
                    MessageType.SERVERHELLO,
                    NlAuth.X509,
                    timeout_ms=int(HANDSHAKE_TIMEOUT * 1000),
                )
                completion = handle.wait(DEADLINE * 2)
                assert completion.status == 0, completion
                assert sock.state is SockState.ESTABLISHED
                _serve_echo(sock)
                assert reply.result(DEADLINE) == b"daemon ping"
    # The daemon and its worker closed their copies: the server stops with ours.
    assert exported.wait_stopped(DEADLINE)
    assert exported.server_failures == []


def test_exported_socket_type(no_leaks: None) -> None:
    sock = ModelQuicSocket.client()
    try:
        exported = export_socket(sock)
        assert isinstance(exported, ExportedSocket) and isinstance(exported, socket.socket)
        assert (exported.family, exported.type) == (socket.AF_UNIX, socket.SOCK_SEQPACKET)
        copy = exported.dup()  # a second reference keeps the server alive
        exported.close()
        assert not exported.wait_stopped(0.3)
        copy.close()
        assert exported.wait_stopped(DEADLINE)
    finally:
        sock.close()
