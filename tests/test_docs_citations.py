# SPDX-License-Identifier: GPL-2.0-only
"""Docstrings, comments and docs cite documents inside the repository, and what they cite exists.

Facts about the kernel and tlshd live in docs/kernel-abi.md and docs/tlshd-compat.md under
stable section names (``## §NAME: ...``).  Every file in the repository is read for:

- a path that leaves the repository (an absolute path to a project tree, ``../``
  climbing out of it, or the name of a fact sheet that is not in it);
- ``docs/<file>`` that does not exist, and ``docs/<file>.md §NAME`` naming a section
  the file does not have;
- a ``§`` that belongs to no document: each one must follow an RFC number or a docs/
  file (``RFC 9001 §4.1.3-4.1.4``, ``docs/kernel-abi.md §ACCEPT, §DONE``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What is read: the package, its tests, benchmarks, the VM rig, scripts, docs.
TREES = ("quichsd", "tests", "bench", "vm", "scripts", "docs", "systemd")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "setup.py")
SKIP_PARTS = {"__pycache__", "corpus", ".venv", ".vmcache", ".git"}
SKIP_SUFFIXES = {".so", ".pyc", ".o", ".png", ".gz", ".xz", ".deb", ".bin"}
THIS = Path(__file__).resolve()

#: Names of fact sheets kept outside this repository, and paths that lead out of it.
OUTSIDE = [
    re.compile(p)
    for p in (
        r"\bshared/(spec|rig)\b",
        r"\.\./shared\b",
        r"/work/(shared|main|wt)\b",
        r"\b(handshake-netlink|ktls-abi|quic-socket-abi|tlshd-behaviour|real-kernel)\.md\b",
        r"\bspec §",
        r"\bthe spec's §",
    )
]
DOC_REF = re.compile(r"\bdocs/([\w./-]+\.(?:md|\d))")
#: A document and the § sections cited after it: "docs/x.md §A, §B and §C", "RFC 8446 §4-§5".
CITED = re.compile(
    r"(?P<doc>docs/[\w./-]+\.md|RFC \d+)"
    r"(?P<sections>(?:(?:\s+|, |,? and |-|–)§[\w.-]*[\w])+)"
)
SECTION = re.compile(r"§([\w.-]*\w)")
HEADING = re.compile(r"^#+\s+§([A-Z0-9-]+)\b", re.MULTILINE)


def repo_files() -> Iterator[Path]:
    for name in TOP_FILES:
        if (ROOT / name).is_file():
            yield ROOT / name
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if not path.is_file() or path.resolve() == THIS:
                continue
            if SKIP_PARTS & set(path.relative_to(ROOT).parts) or path.suffix in SKIP_SUFFIXES:
                continue
            yield path


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", errors="replace")


@functools.cache
def sections(doc: Path) -> frozenset[str]:
    return frozenset(HEADING.findall(doc.read_text()))


def problems_in(path: Path, text: str) -> list[str]:
    where = path.relative_to(ROOT)
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if any(pattern.search(line) for pattern in OUTSIDE):
            out.append(f"{where}:{number}: cites outside the repository: {line.strip()}")
        for ref in DOC_REF.findall(line):
            if not (ROOT / "docs" / ref).exists():
                out.append(f"{where}:{number}: docs/{ref} does not exist")
        rest = line
        for cite in CITED.finditer(line):
            doc = cite.group("doc")
            if doc.startswith("docs/") and (ROOT / doc).exists():
                known = sections(ROOT / doc)
                for name in SECTION.findall(cite.group("sections")):
                    if name not in known:
                        out.append(f"{where}:{number}: {doc} has no section §{name}")
            rest = rest.replace(cite.group(0), "")
        if "§" not in rest:
            continue
        if path.suffix == ".md" and path.parent == ROOT / "docs":
            # Inside a fact sheet a bare §NAME is one of its own sections.
            own = sections(path)
            out += [
                f"{where}:{number}: no section §{name} here"
                for name in SECTION.findall(rest)
                if name not in own
            ]
        else:
            out.append(f"{where}:{number}: § without a document: {line.strip()}")
    return out


def test_files_are_read() -> None:
    """The walk finds the package, the tests and the docs (a broken walk checks nothing)."""
    found = {p.relative_to(ROOT).as_posix() for p in repo_files()}
    assert {"quichsd/check/x509.py", "docs/kernel-abi.md", "README.md"} <= found
    assert "tests/test_docs_citations.py" not in found  # its patterns name what is forbidden


def test_fact_sheets_have_sections() -> None:
    for doc in ("kernel-abi.md", "tlshd-compat.md"):
        names = sections(ROOT / "docs" / doc)
        assert len(names) >= 10, (doc, names)
        text = (ROOT / "docs" / doc).read_text()
        headings = re.findall(r"^#+\s+§([A-Z0-9-]+)\b", text, re.MULTILINE)
        assert len(headings) == len(set(headings)), f"{doc}: a section name used twice"


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """Each kind of bad citation is reported, and good ones are not."""
    fake = ROOT / "quichsd" / "example.py"  # need not exist: only its name is used
    good = [
        "see docs/kernel-abi.md §ACCEPT, §DONE and §FD",
        "RFC 8446 §5.2-§5.3 and RFC 9001 §4.1.3-4.1.4",
        "docs/errno.md",
    ]
    bad = {
        "as ../sha" + "red/spec/ktls-abi.md §3 says": "outside",
        "handshake-net" + "link.md §9": "outside",
        "docs/kernel-abi.md §NO-SUCH-SECTION": "no section",
        "docs/missing.md": "does not exist",
        "peer identities per §9": "without a document",
    }
    for line in good:
        assert problems_in(fake, line) == [], line
    for line, words in bad.items():
        found = problems_in(fake, line)
        assert found and any(words in f for f in found), (line, found)
    # Inside a fact sheet a bare § names one of its own sections.
    sheet = ROOT / "docs" / "kernel-abi.md"
    assert problems_in(sheet, "as §ACCEPT says") == []
    assert problems_in(sheet, "as §NO-SUCH says") == [
        "docs/kernel-abi.md:1: no section §NO-SUCH here"
    ]


@pytest.mark.parametrize("tree", [*TREES, "top"])
def test_citations_stay_inside_the_repository(tree: str) -> None:
    problems: list[str] = []
    for path in repo_files():
        relative = path.relative_to(ROOT)
        top = relative.parts[0] if len(relative.parts) > 1 else "top"
        if top != tree:
            continue
        text = text_of(path)
        if text is not None:
            problems += problems_in(path, text)
    assert not problems, "\n".join(problems)
