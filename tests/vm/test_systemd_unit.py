# SPDX-License-Identifier: GPL-2.0-only
"""systemd/quichsd.service under real systemd, serving real kernel upcalls.

One boot with the host's systemd as PID 1 (``vm_systemd_boot``, VM_SYSTEMD=1 in vm/guest/init)
runs tests/vm/scenarios/systemd_unit.sh: the unit as ``quichsd install-service`` renders it,
started with ``systemctl start`` (Type=notify), its workers' privilege drop, one NVMe/TCP
``connect --tls`` through its sandbox, journald's records, reload and stop, and
``systemd-analyze security``.
"""

from __future__ import annotations

import re

import pytest

from .rig import Boot, ScenarioResult

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800), pytest.mark.vm_scenario("systemd_unit")]

#: CapEff of a process holding CAP_NET_ADMIN (bit 12) and nothing else.
ONLY_CAP_NET_ADMIN = f"{1 << 12:016x}"
SECCOMP_FILTER = "2"
NO_CAPABILITIES = "0" * 16


@pytest.fixture(scope="module")
def unit(vm_systemd_boot: Boot) -> ScenarioResult:
    result = vm_systemd_boot.scenarios["systemd_unit"]
    assert result.rc is not None, (
        f"systemd_unit never finished (VM exit {vm_systemd_boot.run.rc}):\n"
        + vm_systemd_boot.run.console[-3000:]
    )
    assert result.facts.get("pid1") == "systemd", result.describe()
    return result


def test_start_waits_for_ready_and_reports_status(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert facts.get("unit_type") == "notify", unit.describe()
    assert facts.get("start_rc") == "0", unit.describe()
    assert facts["active_state"] == "active/running"
    # STATUS= as sent once the group was joined and the workers forked
    ready = r"serving: 0 in flight, 0 done, 0 failed; \d+ workers?"
    assert re.fullmatch(ready, facts["status_ready"])
    assert facts["watchdog_usec"] == "30s"


def test_sandbox_leaves_only_cap_net_admin(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert facts.get("cap_eff") == ONLY_CAP_NET_ADMIN, unit.describe()
    assert facts["no_new_privs"] == "1"
    assert facts["seccomp"] == SECCOMP_FILTER


def _workers(status: str) -> dict[str, dict[str, str]]:
    """worker_status: 'PID K=V,...;' per worker."""
    workers = {}
    for entry in filter(None, (e.strip() for e in status.split(";"))):
        pid, _, fields = entry.partition(" ")
        workers[pid] = dict(f.split("=", 1) for f in fields.split(",") if f)
    return workers


def test_parent_drops_cap_setpcap_and_the_fork_server_keeps_only_it(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert facts.get("cap_bnd") == ONLY_CAP_NET_ADMIN, unit.describe()
    assert facts["forkserver_comm"] == "quichsd-forksrv"
    assert facts["forkserver_cap_eff"] == f"{1 << 8:016x}"  # CAP_SETPCAP


@pytest.mark.parametrize("when", ["worker_status", "worker_status_after"])
def test_workers_hold_no_privilege(unit: ScenarioResult, when: str) -> None:
    """Before and after the handshakes they served: no capability, no_new_privs, and their
    own seccomp filter (Seccomp 2)."""
    workers = _workers(unit.facts.get(when, ""))
    assert len(workers) >= 1, unit.describe()  # one at idle: the pool grows with load
    for pid, fields in workers.items():
        caps = {k: fields[k] for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
        assert caps == dict.fromkeys(caps, NO_CAPABILITIES), (pid, fields)
        assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", SECCOMP_FILTER), (pid, fields)


def test_unit_serves_nvme_tls_through_its_sandbox(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert facts.get("connect_rc") == "0", unit.describe()
    accepts = int(facts["trace_accepts"])
    assert accepts >= 4  # admin + 1 I/O queue, a client and a server handshake each
    assert int(facts["trace_dones"]) == accepts
    assert int(facts["tls_tx_delta"]) >= 4


def test_journal_has_one_structured_record_per_handshake(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert int(facts.get("journal_records", "0")) == int(facts["trace_accepts"]), unit.describe()
    assert '"QUICHSD_ROLE":"client"' in facts["journal_roles"]
    assert '"QUICHSD_ROLE":"server"' in facts["journal_roles"]
    assert facts["journal_transports"].split()[1] == '"QUICHSD_TRANSPORT":"tcp"'
    assert facts["journal_auth"].split() == ['"QUICHSD_AUTH":"psk"']


def test_psk_never_reaches_the_journal(unit: ScenarioResult) -> None:
    assert unit.facts.get("psk_known") == "1", unit.describe()
    assert unit.facts["psk_in_journal"] == "0"


def test_status_counts_the_served_handshakes(unit: ScenarioResult) -> None:
    facts = unit.facts
    dones = int(facts["trace_dones"])
    served = rf"serving: 0 in flight, {dones} done, 0 failed; \d+ workers?"
    assert re.fullmatch(served, facts.get("status_served", "")), unit.describe()
    assert facts["status_rc"] == "0"
    assert re.search(rf"^\s+{dones}\s+{dones}\s+0\s+0\s+0$", unit.output, re.MULTILINE), (
        "quichsd status should show the accepted and done counts"
    )


def test_reload_keeps_the_main_process(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert int(facts.get("reloaded", "0")) >= 1, unit.describe()
    assert facts["main_pid_after_reload"] == facts["main_pid"]
    assert facts["active_after_reload"] == "active"


def test_stop_is_clean(unit: ScenarioResult) -> None:
    facts = unit.facts
    assert facts.get("stop_rc") == "0", unit.describe()
    assert facts["state_after_stop"] == "inactive/success"
    assert facts["exit_status"] == "0"
    assert facts.get("ok") == "1", unit.describe()


def test_security_exposure_is_ok_or_better(unit: ScenarioResult) -> None:
    match = re.search(r": (\d+\.\d+) (\w+)", unit.facts.get("security", ""))
    assert match, unit.describe()
    assert float(match.group(1)) <= 2.0
    assert match.group(2) in ("SAFE", "OK")
