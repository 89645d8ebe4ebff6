# SPDX-License-Identifier: GPL-2.0-only
"""SSLKEYLOGFILE is never honoured; ``quichsd handshake --keylog FILE`` is the one way to
get a handshake's secrets (issue 11, item 4).

GnuTLS's default key-log function reads SSLKEYLOGFILE once per process, so
every check runs a fresh process with it set: ``quichsd serve`` on the models
(QUIC both roles and the TCP path both roles), and the manual CLI in both roles.
"""

from __future__ import annotations

import os
import re
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_pair_support import ALPN, SERVER_NAME, WAIT, both_roles_config, daemon_pair, write_pki

from quichsd.netlink.constants import MessageType
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig

#: One NSS key log line for TLS 1.3: label, client random, secret (SHA-256 or SHA-384).
NSS_LINE = re.compile(r"^([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]{64}|[0-9a-f]{96})$")
TLS13_LABELS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
}
_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return write_pki(tmp_path)


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """SSLKEYLOGFILE set for every process started from here on; must stay absent."""
    path = tmp_path / "sslkeylog.txt"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    yield path
    assert not path.exists(), f"SSLKEYLOGFILE was honoured:\n{path.read_text()[:500]}"


def test_serve_ignores_sslkeylogfile(pki: Path, trap: Path) -> None:
    rig = DaemonRig()
    rig.write_config(both_roles_config(pki, rig))
    with rig, ModelQuicListener(alpn=[ALPN]) as listener:
        assert os.environ["SSLKEYLOGFILE"] == str(trap)  # the daemon inherits it
        daemon_pair(rig, listener)  # QUIC, both roles, the daemon against itself
        # TCP, both roles: the handshake runs (its secrets exist) whether or not this
        # kernel can then install kTLS, which decides the status.
        with socket.create_server(("127.0.0.1", 0)) as tcp_listener:
            tcp_client = socket.create_connection(tcp_listener.getsockname()[:2])
            tcp_server, _ = tcp_listener.accept()
        with tcp_client, tcp_server:
            handles = [
                rig.submit(tcp_server, MessageType.SERVERHELLO, "x509"),
                rig.submit(tcp_client, MessageType.CLIENTHELLO, "x509", peername=SERVER_NAME),
            ]
            for handle in handles:
                handle.wait(WAIT)
        log = rig.wait_for_log(r"request \d+: tcp (client|server) handshake", count=2)
        tcp = [line for line in log.splitlines() if re.search(r": tcp \w+ handshake", line)]
        # Each TLS handshake finished: only the kTLS step after it may have failed.
        assert all("succeeded" in line or "kernel has no kTLS" in line for line in tcp), tcp
        rig.check_invariants()


def _manual(*args: str) -> list[str]:
    return [sys.executable, "-m", "quichsd.cli", "handshake", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_manual_handshake_keylog_only_on_request(pki: Path, trap: Path, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.txt"
    server = subprocess.Popen(
        _manual(
            "server",
            "127.0.0.1",
            "0",
            "--userspace",
            "--alpn",
            ALPN,
            "--message",
            "",
            "--cert",
            str(pki / "server.pem"),
            "--key",
            str(pki / "server-key.pem"),
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], WAIT)
        assert ready, "the manual server did not start"
        line = server.stdout.readline()
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert port, line
        client = subprocess.run(
            _manual(
                "client",
                "127.0.0.1",
                port.group(1),
                "--userspace",
                "--alpn",
                ALPN,
                "--ca",
                str(pki / "ca.pem"),
                "--peer-name",
                SERVER_NAME,
                "--keylog",
                str(keylog),
                "--message",
                "hello",
            ),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        out, err = server.communicate(timeout=WAIT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert client.returncode == 0, client.stdout + client.stderr
    assert "client handshake OK" in client.stdout
    assert "reply: hello" in client.stdout  # the secrets in the file are the ones in use
    assert server.returncode == 0, out + err
    assert f"warning: writing TLS secrets to {keylog}" in client.stderr
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    lines = keylog.read_text().splitlines()
    matches = [NSS_LINE.match(line) for line in lines]
    assert lines and all(matches), lines
    assert {m.group(1) for m in matches if m} >= TLS13_LABELS
    assert len({m.group(2) for m in matches if m}) == 1  # one handshake, one client random


def test_keylog_file_made_private_and_no_symlink(tmp_path: Path) -> None:
    """An existing file is narrowed to 0600; a symlink is refused (not followed)."""
    from quichsd.tls.binding import keylog_to

    existing = tmp_path / "existing.txt"
    existing.write_text("")
    existing.chmod(0o644)
    with keylog_to(existing):
        pass
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(OSError), keylog_to(link):
        pass
    assert not (tmp_path / "elsewhere.txt").exists()
