# SPDX-License-Identifier: GPL-2.0-only
"""``quichsd install-service``: the systemd unit, an example configuration, the man pages.

Files come from the installed wheel (``<prefix>/share/quichsd``,
``<prefix>/share/man``) or, in a source checkout, from the repository
(``systemd/``, ``etc/``, ``docs/man/``).  Everything is written under
``--destdir`` when given (a staging root for packages), and nothing is
overwritten except the unit itself: an existing ``/etc/tlshd/config`` is an
administrator's, and is left alone.  The unit's ``ExecStart=`` names the
``quichsd`` executable that runs this command, unless ``--exec`` says
otherwise.  No ``systemctl`` is run: the command prints what to run next.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

UNIT = "quichsd.service"
EXAMPLE = "tlshd-config.example"
MAN_PAGES = (("quichsd.8", "man8"), ("quichsd.conf.5", "man5"))
UNIT_DIR = Path("/etc/systemd/system")
CONFIG_PATH = Path("/etc/tlshd/config")
MAN_DIR = Path("/usr/local/share/man")
_REPO = Path(__file__).resolve().parents[1]


class InstallError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sources:
    unit: Path
    example: Path
    man: dict[str, Path]


def _installed_prefix() -> Path | None:
    """``<prefix>`` when this package lives in ``<prefix>/lib/pythonX.Y/site-packages``."""
    here = Path(__file__).resolve().parent
    if len(here.parents) > 3 and here.parents[2].name == "lib":
        return here.parents[3]
    return None


def _packaged(root: Path) -> Sources | None:
    share = root / "share" / "quichsd"
    if not ((share / UNIT).is_file() and (share / EXAMPLE).is_file()):
        return None
    man = {page: root / "share" / "man" / section / page for page, section in MAN_PAGES}
    return Sources(share / UNIT, share / EXAMPLE, man)


def _checkout() -> Sources | None:
    unit, example = _REPO / "systemd" / UNIT, _REPO / "etc" / EXAMPLE
    if not (unit.is_file() and example.is_file()):
        return None
    return Sources(unit, example, {page: _REPO / "docs" / "man" / page for page, _ in MAN_PAGES})


def find_sources() -> Sources:
    """The files installed beside this package, else the checkout's (an editable install),
    else those of the running environment."""
    prefix = _installed_prefix()
    candidates = [
        _packaged(prefix) if prefix is not None else None,
        _checkout(),
        _packaged(Path(sysconfig.get_path("data"))),
        _packaged(Path(sys.prefix)),
    ]
    for sources in candidates:
        if sources is not None:
            return sources
    raise InstallError(f"cannot find {UNIT} and {EXAMPLE} (neither installed nor in a checkout)")


def default_executable() -> str:
    """The ``quichsd`` console script of this installation."""
    beside = Path(sys.executable).with_name("quichsd")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("quichsd")
    if found:
        return str(Path(found).resolve())
    return "/usr/sbin/quichsd"


def render_unit(text: str, executable: str) -> str:
    """The unit with ``ExecStart=`` pointing at ``executable``."""
    if not executable.startswith("/"):
        raise InstallError(f"ExecStart needs an absolute path, not {executable!r}")
    return re.sub(r"^ExecStart=\S+", f"ExecStart={executable}", text, count=1, flags=re.MULTILINE)


def _staged(destdir: Path | None, path: Path) -> Path:
    return destdir / path.relative_to("/") if destdir is not None else path


def _write(path: Path, data: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_bytes(data.encode() if isinstance(data, str) else data)
    scratch.chmod(mode)
    scratch.replace(path)


def install(
    *,
    destdir: Path | None = None,
    unit_dir: Path = UNIT_DIR,
    config_path: Path = CONFIG_PATH,
    man_dir: Path | None = MAN_DIR,
    executable: str | None = None,
    sources: Sources | None = None,
) -> list[str]:
    """Installs the files; one line per action, for the user."""
    src = sources or find_sources()
    done: list[str] = []
    unit_target = _staged(destdir, unit_dir / UNIT)
    _write(
        unit_target, render_unit(src.unit.read_text(), executable or default_executable()), 0o644
    )
    done.append(f"installed {unit_target}")
    config_target = _staged(destdir, config_path)
    if config_target.exists():
        done.append(f"kept {config_target} (exists)")
    else:
        _write(config_target, src.example.read_bytes(), 0o600)
        done.append(f"installed {config_target} (the example; edit it)")
    if man_dir is not None:
        for page, section in MAN_PAGES:
            source = src.man.get(page)
            if source is None or not source.is_file():
                continue
            target = _staged(destdir, man_dir / section / page)
            _write(target, source.read_bytes(), 0o644)
            done.append(f"installed {target}")
    if destdir is None:
        done.append(
            "next: systemctl daemon-reload && systemctl enable --now quichsd "
            "(after systemctl disable --now tlshd, if it runs)"
        )
    return done


def example_config_for_run(scratch: Path, etc: Path = Path("/etc")) -> Path | None:
    """For ``make run`` on a machine with no tlshd configuration (tlshd and ``quichsd
    serve`` refuse to start without one): the example, written to ``scratch`` (0600).
    None when ``etc`` has ``tlshd.conf`` or ``tlshd/config``: that one is used."""
    if (etc / "tlshd.conf").exists() or (etc / CONFIG_PATH.relative_to("/etc")).exists():
        return None
    _write(scratch, find_sources().example.read_bytes(), 0o600)
    return scratch


if __name__ == "__main__":  # scripts/run: python -m quichsd.install example-config PATH
    if len(sys.argv) != 3 or sys.argv[1] != "example-config":
        sys.exit("usage: python -m quichsd.install example-config PATH")
    written = example_config_for_run(Path(sys.argv[2]))
    print(written or "")
