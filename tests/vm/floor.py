# SPDX-License-Identifier: GPL-2.0-only
"""The floor's scenarios by name, and the agents the NVMe scenario runs with.

A test names the scenarios it reads with ``@pytest.mark.vm_scenario(name, ...)``; the session
boots once with those (tests/vm/conftest.py).
"""

from __future__ import annotations

import os
import subprocess

from .rig import REPO, SCENARIOS, Scenario

#: The project's venv on the host, visible read-only in the guest at the same path.
VENV = REPO / ".venv"
#: The userlands quichsd can run on in the guest: "sid", the sid chroot's own Python and
#: GnuTLS 3.8 (quichsd's venv there, vm/sid-venv), the same userland as Debian's tlshd; and
#: "host", the host's Python and GnuTLS (.venv; the GnuTLS 3.7 line on bookworm).
USERLANDS = ("sid", "host")


def userland() -> str:
    """The userland under test: QUICHSD_VM_USERLAND, "sid" unless set."""
    chosen = os.environ.get("QUICHSD_VM_USERLAND", "sid") or "sid"
    if chosen not in USERLANDS:
        raise ValueError(f"QUICHSD_VM_USERLAND={chosen!r}: one of {', '.join(USERLANDS)}")
    return chosen


def sid_venv() -> str:
    """The sid venv's path inside the chroot (vm/sid-venv path: a hash of the build inputs)."""
    out = subprocess.run(
        [str(REPO / "vm" / "sid-venv"), "path"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def quichsd_command(land: str) -> str:
    """quichsd's AGENT command line (tests/vm/scenarios/agent.sh) on that userland."""
    if land == "sid":
        return f"sid {sid_venv()}/bin/quichsd serve -s -c CONFIG"
    return f"{VENV}/bin/quichsd serve -s -c CONFIG"


def run_python(land: str, code: str) -> str:
    """``code`` run on the host by that userland's Python: the sid venv's in the chroot
    (vm/chroot-run), or the checkout's .venv."""
    python = (
        [str(REPO / "vm" / "chroot-run"), "python"]
        if land == "sid"
        else [str(VENV / "bin" / "python")]
    )
    out = subprocess.run(
        [*python, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.strip()


def userland_facts(land: str) -> dict[str, str]:
    """Python and GnuTLS versions of the userland, and whether its GnuTLS binds an external
    PSK's binder to the PSK's own hash (3.8.11 and later; see quichsd/tls/binding.py)."""
    code = (
        "import platform\n"
        "from importlib.metadata import version\n"
        "from quichsd.tls.binding import gnutls_version, psk_binder_hash_supported\n"
        "print(platform.python_version(), gnutls_version(), psk_binder_hash_supported(),"
        " version('pyroute2'))"
    )
    python, gnutls, binder, pyroute2 = run_python(land, code).split()
    return {"python": python, "gnutls": gnutls, "binder_hash": binder, "pyroute2": pyroute2}


USERLAND = userland()
#: The agent command lines the NVMe scenario runs with (AGENT, see nvme_tls_psk.sh).
AGENTS = {
    "tlshd": "tlshd",
    "quichsd": quichsd_command(USERLAND),
}

#: Every scenario the floor knows, by name.
ALL_SCENARIOS: dict[str, Scenario] = {
    "kernel": Scenario("kernel", SCENARIOS / "kernel.sh", env={"USERLAND": USERLAND}, timeout=120),
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
#: The systemd boot runs the host's systemd and, in it, the unit on the host's venv (a unit
#: cannot name a chroot's interpreter without RootDirectory=): the host userland only.
ALL_SCENARIOS["systemd_unit"] = Scenario(
    "systemd_unit",
    SCENARIOS / "systemd_unit.sh",
    env={"PORT": "4422"},
    timeout=300,
    systemd=True,
)
