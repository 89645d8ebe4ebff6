# SPDX-License-Identifier: GPL-2.0-only
"""Every fuzzing finding, as a named test with the input that found it.

Inputs live in ``tests/fuzz/regressions/<target>-<finding>`` and go through the
target's own ``one_input`` (which fails on an unexpected exception or a broken
invariant), plus a direct check of the fixed behaviour.  None of this needs atheris.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.engine import CLIENT_TP, SERVER_TP, STAGES, scenarios
from fuzz.harness import targets

from quichsd.daemon.protocol import RETIRING, ChannelError, decode_outcome
from quichsd.netlink.errors import MalformedRequest
from quichsd.netlink.requests import parse_accept_reply
from quichsd.tls import HandshakeEngine, Level, State
from quichsd.tls.memory import run_pair

REGRESSIONS = Path(__file__).resolve().parent / "fuzz" / "regressions"


def _input(name: str) -> bytes:
    return (REGRESSIONS / name).read_bytes()


def test_tampered_session_data_never_reaches_gnutls() -> None:
    """quic_params: a client's SESSION_TICKET with bytes changed.

    GnuTLS 3.7 refused it in gnutls_session_set_data and then crashed (SIGSEGV) in
    gnutls_deinit, killing the worker and every request it held.  Run in a child
    process so that a regression fails this test instead of the whole run.
    """
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from fuzz.harness import targets;"
        "targets()['quic_params'].one_input(open(sys.argv[2], 'rb').read())"
    )
    tests = Path(__file__).resolve().parent
    path = REGRESSIONS / "quic_params-tampered-session-data"
    run = subprocess.run(
        [sys.executable, "-c", code, str(tests), str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]


def test_foreign_session_data_resumes_nothing() -> None:
    """Session data this process did not seal gives a full handshake, not a failure."""
    x509 = scenarios()[0]
    client = HandshakeEngine(x509.client, CLIENT_TP, session_data=b"\x00" * 200)
    result = run_pair(client, HandshakeEngine(x509.server, SERVER_TP))
    assert result.client.complete is not None and not result.client.complete.resumed


def test_malformed_accept_reply_names_no_negative_fd() -> None:
    """netlink_accept: SOCKFD -2139095033 and a PEERNAME without its NUL.

    The MalformedRequest carried the negative number as the fd to answer DONE on
    and to close; it must carry None (no installed descriptor) instead.
    """
    data = _input("netlink_accept-negative-sockfd")
    targets()["netlink_accept"].one_input(data)
    with pytest.raises(MalformedRequest) as caught:
        parse_accept_reply(data)
    assert caught.value.sockfd is None


def test_outcome_decoder_refuses_a_retiring_notice() -> None:
    """channel: ``{"retiring":true}`` given to decode_outcome raised KeyError.

    Every malformed message now raises ChannelError (a ValueError), the one type a
    caller has to handle.
    """
    targets()["channel"].one_input(_input("channel-retiring-as-outcome"))
    with pytest.raises(ChannelError):
        decode_outcome(RETIRING)


@pytest.mark.parametrize(
    "data",
    [b"[1]", b'{"request_id":1,"status":NaN,"remote_auth":[]}', b"[" * 5000, b"\xff"],
    ids=["not-an-object", "nan", "deep-nesting", "not-utf8"],
)
def test_outcome_decoder_errors_are_channel_errors(data: bytes) -> None:
    with pytest.raises(ChannelError):
        decode_outcome(data)


def test_server_refuses_the_client_finished_at_app_level() -> None:
    """engine_server_app: the client's Finished delivered at APP level completed the
    server's handshake.  RFC 9001 §4.1.3: handshake data at the wrong level is a
    connection error."""
    x509 = scenarios()[0]
    client = HandshakeEngine(x509.client, CLIENT_TP)
    server = HandshakeEngine(x509.server, SERVER_TP)
    for victim, finished in STAGES["engine_server_app"]._honest(client, server):
        assert victim is server
        victim.receive(Level.APP, finished)
    assert server.state is not State.COMPLETE
