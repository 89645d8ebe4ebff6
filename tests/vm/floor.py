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

# -- NFS over TLS and failure scenarios (tests/vm/test_tls_nfs.py, test_tls_failures.py) ------
#: The same agents serve the NFS scenario: tlshd as the reference, quichsd under test.
NFS_AGENTS = AGENTS
ALL_SCENARIOS.update(
    {
        f"nfs_tls[{agent}]": Scenario(
            f"nfs_tls[{agent}]",
            SCENARIOS / "nfs_tls.sh",
            env={"AGENT": command, "KEY_KIND": "rsa"},
            timeout=240,
        )
        for agent, command in NFS_AGENTS.items()
    }
)
ALL_SCENARIOS["nvme_failures[quichsd]"] = Scenario(
    "nvme_failures[quichsd]",
    SCENARIOS / "nvme_failures.sh",
    env={"AGENT": AGENTS["quichsd"], "PORT": "4421", "THREADS": "4", "TERM_AFTER": "10"},
    timeout=240,
)
#: Variants of the NVMe PSK scenario with quichsd, 1 MiB each, on ports of their own: a SHA-384
#: PSK, and the host's PSK in a keyring named by ACCEPT's KEYRING attribute.
for variant, port, extra in (
    ("sha384", "4423", {"HMAC": "2"}),
    ("keyring", "4424", {"HOST_KEYRING": "qd_host"}),
):
    name = f"nvme_tls_psk_{variant}[quichsd]"
    ALL_SCENARIOS[name] = Scenario(
        name,
        SCENARIOS / "nvme_tls_psk.sh",
        env={"AGENT": AGENTS["quichsd"], "PORT": port, "MIB": "1", **extra},
        timeout=240,
    )
ALL_SCENARIOS["systemd_unit"] = Scenario(
    "systemd_unit",
    SCENARIOS / "systemd_unit.sh",
    env={"PORT": "4422"},
    timeout=300,
    systemd=True,
)
