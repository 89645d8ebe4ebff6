# SPDX-License-Identifier: GPL-2.0-only
"""quichsd on the real kernel when handshakes fail or the daemon stops: every request it
ACCEPTed still gets exactly one DONE (tracefs events/handshake, and one "request N" line per
request in its log), and the consumers are never left hanging.

The scenario is tests/vm/scenarios/nvme_failures.sh (NVMe/TCP, PSK, nvmet on 127.0.0.1);
the untrusted NFS server is in test_tls_nfs.py. All tests read the session's single boot.
"""

from __future__ import annotations

import json
import re

import pytest

from .rig import Boot, ScenarioResult

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(1800),
    pytest.mark.vm_scenario("nvme_failures[quichsd]"),
]
SCENARIO = "nvme_failures[quichsd]"


def _result(boot: Boot) -> ScenarioResult:
    result = boot.scenarios[SCENARIO]
    assert result.rc is not None, (
        f"{SCENARIO} never finished (VM exit {boot.run.rc}):\n" + boot.run.console[-3000:]
    )
    assert result.facts.get("agent_comm") == "quichsd", result.describe()
    return result


def _statuses(result: ScenarioResult, consumer: str) -> list[int]:
    return [int(s.split(":")[0]) for s in result.facts.get(f"trace_done_{consumer}", "").split()]


def test_wrong_psk_fails_every_connect(vm_boot: Boot) -> None:
    """The host's PSK has the target's identity but other bytes: nothing connects, and each
    ACCEPTed request (client and server side) got a DONE with a failure."""
    result = _result(vm_boot)
    facts = result.facts
    burst = json.loads(facts["wrong_psk_burst"])
    assert (burst["ok"], burst["failed"]) == (0, burst["attempts"]), burst
    assert burst["attempts"] == 2
    assert facts["wrong_psk_connected"] == "0"
    accepts = int(facts["wrong_psk_accepts"])
    assert accepts == 2 * burst["attempts"], facts  # the admin queue's two handshakes each
    assert int(facts["wrong_psk_dones"]) == accepts
    assert int(facts["wrong_psk_log_failed"]) == accepts
    assert facts["wrong_psk_log_succeeded"] == "0"
    # the kernel's consumers saw failures, not successes
    host, target = _statuses(result, "nvme_host"), _statuses(result, "nvmet")
    assert host[:2] and all(s < 0 for s in host[:2]), host
    assert target[:2] and all(s < 0 for s in target[:2]), target


def test_sigterm_mid_burst_answers_every_accept(vm_boot: Boot) -> None:
    """SIGTERM right after an ACCEPT, with 4 threads connecting: quichsd finishes what it
    accepted, exits 0; the connects succeed or fail, none hangs."""
    result = _result(vm_boot)
    assert result.ok, result.describe()
    facts = result.facts
    assert facts["sigterm_agent_rc"] == "0", facts
    watch = re.search(r"(\d+) in flight", facts["sigterm_watch"])
    assert watch and int(watch.group(1)) >= 1, facts["sigterm_watch"]  # the kernel's count
    burst = json.loads(facts["sigterm_burst"])
    assert burst["ok"] + burst["failed"] == burst["attempts"], burst
    assert burst["failed"] >= 1, burst  # at least those after the exit: nobody listens
    accepts = int(facts["sigterm_accepts"])
    assert accepts >= 10
    assert int(facts["sigterm_dones"]) == accepts
    assert int(facts["sigterm_log_requests"]) == accepts
    assert "shutting down" in facts["sigterm_log_tail"]
    assert facts["sigterm_left_connected"] == "0"


def test_every_accept_got_exactly_one_done(vm_boot: Boot) -> None:
    """Over the whole scenario: the kernel's ACCEPT and DONE counts match, no DONE was
    refused, and the daemon's log has one line per request id, ids 1..N."""
    result = _result(vm_boot)
    facts = result.facts
    accepts = int(facts["trace_cmd_accept"])
    assert accepts == int(facts["trace_cmd_done"]), facts
    assert facts["trace_cmd_done_err"] == "0"
    assert facts["log_ids_unique"] == "1"
    assert int(facts["log_max_id"]) == accepts
    assert int(facts["trace_complete"]) == accepts


def test_startup_keyring_link_survives_requests(vm_boot: Boot) -> None:
    """quichsd links .nvme into its session keyring at start-up; the requests (which name
    .nvme as their keyring) used to unlink it when they ended, leaving the keyring empty for
    every handshake still in flight.  After the wrong-PSK phase it must still hold it."""
    facts = _result(vm_boot).facts
    contents = facts.get("session_keyrings", "").split()
    assert any(c != "empty" for c in contents), facts.get("session_keyrings")
