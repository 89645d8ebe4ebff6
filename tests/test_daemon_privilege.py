# SPDX-License-Identifier: GPL-2.0-only
"""``privilege.confine()``, the call every worker makes before its first job, in a fresh
interpreter: what it leaves the process (capabilities, no_new_privs, the filter, fds) and
what the filter does to a forbidden call (the process dies by SIGSYS) or a harmless one
(an errno).  tests/test_daemon_e2e.py checks the same on the daemon's own workers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import pytest

#: Confines itself as a worker does (event loop first), reports, then runs ATTEMPT.
PROBE = textwrap.dedent(
    """
    import asyncio, json, os, socket, sys
    from quichsd.daemon import keyring, privilege

    given = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # as a request's socket arrives
    runner = asyncio.Runner()
    runner.get_loop()
    done = privilege.confine()
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
    report = {key: status[key].strip() for key in
              ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
    report["bounding"] = done.bounding
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if int(fd) > 2:
                fds.append(os.readlink(f"/proc/self/fd/{fd}").split(":")[0])
        except FileNotFoundError:  # listdir's own, closed already
            pass
    report["fds"] = sorted(fds)
    try:
        open(sys.argv[2] + "/written", "w")
    except OSError as exc:
        report["write"] = exc.errno
    report["read"] = len(open("/proc/self/cmdline", "rb").read()) > 0
    given.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    report["getsockopt"] = given.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    try:
        keyring.read_key(0x7fff_fff0)  # no such key: ENOKEY, not the filter
    except keyring.KeyringError as exc:
        report["keyctl"] = exc.errno
    report["loop"] = runner.run(asyncio.sleep(0, "ran"))
    print(json.dumps(report), flush=True)
    ATTEMPTS = {
        "netlink": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16),
        "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        "socketpair": lambda: socket.socketpair(),
        "fork": os.fork,
        "nothing": lambda: None,
    }
    ATTEMPTS[sys.argv[1]]()
    print("survived", flush=True)
    """
)


def run_probe(
    attempt: str, tmp_path: object, prefix: Sequence[str] = ()
) -> tuple[int, dict[str, object], str]:
    result = subprocess.run(
        [*prefix, sys.executable, "-c", PROBE, attempt, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    return result.returncode, json.loads(lines[0]), "\n".join(lines[1:])


def test_confined_process_holds_nothing(tmp_path: object) -> None:
    code, report, rest = run_probe("nothing", tmp_path)
    assert (code, rest) == (0, "survived")
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert report[key] == "0" * 16, key
    assert (report["NoNewPrivs"], report["Seccomp"]) == ("1", "2")
    assert report["bounding"] is True  # root here: CAP_SETPCAP, so the bounding set went too
    # the given socket, and the event loop's epoll and self-pipe: nothing else
    assert report["fds"] == ["anon_inode", "socket", "socket", "socket"]
    assert report["write"] == 13  # EACCES: files are read-only to a worker
    assert report["read"] is True
    assert report["getsockopt"] == 2  # SOCK_DGRAM
    assert report["keyctl"] == 126  # ENOKEY: keyctl is allowed
    assert report["loop"] == "ran"


@pytest.mark.parametrize("attempt", ["netlink", "udp", "socketpair", "fork"])
def test_forbidden_call_kills_by_sigsys(attempt: str, tmp_path: object) -> None:
    code, report, rest = run_probe(attempt, tmp_path)
    assert report["Seccomp"] == "2"
    assert code == -signal.SIGSYS, rest
    assert "survived" not in rest


NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def _nobody_can_import() -> bool:
    """Whether nobody reaches this interpreter and checkout (not so under a 0700 /root)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return False
    probe = [setpriv, *NOBODY, sys.executable, "-c", "import quichsd.daemon.privilege"]
    return subprocess.run(probe, capture_output=True, timeout=60, check=False).returncode == 0


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(
    not _nobody_can_import(),
    reason="nobody cannot import quichsd here (a checkout or interpreter under a 0700 folder)",
)
def test_an_unprivileged_process_confines_too(tmp_path: object) -> None:
    """A daemon run as an ordinary user (nobody, no capability): the same drop works; only
    the bounding set stays, which no_new_privs and the filter (no execve) leave unusable."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    nobody = [setpriv, *NOBODY]
    code, report, rest = run_probe("nothing", tmp_path, nobody)
    assert (code, rest) == (0, "survived")
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert report[key] == "0" * 16, key
    assert (report["NoNewPrivs"], report["Seccomp"], report["bounding"]) == ("1", "2", False)
    assert report["keyctl"] == 126 and report["loop"] == "ran"
