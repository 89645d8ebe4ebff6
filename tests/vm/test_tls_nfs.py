# SPDX-License-Identifier: GPL-2.0-only
"""NFSv4.2 over TLS with X.509 on the real kernel: one agent serves the NFS client's
handshakes (UNAUTH with a peer name for ``xprtsec=tls``, X509 for ``xprtsec=mtls``) and knfsd's
(X509), and an untrusted server certificate makes the mount fail.

Debian's tlshd runs the same scenario as the reference. All tests read the session's single
boot (tests/vm/conftest.py); the scenario is tests/vm/scenarios/nfs_tls.sh.
"""

from __future__ import annotations

import pytest

from .floor import NFS_AGENTS
from .rig import Boot, ScenarioResult

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

AGENT_PARAMS = [pytest.param(a, marks=pytest.mark.vm_scenario(f"nfs_tls[{a}]")) for a in NFS_AGENTS]
#: TLS_NO_PEERID, and tlshd's "the client authenticated with a certificate" marker.
NO_PEERID = 0
MUTUAL = 0xFFFFFFFF


def _result(boot: Boot, agent: str) -> ScenarioResult:
    result = boot.scenarios[f"nfs_tls[{agent}]"]
    assert result.rc is not None, (
        f"nfs_tls[{agent}] never finished (VM exit {boot.run.rc}):\n" + boot.run.console[-3000:]
    )
    assert result.facts.get("agent_comm") == agent, result.describe()
    return result


def _done_callbacks(result: ScenarioResult, consumer: str) -> list[tuple[int, int]]:
    """(status, first REMOTE_AUTH) per completion the consumer's callback received, in order:
    the tls mount, the mtls mount, the untrusted attempt."""
    pairs = []
    for item in result.facts.get(f"trace_done_{consumer}", "").split():
        status, _, peerid = item.partition(":")
        pairs.append((int(status), int(peerid, 16)))
    return pairs


def _check_mount(result: ScenarioResult, phase: str) -> None:
    facts = result.facts
    assert facts.get(f"{phase}_mount_rc") == "0", result.describe()
    assert facts[f"{phase}_xprtsec"] == f"xprtsec={phase}"
    # written through the mount, read back with O_DIRECT, and the server's own copy
    written = facts[f"{phase}_sha_written"]
    assert facts[f"{phase}_sha_read"] == written
    assert facts[f"{phase}_sha_export"] == written
    # both ends of the one NFS connection are kTLS sockets, TLS 1.3, software crypto
    assert int(facts[f"{phase}_ss_tls_sockets"]) >= 2, facts
    assert facts[f"{phase}_ss_tls_sockets"] == facts[f"{phase}_ss_sockets"], facts
    assert "version: 1.3" in facts[f"{phase}_ss_ulp"], facts
    assert int(facts[f"{phase}_tls_curr_tx"]) >= 2 and int(facts[f"{phase}_tls_curr_rx"]) >= 2
    # one client and one server handshake
    assert facts[f"{phase}_accepts"] == "2", facts
    assert facts.get(f"{phase}_ok") == "1", result.describe()


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_nfs_mount_xprtsec_tls(vm_boot: Boot, agent: str) -> None:
    """mount -o vers=4.2,xprtsec=tls: the client is anonymous, the server's certificate is
    verified against the client's trust store and 127.0.0.1 (the peer name)."""
    _check_mount(_result(vm_boot, agent), "tls")


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_nfs_mount_xprtsec_mtls(vm_boot: Boot, agent: str) -> None:
    """mount -o vers=4.2,xprtsec=mtls: both sides present and verify certificates."""
    _check_mount(_result(vm_boot, agent), "mtls")


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_nfs_remote_auth_in_done(vm_boot: Boot, agent: str) -> None:
    """What the consumers' completion callbacks got (kprobes): knfsd learns 0xffffffff when
    the client sent a verified certificate (mtls) and no peer id for an anonymous client
    (tls); the mtls client gets the serial of the key holding the server's certificate."""
    result = _result(vm_boot, agent)
    knfsd = _done_callbacks(result, "knfsd")
    client = _done_callbacks(result, "rpc_client")
    assert len(knfsd) >= 2 and len(client) >= 2, result.facts
    (tls_status, tls_peer), (mtls_status, mtls_peer) = knfsd[:2]
    assert (tls_status, mtls_status) == (0, 0)
    assert mtls_peer == MUTUAL, f"knfsd's REMOTE_AUTH after mtls: {mtls_peer:#x}"
    # An UNAUTH client presents no certificate, even with one configured (tlshd's behaviour;
    # quichsd sent it before the fix, and knfsd marked the transport peer-authenticated).
    assert tls_peer == NO_PEERID, f"knfsd's REMOTE_AUTH after xprtsec=tls: {tls_peer:#x}"
    assert client[0] == (0, NO_PEERID)
    assert client[1][0] == 0 and client[1][1] not in (NO_PEERID, MUTUAL)


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_nfs_untrusted_server_certificate_fails_the_mount(vm_boot: Boot, agent: str) -> None:
    """The client's trust store replaced by another CA's: the mount fails with EACCES."""
    result = _result(vm_boot, agent)
    facts = result.facts
    assert facts.get("untrusted_mount_rc") not in (None, "0"), result.describe()
    assert "access denied" in facts["untrusted_mount_msg"]
    accepts = int(facts["untrusted_accepts"])
    assert accepts >= 2, facts
    # every request of the attempt failed, in the agent's log
    assert int(facts["untrusted_agent_failures"]) == accepts, facts
    # the NFS client's handshake ended with EACCES (kernel side)
    client = _done_callbacks(result, "rpc_client")
    assert client[2:] and all(status == -13 for status, _ in client[2:]), client
    if agent == "quichsd":
        assert int(facts["untrusted_agent_eacces"]) >= 1, facts["untrusted_agent_lines"]
        assert "server certificate rejected" in facts["untrusted_agent_lines"]


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_nfs_every_accept_got_its_done(vm_boot: Boot, agent: str) -> None:
    """tracefs events/handshake over the whole scenario: one DONE per ACCEPT, none refused."""
    result = _result(vm_boot, agent)
    assert result.ok, result.describe()
    facts = result.facts
    accepts = int(facts["trace_cmd_accept"])
    assert accepts == 6, facts  # tls, mtls, untrusted: a client and a server handshake each
    assert int(facts["trace_cmd_done"]) == accepts
    assert facts["trace_cmd_done_err"] == "0"
    assert facts["trace_cmd_accept_err"] == "0"
