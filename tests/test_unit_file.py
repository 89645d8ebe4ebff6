# SPDX-License-Identifier: GPL-2.0-only
"""systemd/quichsd.service: its directives, systemd's own verdicts, and the daemon in its sandbox.

* The unit says what the daemon needs (Type=notify, reload, restart, tlshd's
  ordering) and the sandbox settings chosen in quichsd(8).
* ``systemd-analyze verify`` accepts it and ``systemd-analyze security
  --offline=true`` rates it at most ``MAX_EXPOSURE`` (skipped, with the
  reason, where systemd-analyze is missing).
* The daemon does real handshakes inside an approximation of that sandbox,
  built without systemd (``tests/unit_sandbox.py``): the capability bounding
  set reduced to CAP_NET_ADMIN and CAP_SETPCAP, no new privileges, the unit's system-call
  allow-list (expanded by ``systemd-analyze syscall-filter``) with EPERM for
  the rest, socket(2) limited to AF_UNIX and AF_NETLINK, and no
  writable+executable memory (PR_SET_MDWE).
"""

from __future__ import annotations

import ctypes.util
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import quichsd.userspace.daemon_process as rig_module
from quichsd.daemon.config import HANDSHAKES_PER_WORKER, MAX_WORKERS
from quichsd.install import render_unit
from quichsd.tls.selfsigned import issue, make_ca
from quichsd.userspace import ModelQuicListener
from quichsd.userspace.family import FamilyModel
from tests.support.procfs import proc_status
from tests.support.rig import DaemonRig, config_text

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "quichsd.service"
#: systemd-analyze security's exposure for the unit (0 best, 10 worst); "OK" is below 5.
MAX_EXPOSURE = 2.0
GOOD_BADGES = ("PERFECT", "SAFE", "OK")
AF_UNIX, AF_NETLINK = 1, 16
CAP_NET_ADMIN = 1 << 12
WAIT = 15.0


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section → key → values (a key may repeat, as SystemCallFilter= does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values is not None, f"{key}= missing"
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


def test_service_lifecycle_directives(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "ExecStart").split()[1:] == ["serve"]
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "Restart") == "on-failure"
    assert re.fullmatch(r"\d+s", one(service, "WatchdogSec"))
    assert "SSLKEYLOGFILE" in one(service, "UnsetEnvironment")


def test_open_files_limit_covers_the_pools_maximum(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    """The parent holds an fd per request in flight: the largest pool the configuration
    allows, plus one channel per worker, must fit (an ACCEPT beyond fails EMFILE)."""
    limit = int(one(unit["Service"], "LimitNOFILE"))
    pool = MAX_WORKERS * HANDSHAKES_PER_WORKER
    assert pool + MAX_WORKERS + 64 <= limit <= 2 * pool


def test_ordering_is_tlshds(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit["Unit"], "DefaultDependencies") == "no"
    assert one(unit["Unit"], "Before") == "remote-fs-pre.target"
    assert one(unit["Unit"], "Conflicts") == "tlshd.service"
    assert one(unit["Install"], "WantedBy") == "remote-fs.target"
    assert "man:quichsd(8)" in one(unit["Unit"], "Documentation")


def test_sandbox_directives(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    # CAP_SETPCAP: the workers empty their bounding sets with it; the parent drops it
    assert one(service, "CapabilityBoundingSet") == "CAP_NET_ADMIN CAP_SETPCAP"
    assert one(service, "AmbientCapabilities") == ""
    assert one(service, "KeyringMode") == "private"
    assert set(one(service, "RestrictAddressFamilies").split()) == {"AF_NETLINK", "AF_UNIX"}
    assert one(service, "RuntimeDirectory") == "quichsd"
    assert one(service, "RuntimeDirectoryMode") == "0700"
    assert one(service, "ProtectSystem") == "strict"
    assert service["SystemCallFilter"] == [
        "@system-service",
        "~@privileged @resources",
        "capset seccomp",  # the workers' own drop: zeroed capabilities, a narrower filter
    ]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert one(service, key) == "yes", key
    assert one(service, "SystemCallArchitectures") == "native"
    # The namespaces the handshake family and the keyrings live in stay the host's.
    for key in ("PrivateNetwork", "PrivateUsers", "ProcSubset", "DynamicUser"):
        assert key not in service, f"{key}= would break the daemon (see quichsd(8))"


# -- systemd-analyze ----------------------------------------------------------------------------


#: The tests that run systemd-analyze say so up front, so the report shows what ran.
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path is not None, "mark the test needs_systemd_analyze"
    return path


@pytest.fixture
def staged_unit(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The unit with ExecStart= on this checkout's quichsd, and MANPATH with our pages."""
    executable = Path(sys.executable).with_name("quichsd")
    if not executable.exists():
        pytest.skip("the quichsd console script is not installed in this environment")
    unit = tmp_path / "quichsd.service"
    unit.write_text(render_unit(UNIT.read_text(), str(executable)))
    for page, section in (("quichsd.8", "man8"), ("quichsd.conf.5", "man5")):
        (tmp_path / "man" / section).mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "docs" / "man" / page, tmp_path / "man" / section / page)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MANPATH": str(tmp_path / "man")}
    return unit, env


@needs_systemd_analyze
@pytest.mark.skipif(
    shutil.which("man") is None, reason="no man(1): verify would fail on Documentation="
)
def test_systemd_analyze_verify(staged_unit: tuple[Path, dict[str, str]]) -> None:
    analyze = _systemd_analyze()
    unit, env = staged_unit
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, env=env, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "quichsd" in line]
    assert result.returncode == 0 and not complaints, result.stderr


@needs_systemd_analyze
def test_systemd_analyze_security_score(staged_unit: tuple[Path, dict[str, str]]) -> None:
    analyze = _systemd_analyze()
    unit, env = staged_unit
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure, badge = float(match.group(1)), match.group(2)
    assert badge in GOOD_BADGES, result.stdout
    assert exposure <= MAX_EXPOSURE, result.stdout


# -- the daemon in the sandbox ------------------------------------------------------------------


def _syscall_groups(analyze: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [analyze, "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        entry = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(entry, [])
        elif current is not None and entry and not entry.startswith("#"):
            current.append(entry)
    return groups


def _expand(groups: dict[str, list[str]], name: str) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(_expand(groups, item) for item in groups[name]))


def unit_syscalls(analyze: str, filters: list[str]) -> set[str]:
    """The allow-list that SystemCallFilter= lines describe (allow first, then ~removals)."""
    groups = _syscall_groups(analyze)
    allowed: set[str] = set()
    for line in filters:
        if line.startswith("~"):
            for name in line[1:].split():
                allowed -= _expand(groups, name)
        else:
            for name in line.split():
                allowed |= _expand(groups, name)
    return allowed


@pytest.fixture
def sandboxed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unit: dict[str, dict[str, list[str]]]
) -> Iterator[None]:
    """Makes DaemonRig start ``quichsd serve`` inside the unit's sandbox (approximated)."""
    sandbox(monkeypatch, tmp_path, unit["Service"]["SystemCallFilter"])
    yield


def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filters: list[str]) -> None:
    """Runs the rig's daemons under ``filters`` (SystemCallFilter= lines) and the rest of
    the unit's sandbox."""
    analyze = _systemd_analyze()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "the test is marked: setpriv is installed"
    allow = tmp_path / "syscalls"
    allow.write_text("\n".join(sorted(unit_syscalls(analyze, filters))))
    production = rig_module.daemon_command

    def command(
        config: Path, family_address: str, entry: Sequence[str] = rig_module.DAEMON_ENTRY
    ) -> list[str]:
        return [
            setpriv,
            "--bounding-set=-all,+net_admin,+setpcap",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
            sys.executable,
            str(Path(__file__).with_name("unit_sandbox.py")),
            "--allow",
            str(allow),
            "--families",
            f"{AF_UNIX},{AF_NETLINK}",
            "--mdwe",
            "--",
            *production(config, family_address, entry),
        ]

    monkeypatch.setattr(rig_module, "daemon_command", command)


# What the approximated sandbox is built from; without them the report says it did not run.
@needs_systemd_analyze
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed"
)
def test_daemon_handshakes_inside_the_unit_sandbox(sandboxed: None, tmp_path: Path) -> None:
    """X.509 and PSK, both roles, with the status socket on: all inside the sandbox."""
    ca = make_ca("quichsd sandbox CA")
    leaf = issue(ca, ("server.test",))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "chain.pem").write_bytes(leaf.cert_pem + ca.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    status_socket = tmp_path / "run" / "status.sock"
    config = config_text(
        client={"x509.truststore": tmp_path / "ca.pem"},
        server={
            "x509.certificate": tmp_path / "chain.pem",
            "x509.private_key": tmp_path / "key.pem",
        },
        extra=f"status_socket={status_socket}\n",
    )
    with DaemonRig(config) as rig:
        status = proc_status(rig.pid)
        assert int(status["CapBnd"], 16) == CAP_NET_ADMIN
        assert int(status["CapEff"], 16) == CAP_NET_ADMIN
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter is installed
        for worker in rig.wait_workers(1):  # the workers' own drop works under the unit's filter
            deadline = time.monotonic() + WAIT
            # its own filter on top of the unit's, which it inherited
            while (status := proc_status(worker))["Seccomp_filters"] == "1":
                assert time.monotonic() < deadline, rig.log()
                time.sleep(0.01)
            caps = [int(status[key], 16) for key in ("CapPrm", "CapEff", "CapBnd", "CapAmb")]
            assert (caps, status["NoNewPrivs"], status["Seccomp"]) == ([0] * 4, "1", "2")
        serial = rig.add_psk(f"sandbox-{secrets.token_hex(4)}", secrets.token_bytes(32))
        with ModelQuicListener(alpn=["echo"]) as listener:
            x509_client = rig.client_request(listener.address, "x509", peername="server.test")
            x509_server = rig.server_request(listener, "x509")
            psk_client = rig.client_request(listener.address, "psk", peer_identities=[serial])
            psk_server = rig.server_request(listener, "psk")
            statuses = [
                r.handle.wait(WAIT).status
                for r in (x509_client, x509_server, psk_client, psk_server)
            ]
        assert statuses == [0, 0, 0, 0], rig.log()
        assert status_socket.exists(), rig.log()
        rig.check_invariants()
        assert rig.stop() == 0
        assert "Traceback" not in rig.log()


@needs_systemd_analyze
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed"
)
@pytest.mark.parametrize(
    ("left_out", "said"),
    [
        ("capset", "quichsd: cannot drop privileges: capset: Operation not permitted"),
        ("seccomp", "a worker cannot drop its privileges: seccomp_init: libseccomp found no"),
    ],
)
def test_a_daemon_that_cannot_drop_privilege_stops(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unit: dict[str, dict[str, list[str]]],
    left_out: str,
    said: str,
) -> None:
    """A filter without what the privilege drop needs (the unit before workers dropped
    their privileges, or an override that narrows it): nothing is served unconfined, no
    failing worker is forked after another; the daemon says why and exits 1."""
    filters = [
        " ".join(n for n in line.split() if n != left_out)
        for line in unit["Service"]["SystemCallFilter"]
    ]
    # And taken out after the groups: systemd 257's groups name seccomp(2) themselves.
    filters.append(f"~{left_out}")
    sandbox(monkeypatch, tmp_path, [line for line in filters if line])
    with FamilyModel(address=str(tmp_path / "family.sock")) as family:
        config = tmp_path / "quichsd.conf"
        config.write_text(config_text(status_socket=tmp_path / "status.sock"))
        code, log = rig_module.run_daemon_once(config, family.address)
    assert code == 1, log
    assert said in log
    assert "Traceback" not in log
