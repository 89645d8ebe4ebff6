# SPDX-License-Identifier: GPL-2.0-only
"""``[debug] tls=`` (GnuTLS's own log) and ``[debug] nl=`` (a netlink message trace), as in
tlshd: what they log, what they never log (secrets, fds, names), and the running daemon."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops_support import statuses, write_pki, x509_config, x509_pair
from quichsd.tls._gnutls import ffi

from quichsd.netlink import messages as m
from quichsd.netlink import trace
from quichsd.netlink.constants import NLM_F_REQUEST, Command
from quichsd.tls import HandshakeEngine, debuglog
from quichsd.tls.memory import run_pair
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig

EngineFactory = Callable[..., HandshakeEngine]


@pytest.fixture
def gnutls_debug() -> Iterator[Callable[[int], int]]:
    """``set_gnutls_debug``, back to 0 (off) after the test: the level is process-wide."""
    yield debuglog.set_gnutls_debug
    debuglog.set_gnutls_debug(0)


def _gnutls_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "quichsd.gnutls"]


def test_tls_debug_is_gnutls_own_log_without_secrets(
    make_client: EngineFactory,
    make_server: EngineFactory,
    gnutls_debug: Callable[[int], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="quichsd.gnutls")
    assert gnutls_debug(4) == 4
    result = run_pair(make_client(), make_server())
    assert result.client.complete is not None
    lines = _gnutls_lines(caplog)
    assert len(lines) > 20, "GnuTLS logged its handshake"
    assert all(re.match(r"gnutls\([1-4]\): \S", line) for line in lines), lines[:5]
    assert any("HSK" in line for line in lines), "handshake messages are in GnuTLS's log"
    secrets = [*result.client.secrets.values(), *result.server.secrets.values()]
    assert secrets
    text = "\n".join(lines).lower()
    for secret in secrets:
        assert secret.hex() not in text and secret.hex()[:16] not in text

    caplog.clear()
    assert gnutls_debug(0) == 0
    assert run_pair(make_client(), make_server()).client.complete is not None
    assert _gnutls_lines(caplog) == [], "tls=0: GnuTLS logs nothing"


def test_levels_that_print_keys_are_capped(
    gnutls_debug: Callable[[int], int], caplog: pytest.LogCaptureFixture
) -> None:
    """From level 9 GnuTLS prints premaster secrets and key blocks (``INT:`` lines)."""
    assert debuglog.MAX_LEVEL == 8
    assert gnutls_debug(9) == 8
    assert gnutls_debug(99) == 8
    assert gnutls_debug(-1) == 0
    caplog.set_level(logging.DEBUG, logger="quichsd.gnutls")
    gnutls_debug(8)
    debuglog.qd_py_gnutls_log(9, ffi.new("char[]", b"INT: PREMASTER SECRET[48]: 00ff\n"))
    debuglog.qd_py_gnutls_log(3, ffi.new("char[]", b"HSK[0x1]: CLIENT HELLO was received\n"))
    assert _gnutls_lines(caplog) == ["gnutls(3): HSK[0x1]: CLIENT HELLO was received"]


def _accept_reply() -> bytes:
    return m.encode(
        m.acceptmsg,
        msg_type=0x1C,
        flags=0,
        seq=7,
        pid=0,
        attrs=[
            ("HANDSHAKE_A_ACCEPT_SOCKFD", 77),
            ("HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", 1),
            ("HANDSHAKE_A_ACCEPT_PEERNAME", "secret-host.example"),
            ("HANDSHAKE_A_ACCEPT_KEYRING", 0x1234567),
        ],
        cmd=Command.ACCEPT,
        version=1,
    )


def test_netlink_trace_names_types_and_attributes_never_values() -> None:
    done = m.encode(
        m.donemsg,
        msg_type=0x1C,
        flags=NLM_F_REQUEST,
        seq=8,
        pid=0,
        attrs=[("HANDSHAKE_A_DONE_STATUS", 13), ("HANDSHAKE_A_DONE_SOCKFD", 77)],
        cmd=Command.DONE,
        version=1,
    )
    lines = trace.describe(_accept_reply() + done)
    assert lines == [
        "ACCEPT seq 7 flags 0x0 [HANDSHAKE_A_ACCEPT_SOCKFD, HANDSHAKE_A_ACCEPT_MESSAGE_TYPE, "
        "HANDSHAKE_A_ACCEPT_PEERNAME, HANDSHAKE_A_ACCEPT_KEYRING]",
        "DONE seq 8 flags 0x1 [HANDSHAKE_A_DONE_STATUS, HANDSHAKE_A_DONE_SOCKFD]",
    ]
    text = "\n".join(lines)
    for value in ("77", "secret-host", hex(0x1234567), str(0x1234567)):
        assert value not in text
    assert trace.describe(b"\x01\x02") == [
        "2 bytes that do not frame: 2 stray bytes after messages"
    ]


def test_netlink_trace_follows_nl_not_loglevel(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="quichsd")
    try:
        trace.set_level(0)
        trace.traffic("received", _accept_reply())
        assert not [r for r in caplog.records if r.name == "quichsd.netlink"]
        trace.set_level(1)
        trace.traffic("received", _accept_reply())
        (record,) = [r for r in caplog.records if r.name == "quichsd.netlink"]
        assert record.levelno == logging.DEBUG
        assert record.getMessage().startswith("netlink received: ACCEPT seq 7")
    finally:
        trace.set_level(0)


def test_running_daemon_logs_gnutls_and_netlink_when_asked(tmp_path: Path) -> None:
    """``[debug] tls=4`` and ``nl=1`` in a second ``[debug]`` group (GLib merges it)."""
    pki = write_pki(tmp_path)
    config = x509_config(pki) + "\n[debug]\ntls=4\nnl=1\n"
    with DaemonRig(config) as rig, ModelQuicListener(alpn=["echo"]) as quic:
        assert statuses(*x509_pair(rig, quic)) == [0, 0], rig.log()
        assert rig.stop() == 0
        log = rig.log()
    assert re.search(r"netlink sent: nlctrl cmd \d+ seq \d+ .*\[CTRL_ATTR_FAMILY_NAME\]", log), log
    assert re.search(r"netlink received: READY seq \d+", log), log
    assert re.search(r"netlink received: ACCEPT .*HANDSHAKE_A_ACCEPT_SOCKFD", log), log
    assert re.search(r"netlink sent: DONE .*HANDSHAKE_A_DONE_STATUS", log), log
    assert re.search(r"gnutls\(\d\): HSK\[", log), "the workers logged GnuTLS's handshake"
    assert not re.search(r"gnutls\((9|\d\d)\)", log)


def test_daemon_without_debug_keys_logs_neither(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    with DaemonRig(x509_config(pki, loglevel=1)) as rig, ModelQuicListener(alpn=["echo"]) as quic:
        assert statuses(*x509_pair(rig, quic)) == [0, 0], rig.log()
        assert rig.stop() == 0
        log = rig.log()
    assert "netlink sent" not in log and "gnutls(" not in log
