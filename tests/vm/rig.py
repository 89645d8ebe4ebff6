# SPDX-License-Identifier: GPL-2.0-only
"""Python side of the real-kernel rig: ``vm/fetch`` and ``vm/run`` driven from pytest.

A boot costs a few seconds plus TCG slowness, so a test session boots once and runs every
scenario it needs inside that one VM (``Rig.run_scenarios``); each scenario is a shell
script run with its own time limit, its output, exit status and ``@@ key value`` facts
collected separately, so one scenario's failure does not hide another's result.

Whether the rig can be built here is decided by ``Rig.prepare()``: it raises
``RigUnavailable`` only for reasons of the machine (not root, not x86-64 Linux, Debian's
archive out of reach); any other failure of ``vm/fetch`` is a ``RigError``. The pytest
fixtures turn ``RigUnavailable`` into a skip, except under CI (``CI`` set) or with
``QUICHSD_VM=require``, where the floor must run and it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def debian_mirror() -> str | None:
    """The mirror vm/fetch uses: QUICHSD_VM_MIRROR, else the host's own (vm/mirror.py)."""
    if os.environ.get("QUICHSD_VM_MIRROR"):
        return os.environ["QUICHSD_VM_MIRROR"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "vm" / "mirror.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


class RigUnavailable(Exception):
    """The rig cannot be built on this machine (a reason to skip outside CI)."""


class RigError(Exception):
    """Building or booting the rig failed for a reason that is a real failure."""


@dataclass(frozen=True)
class Scenario:
    """One script to run in the guest; ``env`` is exported to it."""

    name: str
    script: Path
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 180.0
    #: Runs in a boot where systemd is PID 1 (VM_SYSTEMD=1, see vm/guest/init); such a boot
    #: runs only such scenarios.
    systemd: bool = False


@dataclass
class ScenarioResult:
    name: str
    rc: int | None  # None: it never finished (the VM died or the boot timed out)
    output: str
    facts: dict[str, str]
    seconds: float | None

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self, tail: int = 60) -> str:
        lines = self.output.splitlines()
        shown = "\n".join(lines[-tail:])
        return f"scenario {self.name}: exit {self.rc} after {self.seconds} s\n{shown}"


@dataclass
class VmRun:
    rc: int
    output: str
    work: Path
    wall_seconds: float
    boot_seconds: float | None  # guest uptime when the command started
    command_seconds: float | None

    @property
    def console(self) -> str:
        path = self.work / "vm.console"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def timed_out(self) -> bool:
        return self.rc == 124


@dataclass
class Boot:
    run: VmRun
    scenarios: dict[str, ScenarioResult]

    def __getitem__(self, name: str) -> ScenarioResult:
        return self.scenarios[name]


def parse_facts(output: str) -> dict[str, str]:
    """``@@ key value...`` lines; the last one for a key wins."""
    facts: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("@@ "):
            key, _, value = line[3:].partition(" ")
            facts[key] = value.strip()
    return facts


def _read_times(path: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                times[parts[0]] = float(parts[1])
    return times


def _run_group(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs cmd in its own session; on timeout or any interruption (pytest-timeout, ^C) the
    whole process group goes (QEMU and virtiofsd with vm/run), TERM first so vm/run cleans up."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, None)
    finally:
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group


def _archive_reachable(mirror: str, timeout: float = 5.0) -> bool:
    host = mirror.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 80)), timeout=timeout):
            return True
    except OSError:
        return False


class Rig:
    def __init__(self, repo: Path = REPO, cache: Path | None = None) -> None:
        self.repo = repo
        env_cache = os.environ.get("QUICHSD_VMCACHE")
        self.cache = cache or (Path(env_cache) if env_cache else repo / ".vmcache")
        self.mirror = debian_mirror()
        self.fetch_log = ""
        self.fetch_seconds: float | None = None

    # -- building ---------------------------------------------------------------------
    def ready(self) -> bool:
        return (self.cache / "kernel" / ".complete").exists() and (
            self.cache / "sid" / ".complete"
        ).exists()

    def check_machine(self) -> None:
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            raise RigUnavailable(
                f"needs x86-64 Linux, not {platform.system()} {platform.machine()}"
            )
        if os.geteuid() != 0:
            raise RigUnavailable("needs root (apt-get, debootstrap, virtiofsd, mount namespaces)")
        if not Path("/usr/bin/apt-get").exists():
            raise RigUnavailable("needs a Debian host (apt-get) to install QEMU and debootstrap")

    def prepare(self, timeout: float = 1500.0) -> str:
        """Runs vm/fetch (a no-op when the cache is complete); returns its output."""
        self.check_machine()
        if self.mirror is None:
            raise RigUnavailable(
                "no Debian mirror in the host's apt configuration and QUICHSD_VM_MIRROR unset"
            )
        if not self.ready() and not _archive_reachable(self.mirror):
            raise RigUnavailable(
                f"Debian's archive ({self.mirror}) is out of reach and {self.cache} "
                "holds no complete kernel + sid chroot"
            )
        start = time.monotonic()
        try:
            fetch = [str(self.repo / "vm" / "fetch"), "--cache", str(self.cache)]
            proc = _run_group([*fetch, "--mirror", self.mirror], timeout)
        except subprocess.TimeoutExpired as exc:
            raise RigError(f"vm/fetch took more than {timeout} s") from exc
        self.fetch_seconds = time.monotonic() - start
        self.fetch_log = proc.stdout
        # The guest cannot write .pyc files into the read-only host tree: compile here, for
        # the host's Python and for sid's (the chroot's venv, vm/chroot-run).
        venv_python = self.repo / ".venv" / "bin" / "python"
        compilers = [[str(venv_python)]] if venv_python.exists() else []
        compilers.append(
            [
                str(self.repo / "vm" / "chroot-run"),
                "--cache",
                str(self.cache),
                "--no-overlay",
                "python",
            ]
        )
        for python in compilers if proc.returncode == 0 else []:
            subprocess.run(
                [*python, "-m", "compileall", "-q", str(self.repo / "quichsd")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                env={**os.environ, "QUICHSD_VMCACHE": str(self.cache)},
            )
        if proc.returncode != 0:
            if not _archive_reachable(self.mirror):
                raise RigUnavailable(
                    f"vm/fetch failed and Debian's archive is out of reach:\n{proc.stdout[-2000:]}"
                )
            raise RigError(f"vm/fetch failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
        return proc.stdout

    # -- booting ----------------------------------------------------------------------
    def new_work(self) -> Path:
        runs = self.cache / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        old = sorted(runs.glob("pytest.*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[19:]:  # keep the 20 most recent boots' folders
            shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="pytest.", dir=runs))

    def run(
        self,
        script: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        work: Path | None = None,
        systemd: bool = False,
    ) -> VmRun:
        """One boot running ``script args...``; the script's path must be visible in the
        guest (anywhere on the host's root but /tmp, /run, /var/tmp and /root). With
        ``systemd`` the host's systemd is PID 1 and runs the script as a service."""
        work = work or self.new_work()
        cmd = [
            str(self.repo / "vm" / "run"),
            "--cache",
            str(self.cache),
            "--work",
            str(work),
            "--timeout",
            str(int(timeout)),
            "-q",
        ]
        for key, value in {**(env or {}), **({"VM_SYSTEMD": "1"} if systemd else {})}.items():
            cmd += ["-e", f"{key}={value}"]
        cmd += ["--", str(script), *args]
        start = time.monotonic()
        try:
            proc = _run_group(cmd, timeout + 60)
        except subprocess.TimeoutExpired as exc:  # vm/run's own limit should strike first
            raise RigError(f"vm/run did not return within {timeout + 60} s") from exc
        wall = time.monotonic() - start
        times = _read_times(work / "vm.times")
        boot = times.get("start")
        command = times["end"] - times["start"] if "start" in times and "end" in times else None
        return VmRun(proc.returncode, proc.stdout, work, wall, boot, command)

    def run_scenarios(self, scenarios: Iterable[Scenario], timeout: float | None = None) -> Boot:
        """Boots once and runs the scenarios one after the other, each under its own limit."""
        chosen = list(scenarios)
        names = [s.name for s in chosen]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario names must be unique: {names}")
        kinds = {s.systemd for s in chosen}
        if len(kinds) > 1:
            raise ValueError(f"systemd and plain scenarios need separate boots: {names}")
        work = self.new_work()
        driver = work / "scenarios.sh"
        driver.write_text(_driver_script(work, chosen))
        driver.chmod(0o755)
        limit = timeout or (60.0 + sum(s.timeout + 10 for s in chosen))
        run = self.run(driver, timeout=limit, work=work, systemd=kinds == {True})
        results: dict[str, ScenarioResult] = {}
        for index, sc in enumerate(chosen):
            folder = work / f"{index:02d}-{_slug(sc.name)}"
            out_path, rc_path = folder / "out", folder / "rc"
            output = out_path.read_text(errors="replace") if out_path.exists() else ""
            rc = int(rc_path.read_text().split()[0]) if rc_path.exists() else None
            secs_path = folder / "seconds"
            secs = float(secs_path.read_text()) if secs_path.exists() else None
            results[sc.name] = ScenarioResult(sc.name, rc, output, parse_facts(output), secs)
        return Boot(run, results)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _driver_script(work: Path, scenarios: Sequence[Scenario]) -> str:
    """A guest script running each scenario under coreutils ``timeout`` (which signals the
    scenario's whole process group, agents included), in a subshell with its environment."""
    lines = [
        "#!/bin/sh",
        "# written by tests/vm/rig.py: runs each scenario in turn, results per folder",
        'up() { read -r u _ < /proc/uptime; echo "$u"; }',
        "failed=0",
    ]
    for index, sc in enumerate(scenarios):
        folder = work / f"{index:02d}-{_slug(sc.name)}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sc.env.items())
        argv = " ".join(shlex.quote(a) for a in (str(sc.script), *sc.args))
        q = shlex.quote
        lines += [
            f"mkdir -p {q(str(folder))}",
            f'echo ">>> {sc.name}"',
            "t0=$(up)",
            f"( export SCENARIO_TAG={q(_slug(sc.name))} {exports}; "
            f"exec timeout -k 5 {int(sc.timeout)} {argv} )"
            f" > {q(str(folder / 'out'))} 2>&1 </dev/null",
            "rc=$?",
            f'echo "$rc" > {q(str(folder / "rc"))}',
            f'awk "BEGIN{{printf \\"%.2f\\", $(up) - $t0}}" > {q(str(folder / "seconds"))}',
            f'echo "<<< {sc.name}: exit $rc in $(cat {q(str(folder / "seconds"))}) s"',
            '[ "$rc" = 0 ] || failed=1',
        ]
    lines.append("exit $failed")
    return "\n".join(lines) + "\n"
