# SPDX-License-Identifier: GPL-2.0-only
"""The real-kernel floor's first scenarios, proving the rig: sid's kernel has the handshake
family and kTLS, and NVMe/TCP over TLS with a PSK works on loopback with Debian's tlshd as the
handshake agent, and with quichsd in its place.

All tests read results of the session's single boot (``vm_boot``); see tests/vm/conftest.py
and vm/README.md.
"""

from __future__ import annotations

import pytest

from .floor import AGENTS, USERLAND, userland_facts
from .rig import Boot, ScenarioResult

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def _result(boot: Boot, name: str) -> ScenarioResult:
    result = boot.scenarios[name]
    assert result.rc is not None, (
        f"{name} never finished (VM exit {boot.run.rc}):\n" + (boot.run.console[-3000:])
    )
    return result


@pytest.mark.vm_scenario("kernel")
def test_boot_reaches_the_command(vm_boot: Boot) -> None:
    result = _result(vm_boot, "kernel")
    assert result.facts.get("release", "").endswith("-cloud-amd64"), result.describe()
    assert result.facts.get("cmdline_init", "").endswith("/vm/guest/init")
    assert vm_boot.run.boot_seconds is not None and vm_boot.run.boot_seconds < 60


@pytest.mark.vm_scenario("kernel")
def test_handshake_family_is_registered(vm_boot: Boot) -> None:
    result = _result(vm_boot, "kernel")
    assert result.ok, result.describe()
    facts = result.facts
    assert facts["genl_group_tlshd"].startswith("0x")
    group = int(facts["genl_group_tlshd"], 16)
    # the same family seen by iproute2, by pyroute2 and by quichsd's own resolver
    assert facts["pyroute2_family_id"] == facts["quichsd_family_id"]
    assert f"tlshd={group}" in facts["pyroute2_groups"].split()
    assert f"tlshd={group}" in facts["quichsd_groups"].split()
    assert "remote_peerids=True" in facts["caps"]


@pytest.mark.vm_scenario("kernel")
def test_quichsd_runs_on_the_userland_under_test(vm_boot: Boot) -> None:
    """QUICHSD_VM_USERLAND=sid (default): sid's Python and GnuTLS from the chroot's venv, the
    same as Debian's tlshd there; host: the host's, from .venv."""
    result = _result(vm_boot, "kernel")
    assert result.ok, result.describe()
    expected = userland_facts(USERLAND)
    host_pyroute2 = userland_facts("host")["pyroute2"]
    assert result.facts["python_version"] == expected["python"], result.facts
    assert result.facts["gnutls_version"] == expected["gnutls"], result.facts
    # pyproject's pin from PyPI, on both (sid's own python3-pyroute2 0.8.1 fails decoding
    # ACCEPT's x509|nested attributes)
    assert result.facts["pyroute2_version"] == expected["pyroute2"] == host_pyroute2, result.facts


@pytest.mark.vm_scenario("kernel")
def test_tls_module_loads(vm_boot: Boot) -> None:
    result = _result(vm_boot, "kernel")
    assert result.ok, result.describe()
    assert result.facts["tls_module"] == "1"
    assert int(result.facts["tls_stat_lines"]) > 4


@pytest.mark.vm_scenario("kernel")
def test_sid_chroot_has_reference_tools(vm_boot: Boot) -> None:
    result = _result(vm_boot, "kernel")
    assert result.ok, result.describe()
    assert "ktls-utils 1.4" in result.facts["sid_tlshd"]
    assert result.facts["sid_nvme"].startswith("nvme version 2.")


@pytest.mark.parametrize(
    "agent",
    [pytest.param(a, marks=pytest.mark.vm_scenario(f"nvme_tls_psk[{a}]")) for a in AGENTS],
)
def test_nvme_tcp_tls_psk_loopback(vm_boot: Boot, agent: str) -> None:
    """nvmet port with tls1.3 on 127.0.0.1:4420, PSK from `nvme gen-tls-key --insert`,
    `nvme connect --tls` (4 handshakes: 2 client, 2 server), 8 MiB O_DIRECT round trip."""
    result = _result(vm_boot, f"nvme_tls_psk[{agent}]")
    facts = result.facts
    assert result.ok, result.describe()
    # the agent under test, and only it (or its workers), listened on the tlshd group
    assert facts["agent_comm"] == agent, facts
    assert facts["listeners"].split(), facts
    # start-up, exec of the agent's program to its join, traced (tests/vm/scenarios/agent.sh):
    # within the polled span, which starts before the spawn
    assert 0 < float(facts["agent_exec_join_s"]) <= float(facts["agent_join_s"]), facts
    assert facts["connect_rc"] == "0"
    assert facts["treq"] == "required"
    # both ends of both queues went to kTLS, software path, TLS 1.3
    assert facts["tls_curr_tx"] == "4" and facts["tls_curr_rx"] == "4"
    assert "version: 1.3" in facts.get("ss_ulp", ""), facts
    assert facts["sha_written"] == facts["sha_read"]
    assert int(facts["tls_tx_delta"]) >= 4 and int(facts["tls_rx_delta"]) >= 4
    assert facts["tls_curr_tx_after"] == "0"  # the disconnect released every kTLS socket
    assert facts["ok"] == "1"


@pytest.mark.vm_scenario("nvme_tls_psk_sha384[quichsd]")
def test_nvme_tcp_tls_sha384_psk(vm_boot: Boot) -> None:
    """A SHA-384 PSK (`gen-tls-key --hmac=2`, identity NVMe0R02): the connect and the data
    round trip work, over the suite this GnuTLS can bind such a PSK to (see
    tests/test_ktls_handshake.py: AES-256-GCM-SHA384 from 3.8.11, ChaCha20 before)."""
    result = _result(vm_boot, "nvme_tls_psk_sha384[quichsd]")
    facts = result.facts
    assert result.ok, result.describe()
    assert facts["connect_rc"] == "0"
    assert facts["sha_written"] == facts["sha_read"]
    assert facts["tls_curr_tx"] == "4" and facts["tls_curr_rx"] == "4"
    binder_hash = userland_facts(USERLAND)["binder_hash"] == "True"  # the agent's GnuTLS
    expected = "TLS_AES_256_GCM_SHA384" if binder_hash else "TLS_CHACHA20_POLY1305_SHA256"
    assert facts["agent_ciphers"].split() == ["cipher", expected], facts


@pytest.mark.vm_scenario("nvme_tls_psk_keyring[quichsd]")
def test_nvme_host_psk_from_the_keyring_named_in_accept(vm_boot: Boot) -> None:
    """`nvme connect --keyring`: the host's PSK lives in a keyring the agent does not possess
    and can read only after linking the keyring that ACCEPT's KEYRING attribute names."""
    result = _result(vm_boot, "nvme_tls_psk_keyring[quichsd]")
    facts = result.facts
    assert result.ok, result.describe()
    assert facts["unlinked_read_rc"] != "0"  # the control: no possession, no read
    assert facts["connect_rc"] == "0"
    assert facts["sha_written"] == facts["sha_read"]
    # the host consumer got that very key's serial back in DONE's REMOTE_AUTH
    host_psk = f"0:{int(facts['host_psk']):#x}"
    assert facts["trace_done_nvme_host"].split() == [host_psk, host_psk], facts
    assert facts["trace_cmd_accept"] == facts["trace_cmd_done"] == "4"
