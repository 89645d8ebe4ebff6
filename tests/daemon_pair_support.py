# SPDX-License-Identifier: GPL-2.0-only
"""The daemon against itself on the models: one PKI, a configuration for both roles, and
a QUIC handshake between its client and its server (tests of 0-RTT and key logging)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quichsd.quic.abi import Config
from quichsd.tls.selfsigned import issue, make_ca
from quichsd.userspace import ModelQuicListener
from tests.support.rig import DaemonRig, Request, config_text

SERVER_NAME = "server.test"
ALPN = "echo"
WAIT = 15.0


def write_pki(directory: Path) -> Path:
    """ca.pem, server.pem (leaf + CA) and server-key.pem for ``SERVER_NAME``."""
    ca = make_ca("quichsd test CA")
    leaf = issue(ca, (SERVER_NAME,))
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "server.pem").write_bytes(leaf.cert_pem + ca.cert_pem)
    (directory / "server-key.pem").write_bytes(leaf.key_pem)
    return directory


def both_roles_config(pki: Path, rig: DaemonRig, **settings: Any) -> str:
    """Clients trust the CA; the server presents the leaf."""
    return config_text(
        client={"x509.truststore": pki / "ca.pem"},
        server={
            "x509.certificate": pki / "server.pem",
            "x509.private_key": pki / "server-key.pem",
        },
        status_socket=rig.status_socket,
        **settings,
    )


def daemon_pair(rig: DaemonRig, listener: ModelQuicListener) -> tuple[Request, Request]:
    """(client, server): the daemon's client handshakes with its server, both succeed;
    the client's socket then holds the session data with the server's ticket."""
    client = rig.client_request(
        listener.address,
        "x509",
        alpn=[ALPN],
        peername=SERVER_NAME,
        config=Config(receive_session_ticket=3),
    )
    server = rig.server_request(listener, "x509")
    assert server.handle.wait(WAIT).status == 0
    assert client.handle.wait(WAIT).status == 0
    return client, server
