# SPDX-License-Identifier: GPL-2.0-only
"""After the handshake, on the model of the kernel socket: confirmation, closes, stream data.

* ``client_handshake(confirm_wait=...)``: a client that waits until the server
  confirmed (its ticket or the NEW_TOKEN a kernel server sends with
  HANDSHAKE_DONE) sees a server that refuses it after all; without it, the
  client has already reported success.
* A peer that closes during the handshake is reported as that, with its close.
* Stream data with the QUIC_STREAM_INFO cmsg laid out as the uapi has it
  (the uapi's struct quic_stream_info): what ``--message`` sends on kernel sockets, checked
  byte for byte and end to end through the model (the real module is not
  available here).
"""

from __future__ import annotations

import errno
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from quichsd import api
from quichsd.quic import sockopt
from quichsd.quic.abi import (
    MSG_QUIC_STREAM_FIN,
    MSG_QUIC_STREAM_NEW,
    QUIC_STREAM_INFO,
    SOL_QUIC,
    AbiError,
    Config,
    StreamInfo,
    parse_stream_info,
    stream_cmsg,
)
from quichsd.quic.driver import HandshakeResult
from quichsd.tls.selfsigned import Issued, issue
from quichsd.userspace import ModelQuicListener, ModelQuicSocket

ALPN = "smb"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, ca: Issued) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("confirm")
    leaf = issue(ca, ("localhost",))
    paths = {"ca": where / "ca.pem", "cert": where / "server.pem", "key": where / "server.key"}
    paths["ca"].write_bytes(ca.cert_pem)
    paths["cert"].write_bytes(leaf.cert_pem)
    paths["key"].write_bytes(leaf.key_pem)
    return paths


@contextmanager
def serving(config: Config, files: dict[str, Any], **server: Any) -> Iterator[tuple[Any, dict]]:
    """A listener and a thread that runs our server handshake on the first connection."""
    out: dict[str, Any] = {}
    with ModelQuicListener(alpn=[ALPN], config=config) as listener:

        def serve() -> None:
            with listener.accept(TIMEOUT) as sock:
                creds = api.server_credentials(
                    certfile=files["cert"], keyfile=files["key"], cafile=files["ca"]
                )
                out["result"] = api.server_handshake(sock, creds, TIMEOUT)
                if server.get("linger"):
                    sock.settimeout(2.0)
                    try:
                        sockopt.recv_stream(sock)
                    except OSError as exc:
                        out["linger"] = exc.errno

        thread = threading.Thread(target=serve, name="test-server")
        thread.start()
        try:
            yield listener.address, out
        finally:
            thread.join(TIMEOUT)


def _client(address: Any, files: dict[str, Any], confirm_wait: float) -> HandshakeResult:
    with ModelQuicSocket.connect(address, alpn=[ALPN], server_name="localhost") as sock:
        creds = api.client_credentials(cafile=files["ca"], peer_name="localhost")
        return api.client_handshake(sock, creds, TIMEOUT, confirm_wait=confirm_wait)


def test_confirm_wait_reports_a_server_that_refuses_after_the_client_completed(
    files: dict[str, Any],
) -> None:
    with serving(Config(certificate_request=2), files) as (address, server):
        result = _client(address, files, confirm_wait=3.0)
    assert not result.ok
    assert result.status == errno.EACCES
    assert "the server closed the connection with TLS alert certificate_required (116)" in (
        result.reason
    )
    assert server["result"].status == errno.EACCES


def test_without_confirm_wait_the_client_reports_its_own_side(files: dict[str, Any]) -> None:
    with serving(Config(certificate_request=2), files) as (address, server):
        result = _client(address, files, confirm_wait=0.0)
    assert result.ok and not result.confirmed  # the server's refusal came later
    assert not server["result"].ok


def test_confirm_wait_ends_at_the_servers_confirmation(files: dict[str, Any]) -> None:
    with serving(Config(), files, linger=True) as (address, server):
        result = _client(address, files, confirm_wait=5.0)
    assert result.ok and result.confirmed
    assert result.duration < 2.0  # confirmed by NEW_TOKEN, not the end of the wait
    assert server["result"].ok
    assert server["linger"] in (errno.ENOTCONN, errno.EAGAIN)


def test_a_peer_that_closes_during_the_handshake_is_said_to_have_done_so() -> None:
    with ModelQuicListener(alpn=[ALPN]) as listener:
        out: dict[str, HandshakeResult] = {}

        def run_client() -> None:
            with ModelQuicSocket.connect(listener.address, alpn=[ALPN]) as sock:
                creds = api.client_credentials(verify=False)
                out["client"] = api.client_handshake(sock, creds, TIMEOUT)

        thread = threading.Thread(target=run_client)
        thread.start()
        listener.accept(TIMEOUT).close()  # a server that gives up at once
        thread.join(TIMEOUT)
    result = out["client"]
    assert result.status == errno.ENOTCONN
    assert result.reason.startswith("the peer closed the connection during the handshake")
    assert "APPLICATION_ERROR 0xc" in result.reason
    assert "socket:" not in result.reason and "recvmsg" not in result.reason


# -- the stream cmsg ------------------------------------------------------------------------


def test_stream_cmsg_is_the_uapi_layout() -> None:
    ((level, kind, data),) = stream_cmsg(-1, MSG_QUIC_STREAM_NEW | MSG_QUIC_STREAM_FIN)
    assert (level, kind) == (SOL_QUIC, QUIC_STREAM_INFO) == (288, 0)
    # s64 stream_id at 0, u32 stream_flags at 8, 4 bytes of padding: 16 bytes, host order.
    assert data == struct.pack("=qI4x", -1, 0x400 | 0x200)
    assert len(data) == 16 and data[:8] == b"\xff" * 8
    assert parse_stream_info([(SOL_QUIC, QUIC_STREAM_INFO, data)]) == StreamInfo(-1, 0x600)
    assert parse_stream_info([(SOL_QUIC, 1, b"\x01")]) is None
    with pytest.raises(AbiError):
        stream_cmsg(4, 0x1)  # not a stream flag


def test_stream_data_both_ways_with_the_cmsg(files: dict[str, Any]) -> None:
    with ModelQuicListener(alpn=[ALPN]) as listener:
        out: dict[str, Any] = {}

        def serve() -> None:
            with listener.accept(TIMEOUT) as sock:
                creds = api.server_credentials(certfile=files["cert"], keyfile=files["key"])
                out["result"] = api.server_handshake(sock, creds, TIMEOUT)
                sock.settimeout(TIMEOUT)
                out["got"] = stream_id, data, _fin = sockopt.recv_stream(sock)
                sockopt.send_stream(sock, b"pong:" + data, stream_id, new=False)
                sock.settimeout(2.0)
                with suppress(OSError):
                    sockopt.recv_stream(sock)

        thread = threading.Thread(target=serve)
        thread.start()
        with ModelQuicSocket.connect(listener.address, alpn=[ALPN]) as sock:
            creds = api.client_credentials(cafile=files["ca"], peer_name="localhost")
            assert api.client_handshake(sock, creds, TIMEOUT).ok
            sockopt.send_stream(sock, b"ping")
            sock.settimeout(TIMEOUT)
            reply = sockopt.recv_stream(sock)
        thread.join(TIMEOUT)
    assert out["got"] == (0, b"ping", True)  # the first client-initiated bidi stream
    assert reply == (0, b"pong:ping", True)
