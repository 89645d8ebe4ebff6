# SPDX-License-Identifier: GPL-2.0-only
"""The shipped daemon apart from its test models (issue 10, items 1 and 2).

The daemon's runtime path imports no userspace model, aioquic or qh3; the wheel carries
no test support; without aioquic the userspace commands say in one line what to install.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from test_packaging import wheel  # noqa: F401  (the module-scoped wheel fixture)

REPO = Path(__file__).resolve().parents[1]
#: The aioquic release of the ``userspace`` extra (the one the model's hooks are for).
(AIOQUIC_VERSION,) = [
    match.group(1)
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["userspace"]
    if (match := re.fullmatch(r"aioquic==(\S+)", requirement))
]
INSTALL_HINT = "pip install 'quichsd[userspace]'"
HAVE_AIOQUIC = importlib.util.find_spec("aioquic") is not None

#: Everything the daemon runs: the parent, the fork server, the workers, both transports.
DAEMON_MODULES = (
    "quichsd.daemon.main",
    "quichsd.daemon.wiring",
    "quichsd.daemon.service",
    "quichsd.daemon.pool",
    "quichsd.daemon.forkserver",
    "quichsd.daemon.worker",
    "quichsd.daemon.handler",
    "quichsd.daemon.dispatch",
    "quichsd.daemon.jobs.quic",
    "quichsd.daemon.jobs.tcp",
)

#: Prints the modules that must not be loaded after importing the daemon and `serve --help`.
DAEMON_PATH_PROBE = f"""
import contextlib, importlib, io, sys
for name in {DAEMON_MODULES!r}:
    importlib.import_module(name)
from quichsd.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(["serve", "--help"])
banned = ("quichsd.userspace", "aioquic", "qh3", "quichsd.tls.memory", "quichsd.tls.selfsigned")
print(sorted(m for m in sys.modules if m.startswith(banned)))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_the_daemon_path_loads_no_model_and_no_quic_stack() -> None:
    result = _python(DAEMON_PATH_PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_serve_has_no_hidden_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quichsd.cli", "serve", "--model-family", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --model-family x" in result.stderr


def test_the_wheel_carries_no_test_support(wheel: Path) -> None:  # noqa: F811
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    python = {n for n in names if n.endswith(".py")}
    assert not [n for n in names if n.startswith(("tests/", "quichsd/model/"))]
    for gone in (
        "quichsd/ktls/soft.py",
        "quichsd/ktls/selftest.py",
        "quichsd/daemon_demo.py",
        "quichsd/userspace/family_faults.py",
        "quichsd/userspace/streams.py",
    ):
        assert gone not in python, gone
    # The optional feature is installed, behind its extra.
    for kept in (
        "quichsd/userspace/aioquic_seam.py",
        "quichsd/userspace/serve.py",
        "quichsd/userspace/daemon_demo.py",
        "quichsd/tls/selfsigned.py",
    ):
        assert kept in python, kept
    assert "Provides-Extra: userspace" in metadata
    assert f'Requires-Dist: aioquic=={AIOQUIC_VERSION}; extra == "userspace"' in metadata


#: The CLI with aioquic unimportable (None in sys.modules stops every import of it).
WITHOUT_AIOQUIC = (
    "import sys; sys.modules['aioquic'] = None; "
    "from quichsd.cli import main; sys.exit(main(sys.argv[1:]))"
)
#: The CLI with another aioquic release than the model's hooks were written against.
OTHER_AIOQUIC = (
    "import sys, aioquic; aioquic.__version__ = '0.9.0'; "
    "from quichsd.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize(
    "command",
    [
        ("demo", "--daemon"),
        ("handshake", "client", "127.0.0.1", "4433", "--userspace"),
        ("handshake", "server", "127.0.0.1", "4433", "--userspace"),
    ],
    ids=["demo --daemon", "handshake client", "handshake server"],
)
@pytest.mark.parametrize(
    ("code", "why"),
    [
        (WITHOUT_AIOQUIC, ""),
        pytest.param(
            OTHER_AIOQUIC,
            ", not 0.9.0",
            marks=pytest.mark.skipif(not HAVE_AIOQUIC, reason="aioquic is not installed"),
        ),
    ],
    ids=["missing", "other release"],
)
def test_without_aioquic_one_line_says_what_to_install(
    command: tuple[str, ...], code: str, why: str
) -> None:
    result = _python(code, *command)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"quichsd: the userspace model needs aioquic {AIOQUIC_VERSION}{why}: {INSTALL_HINT}"
    ]
