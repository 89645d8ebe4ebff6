# SPDX-License-Identifier: GPL-2.0-only
"""The rig's host-side parsing, without booting: the Debian mirror vm/fetch takes from the
host's apt configuration (vm/mirror.py, both source formats), and the sid-chroot floor's skip
of tests whose dependency has no wheel for sid's Python (tests/vm/chroot_skip.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .chroot_skip import MissingWheelFinder, import_name, read_missing
from .rig import REPO


def _mirror_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vm_mirror", REPO / "vm" / "mirror.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["vm_mirror"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mirror = _mirror_module()

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

THIRD_PARTY_DEB822 = """\
Types: deb
URIs: https://deb.nodesource.example/node_20.x
Suites: nodistro
Components: main
"""


def _root(tmp_path: Path, files: dict[str, str], codename: str | None = "bookworm") -> Path:
    for name, text in files.items():
        path = tmp_path / "etc" / "apt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if codename:
        (tmp_path / "etc" / "os-release").write_text(f'VERSION_CODENAME="{codename}"\n')
    return tmp_path


def _host_mirror(root: Path) -> str | None:
    result: str | None = mirror.debian_mirror(mirror.host_sources(root), mirror.host_codename(root))
    return result


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    root = _root(
        tmp_path,
        {
            "sources.list.d/00-node.sources": THIRD_PARTY_DEB822,
            "sources.list.d/debian.sources": DEB822,
        },
    )
    assert _host_mirror(root) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path: Path) -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main non-free\n"
    )
    assert _host_mirror(_root(tmp_path, {"sources.list": text})) == "http://one.example/debian"


def test_mirror_skips_disabled_stanzas_and_other_components(tmp_path: Path) -> None:
    disabled = DEB822.replace("Types: deb\n", "Types: deb\nEnabled: no\n", 1)
    contrib_only = "deb http://contrib.example/debian bookworm contrib\n"
    root = _root(
        tmp_path,
        {
            "sources.list": contrib_only,
            "sources.list.d/a.sources": disabled,
            "sources.list.d/b.list": "deb http://b.example/debian bookworm main\n",
        },
    )
    assert _host_mirror(root) == "http://b.example/debian"


def test_mirror_without_codename_takes_a_debian_suite(tmp_path: Path) -> None:
    text = "deb http://x.example/apt nodistro main\ndeb http://y.example/debian sid main\n"
    assert _host_mirror(_root(tmp_path, {"sources.list": text}, codename=None)) == (
        "http://y.example/debian"
    )


def test_no_mirror_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _root(tmp_path, {"sources.list.d/node.sources": THIRD_PARTY_DEB822})
    assert mirror.main(["mirror.py", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert "QUICHSD_VM_MIRROR" in err and "\n" not in err


def test_chroot_skip_names_the_missing_wheel(tmp_path: Path) -> None:
    (tmp_path / ".missing").write_text("qh3==2.1.0\nprometheus-client>=0.20\n")
    missing = read_missing(tmp_path)
    assert missing == {"qh3": "qh3==2.1.0", "prometheus_client": "prometheus-client>=0.20"}
    assert import_name("Foo.Bar[extra]>=1") == "foo_bar"
    finder = MissingWheelFinder(missing, "CPython 3.14")
    assert finder.find_spec("pytest") is None
    with pytest.raises(pytest.skip.Exception, match=r"no installable wheel of qh3==2\.1\.0"):
        finder.find_spec("qh3.tls")
