# SPDX-License-Identifier: GPL-2.0-only
"""The man page's SYNOPSIS against ``--help``: each command's options, both ways, so an
option added, renamed or dropped in the CLI without the manual (or the reverse) fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from quichsd.cli import build_parser

MAN8 = Path(__file__).resolve().parents[1] / "docs" / "man" / "quichsd.8"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command's parser by its words: (), ("serve",), ("handshake", "client")..."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands(sub, (*path, name))
    return found


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Each documented option's spellings (not -h, not the hidden test wiring)."""
    return [
        tuple(action.option_strings)
        for action in parser._actions
        if action.option_strings
        and action.help != argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction)
    ]


def _synopses() -> dict[tuple[str, ...], set[str]]:
    """``.SY quichsd`` blocks of the man page: command words → option spellings named."""
    text = MAN8.read_text()
    synopsis = text[text.index(".SH SYNOPSIS") : text.index(".SH DESCRIPTION")]
    blocks: dict[tuple[str, ...], set[str]] = {}
    for block in re.findall(r"^\.SY quichsd\n(.*?)^\.YS", synopsis, re.M | re.S):
        words: tuple[str, ...] = ()
        options: set[str] = set()
        for line in block.splitlines():
            if line.startswith(".B "):
                words += tuple(line[3:].replace("\\-", "-").split())
                continue
            for option in re.findall(r"(?:\\-){1,2}[a-z][a-z\\-]*", line):
                options.add(option.replace("\\-", "-"))
        blocks[words] = options - {"-h"}
    return blocks


COMMANDS = _commands(build_parser())
LEAVES = sorted(
    words for words, parser in COMMANDS.items() if not parser._subparsers or words == ()
)


def test_every_command_has_a_synopsis() -> None:
    assert set(_synopses()) == set(LEAVES)
    assert ("handshake", "client") in LEAVES and ("demo",) in LEAVES


@pytest.mark.parametrize("words", LEAVES, ids=lambda w: " ".join(w) or "tlshd")
def test_synopsis_matches_help(words: tuple[str, ...]) -> None:
    named = _synopses()[words]
    options = _options(COMMANDS[words])
    missing = [spellings for spellings in options if not named & set(spellings)]
    assert not missing, f"quichsd {' '.join(words)}: --help has {missing}, the man page not"
    known = {spelling for spellings in options for spelling in spellings}
    assert named <= known, f"the man page names {sorted(named - known)}, --help not"
    text = MAN8.read_text()
    body = text[text.index(".SH DESCRIPTION") :]
    for spellings in options:  # and each is explained below, not only listed
        escaped = [spelling.replace("-", "\\-") for spelling in spellings]
        assert any(re.search(re.escape(e) + r"\b", body) for e in escaped), spellings
