"""What a fuzz target is, and the registry ``run.py`` and the tests read."""

from __future__ import annotations

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


def targets() -> dict[str, Target]:
    """Every target by name; importing the modules here keeps ``run.py`` instrumenting them."""
    from fuzz import channel, config, engine, netlink, quic

    found: dict[str, Target] = {}
    for module in (engine, netlink, config, quic, channel):
        for target in module.TARGETS:
            found[target.name] = target
    return found
