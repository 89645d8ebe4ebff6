"""The floor's scenarios by name, and the agents the NVMe scenario runs with.

A test names the scenarios it reads with ``@pytest.mark.vm_scenario(name, ...)``; the session
boots once with those (tests/vm/conftest.py).
"""

from __future__ import annotations

from .rig import REPO, SCENARIOS, Scenario

#: The project's venv on the host, visible read-only in the guest at the same path.
VENV = REPO / ".venv"
#: The agent command lines the NVMe scenario runs with (AGENT, see nvme_tls_psk.sh).
AGENTS = {
    "tlshd": "tlshd",
    "quichsd": f"{VENV}/bin/quichsd serve -s -c CONFIG",
}

#: Every scenario the floor knows, by name.
ALL_SCENARIOS: dict[str, Scenario] = {
    "kernel": Scenario("kernel", SCENARIOS / "kernel.sh", timeout=120),
    **{
        f"nvme_tls_psk[{agent}]": Scenario(
            f"nvme_tls_psk[{agent}]",
            SCENARIOS / "nvme_tls_psk.sh",
            env={"AGENT": command, "PORT": "4420", "MIB": "8"},
            timeout=240,
        )
        for agent, command in AGENTS.items()
    },
}
