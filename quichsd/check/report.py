# SPDX-License-Identifier: GPL-2.0-only
"""What ``quichsd check`` found, as one line per check, and the exit status it gives.

The table's format and the exit status (0 when nothing is ✗, else 1) are an
interface: scripts, packaging hooks and quichsd(8) rely on them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

State = Literal["ok", "warn", "fail"]

MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_MARKS = {"ok": "ok", "warn": "!!", "fail": "XX"}


@dataclass(frozen=True)
class Check:
    """One line of the table: ✓ (fine), ! (works, read the note) or ✗, and the fix."""

    name: str
    state: State
    detail: str
    fix: str = ""


def exit_status(checks: Iterable[Check]) -> int:
    return 1 if any(c.state == "fail" for c in checks) else 0


def render(checks: Sequence[Check], *, unicode: bool = True) -> str:
    marks = MARKS if unicode else ASCII_MARKS
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"  {marks[c.state]}  {c.name.ljust(width)}  {c.detail}".rstrip())
        if c.fix and c.state != "ok":
            lines.append(f"     {' ' * width}  fix: {c.fix}")
    failed = sum(c.state == "fail" for c in checks)
    warned = sum(c.state == "warn" for c in checks)
    lines += ["", f"{failed} failed, {warned} warnings, {len(checks) - failed - warned} ok"]
    return "\n".join(lines) + "\n"


def can_encode(text: str) -> bool:
    """Whether stdout can print ``text`` (else the ASCII marks are used)."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
