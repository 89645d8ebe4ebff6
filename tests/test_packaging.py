# SPDX-License-Identifier: GPL-2.0-only
"""Packaging: the wheel (binding, entry point, unit, example, man pages), install-service from
the wheel and from the checkout, the example configuration, the man pages, the help texts."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from quichsd.cli import build_parser
from quichsd.cli import main as cli_main
from quichsd.daemon import config as config_module
from quichsd.daemon.config import load_config
from quichsd.daemon.journal import HandshakeRecord

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "etc" / "tlshd-config.example"
MAN8 = REPO / "docs" / "man" / "quichsd.8"
MAN5 = REPO / "docs" / "man" / "quichsd.conf.5"
PIP_TIMEOUT = 300
PIP = (sys.executable, "-m", "pip")
EXEC = ("--exec", "/usr/sbin/quichsd")


def _source_files() -> list[Path]:
    """What a clean checkout has (tracked, or new and not ignored), without tests and tools."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git cannot list the checkout's files")
    skip = ("tests/", "bench/", "vm/", ".ci/", "docs/ARCHITECTURE")
    names = [n for n in listed.decode().split("\0") if n and not n.startswith(skip)]
    return [Path(n) for n in names if (REPO / n).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a copy of the checkout (the repository's build/ stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("quichsd-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    binding = [n for n in names if re.fullmatch(r"quichsd/tls/_gnutls\..*\.so", n)]
    assert binding, sorted(names)
    assert "quichsd = quichsd.cli:main" in entry_points
    assert top_level == ["quichsd"], "only quichsd: no 'systemd' package to shadow systemd-python"
    data = dist_info.replace(".dist-info", ".data") + "/data/share"
    for name in (
        "quichsd/quichsd.service",
        "quichsd/tlshd-config.example",
        "man/man8/quichsd.8",
        "man/man5/quichsd.conf.5",
    ):
        assert f"{data}/{name}" in names, name
    assert "Requires-Dist: systemd-python" in metadata


def _tracked(*folders: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *folders], cwd=REPO, capture_output=True, timeout=60
    )
    if listed.returncode != 0:
        pytest.skip("git cannot list the checkout's files")
    return {name for name in listed.stdout.decode().split("\0") if name}


def test_sdist_carries_what_the_tests_need(tmp_path: Path) -> None:
    """A packager runs the tests from the sdist: conftest.py, the *_support modules, the
    VM floor (tests/vm, vm/), the scripts, the man pages, the license; no build output."""
    source = tmp_path / "source"
    for name in _tracked("."):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta as b; "
            "print(b.build_sdist(sys.argv[1]))",
            str(out),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (sdist,) = out.glob("quichsd-*.tar.gz")
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {n.partition("/")[2] for n in archive.getnames()}
    wanted = _tracked("tests", "vm", "scripts", "docs/man", "etc", "systemd", "quichsd")
    wanted |= {"LICENSE", "Makefile", "README.md", "pyproject.toml", "setup.py"}
    assert {"tests/conftest.py", "tests/ops_support.py", "tests/vm/rig.py"} <= wanted
    assert not sorted(wanted - names), top
    assert not [n for n in names if n.endswith((".o", ".so", ".pyc"))]


def _unpack(wheel: Path, prefix: Path) -> Path:
    """Installs ``wheel`` under ``prefix`` as pip would, without pip: pip would also look at
    (and uninstall from) the environment running the tests."""
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            head, _, rest = member.filename.partition("/")
            if head.endswith(".data"):
                scheme, _, path = rest.partition("/")
                assert scheme == "data", member.filename
                target = prefix / path
            else:
                target = site / member.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    return site


def test_install_service_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    prefix, root = tmp_path / "prefix", tmp_path / "root"
    site = _unpack(wheel, prefix)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import quichsd.tls._gnutls as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert probe.returncode == 0 and probe.stdout.startswith(str(site)), probe
    run = subprocess.run(
        [sys.executable, "-m", "quichsd.cli", "install-service", "--destdir", str(root), *EXEC],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    unit = (root / "etc/systemd/system/quichsd.service").read_text()
    assert "ExecStart=/usr/sbin/quichsd serve" in unit
    assert (root / "etc/tlshd/config").read_bytes() == EXAMPLE.read_bytes()
    assert (root / "usr/local/share/man/man8/quichsd.8").read_bytes() == MAN8.read_bytes()
    assert f"installed {root}/etc/systemd/system/quichsd.service" in run.stdout


def test_install_service_from_the_checkout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert cli_main(["install-service", "--destdir", str(root), "--no-man"]) == 0
    unit = root / "etc/systemd/system/quichsd.service"
    config = root / "etc/tlshd/config"
    exec_start = re.search(r"^ExecStart=(\S+) serve$", unit.read_text(), re.MULTILINE)
    assert exec_start and Path(exec_start.group(1)).is_absolute()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert not (root / "usr").exists()
    # An administrator's configuration is never replaced.
    config.write_text("[debug]\nloglevel=1\n")
    assert cli_main(["install-service", "--destdir", str(root), "--no-man"]) == 0
    assert config.read_text() == "[debug]\nloglevel=1\n"
    assert "kept" in capsys.readouterr().out
    assert cli_main(["install-service", "--destdir", str(root), "--exec", "quichsd"]) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_target() -> None:
    dry = subprocess.run(
        ["make", "-n", "-W", ".venv/.bootstrapped", "install-service", "DESTDIR=/tmp/stage"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '.venv/bin/quichsd install-service --destdir "/tmp/stage"' in dry.stdout, dry


def test_no_python_package_named_systemd() -> None:
    assert not list((REPO / "systemd").glob("*.py"))
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; s = u.find_spec('systemd'); print(s.origin if s else '')",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    origin = found.stdout.strip()
    if origin:  # systemd-python installed: it must win over the unit-file folder
        assert not origin.startswith(str(REPO / "systemd")), origin
        assert origin.endswith("__init__.py")


def test_systemd_python_needs_its_build_dependencies_in_bootstrap() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("systemd-python") for d in project["dependencies"])
    apt = re.search(r"^packages=\(([^)]+)\)", (REPO / "scripts" / "bootstrap").read_text(), re.M)
    # python3-venv (ensurepip) and python3-dev (Python.h): a pristine Debian has neither.
    wanted = {"libsystemd-dev", "pkg-config", "python3-venv", "python3-dev", "libgnutls28-dev"}
    assert apt and wanted <= set(apt.group(1).split())


# -- the example configuration ------------------------------------------------------------------


def test_example_configuration_loads_as_is() -> None:
    config = load_config(EXAMPLE)
    assert config.warnings == ()
    assert config.workers == 0 and config.handshake_timeout == 30.0


def test_example_documents_real_keys_with_valid_values(tmp_path: Path) -> None:
    """Every commented ``#key=value`` in it, uncommented, loads without a warning."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#([a-z0-9_.]+)=(.*)", line)
        if match and "<" not in match.group(2):
            line = f"{match.group(1)}={match.group(2)}"
        lines.append(line)
    uncommented = tmp_path / "config"
    uncommented.write_text("\n".join(lines) + "\n")
    config = load_config(uncommented)
    assert config.warnings == ()
    defaults = config_module.DaemonConfig()
    assert (config.workers, config.worker_recycle) == (defaults.workers, defaults.worker_recycle)
    assert config.status_socket == defaults.status_socket
    assert config.shutdown_grace == defaults.shutdown_grace


def test_every_quichsd_key_is_documented() -> None:
    keys = {key for section, key in config_module.KNOWN_KEYS if section == "quichsd"}
    assert keys >= {"workers", "status_socket", "handshake_timeout"}
    example, manual = EXAMPLE.read_text(), MAN5.read_text()
    for key in keys:
        assert f"#{key}=" in example, key
        assert f".BR {key} =" in manual, key


# -- man pages and help ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_pages_render_cleanly() -> None:
    for page in (MAN8, MAN5):
        result = subprocess.run(
            ["groff", "-man", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            timeout=60,
        )
        assert result.returncode == 0 and not result.stderr, result.stderr


def test_manual_lists_the_journal_fields() -> None:
    fields: set[str] = set()
    for status in (0, 110):
        record = HandshakeRecord(1, "quic", "client", 3, "p", status, "r", 0.1, 51, "a", "x")
        fields |= {k for k in record.fields() if k.startswith("QUICHSD_")}
    manual = MAN8.read_text()
    for name in fields:
        assert name in manual, name


def _help(*args: str) -> str:
    parser = build_parser()
    if not args:
        return parser.format_help()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        choices = getattr(action, "choices", None)
        if choices and args[0] in choices:
            return str(choices[args[0]].format_help())
    raise AssertionError(args)


def test_help_reads_like_a_man_page() -> None:
    main = _help()
    for section in ("usage: quichsd", "files:", "see also:", "serve", "check", "status"):
        assert section in main, section
    serve = _help("serve")
    for section in (
        "usage: quichsd serve [-h] [-c PATH] [-s] [-v]",
        "files:",
        "signals:",
        "SIGHUP, SIGUSR1",
        "SIGTERM, SIGINT",
        "exit status:",
        "environment:",
        "NOTIFY_SOCKET",
        "/etc/tlshd/config",
    ):
        assert section in serve, section
    assert all(len(line) <= 80 for line in serve.splitlines())
    assert "exit status:" in _help("check") and "--openmetrics" in _help("status")
    assert "--destdir" in _help("install-service")


SPDX = "SPDX-License-Identifier: GPL-2.0-only"
#: Where the project's own sources live (fuzz corpora and regression inputs are data).
SOURCE_DIRS = ("quichsd", "tests", "bench", "vm", "scripts", ".ci")
DATA_DIRS = ("corpus", "regressions", "__pycache__")
#: What cffi generates beside the sources (ignored by git, not shipped as source).
GENERATED = ("quichsd/tls/_gnutls.c", "quichsd/daemon/_privilege.c")


def _project_sources() -> list[Path]:
    found = [REPO / "setup.py", REPO / "Makefile"]
    for top in SOURCE_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or any(part in DATA_DIRS for part in path.parts):
                continue
            if str(path.relative_to(REPO)) in GENERATED:
                continue
            if path.suffix in (".py", ".pyi", ".c", ".sh") or path.read_bytes()[:2] == b"#!":
                found.append(path)
    return found


def test_every_source_names_its_license() -> None:
    """LICENSE is GPL-2.0-only; each source says so in its first lines (SPDX)."""
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text()
    assert "Version 2, June 1991" in (REPO / "LICENSE").read_text()
    sources = _project_sources()
    assert len(sources) > 100, "the walk found the sources"
    missing = [
        str(path.relative_to(REPO))
        for path in sources
        if SPDX not in "".join(path.read_text(errors="replace").splitlines(True)[:2])
    ]
    assert not missing, f"no SPDX line: {missing}"
