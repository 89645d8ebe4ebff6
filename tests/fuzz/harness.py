# SPDX-License-Identifier: GPL-2.0-only
"""What a fuzz target is, and the registry ``run.py`` and the tests read."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Target:
    """One fuzz target.

    ``one_input`` takes the fuzzer's bytes and returns normally for an expected
    outcome; ``expected`` lists the documented error types it tolerates (for people
    reading a report; ``one_input`` itself catches them).  ``seeds`` makes the
    starting corpus (``seeds.py`` writes it to ``corpus/<name>/``).
    """

    name: str
    one_input: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    seeds: Callable[[], Iterable[bytes]]
    #: The largest input worth trying (libFuzzer's -max_len).
    max_len: int = 4096

    @property
    def corpus(self) -> Path:
        return CORPUS / self.name


#: Target name prefix → the module of fuzz/ defining it.  Running one target imports
#: only its module; atheris instruments ``quichsd`` alone (pyroute2 would add 160
#: modules and 3 s of start-up; its lenient decoding is checked by our strict parser).
MODULES = {
    "engine_": "engine",
    "netlink_": "netlink",
    "config": "config",
    "quic_": "quic",
    "channel": "channel",
}


def module_of(name: str) -> str:
    """The fuzz module defining target ``name``."""
    for prefix, module in MODULES.items():
        if name.startswith(prefix):
            return module
    raise KeyError(f"no fuzz target {name!r}")


def target(name: str) -> Target:
    """One target, importing only its own module."""
    module = importlib.import_module(f"fuzz.{module_of(name)}")
    found: dict[str, Target] = {t.name: t for t in module.TARGETS}
    return found[name]


def targets() -> dict[str, Target]:
    """Every target by name."""
    found: dict[str, Target] = {}
    for module in MODULES.values():
        for each in importlib.import_module(f"fuzz.{module}").TARGETS:
            found[each.name] = each
    return found
