#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""The Debian mirror the host's own apt uses, for vm/fetch (sid's kernel, debootstrap).

    python3 vm/mirror.py [ROOT]     prints the mirror's URL, or exits 1 with the reason

Reads ``etc/apt/sources.list`` and ``etc/apt/sources.list.d/*.list`` (one-line format) and
``*.sources`` (deb822) under ROOT (default /), in apt's order, and takes the first enabled
``deb`` entry whose suites hold the host's release (``VERSION_CODENAME`` of etc/os-release,
or any Debian suite name when that is unknown) with the ``main`` component: the main archive,
not ``-security``, ``-updates`` or a third party's repository. QUICHSD_VM_MIRROR overrides it
in vm/fetch; see vm/README.md.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

#: Suites a Debian main archive carries, when the host's own codename is unknown.
DEBIAN_SUITES = frozenset(
    {
        "stable",
        "testing",
        "unstable",
        "sid",
        "oldstable",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
    }
)


@dataclass(frozen=True)
class Source:
    """One ``deb`` entry: its URIs, suites and components."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # file (and line) it came from, for messages


def parse_one_line(text: str, origin: str) -> list[Source]:
    """``deb [options] URI SUITE COMPONENT...`` lines; deb-src and comments are skipped."""
    found: list[Source] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) < 3 or words[0] != "deb":
            continue
        found.append(Source((words[1],), (words[2],), tuple(words[3:]), f"{origin}:{number}"))
    return found


def parse_deb822(text: str, origin: str) -> list[Source]:
    """Stanzas separated by blank lines; ``Enabled: no`` and non-``deb`` types are skipped."""
    found: list[Source] = []
    stanzas: list[dict[str, str]] = [{}]
    key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanzas[-1]:
                stanzas.append({})
            continue
        if raw[0] in " \t" and key:  # a continuation line
            stanzas[-1][key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip().lower()
        stanzas[-1][key] = value.strip()
    for index, stanza in enumerate(s for s in stanzas if s):
        if stanza.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        found.append(
            Source(
                tuple(stanza.get("uris", "").split()),
                tuple(stanza.get("suites", "").split()),
                tuple(stanza.get("components", "").split()),
                f"{origin} (stanza {index + 1})",
            )
        )
    return found


def host_sources(root: Path) -> list[Source]:
    """Every ``deb`` entry of the apt configuration under ``root``, in apt's reading order."""
    apt = root / "etc" / "apt"
    sources: list[Source] = []
    main = apt / "sources.list"
    if main.is_file():
        sources += parse_one_line(main.read_text(errors="replace"), str(main))
    parts = apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += parse_one_line(path.read_text(errors="replace"), str(path))
            elif path.suffix == ".sources":
                sources += parse_deb822(path.read_text(errors="replace"), str(path))
    return sources


def host_codename(root: Path) -> str | None:
    release = root / "etc" / "os-release"
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.partition("=")[2].strip().strip("\"'") or None
    return None


def debian_mirror(sources: list[Source], codename: str | None) -> str | None:
    """The first entry serving the release itself (not -security/-updates) with ``main``."""
    wanted = {codename} if codename else DEBIAN_SUITES
    for source in sources:
        if "main" in source.components and wanted & set(source.suites) and source.uris:
            return source.uris[0].rstrip("/")
    return None


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path("/")
    sources = host_sources(root)
    mirror = debian_mirror(sources, host_codename(root))
    if mirror is None:
        print(
            f"vm/mirror.py: no Debian main archive in {root / 'etc/apt'} "
            f"({len(sources)} deb entries read); set QUICHSD_VM_MIRROR",
            file=sys.stderr,
        )
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
