# SPDX-License-Identifier: GPL-2.0-only
"""The engine's hot path: the ``_events`` extension and its cffi fallback (``records``).

The extension is optional (setup.py builds it if it can), so the engine tests
also run once more with it blocked, on the pure-Python records.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from quichsd.tls import HandshakeEngine, records
from quichsd.tls.events import SendHandshake

TESTS = Path(__file__).resolve().parent
BUILT = importlib.util.find_spec("quichsd.tls._events") is not None

_WITHOUT_EXTENSION = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "quichsd.tls._events":
            raise ImportError("blocked: testing the fallback")
        return None

sys.meta_path.insert(0, Block())
import pytest
import quichsd.tls.records as records
assert not records.C_EVENTS
sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.skipif(not BUILT, reason="the _events extension was not built")
def test_the_extension_runs_the_hot_path_when_built() -> None:
    # records falls back silently when the events' fields no longer match _events.c.
    assert records.C_EVENTS


@pytest.mark.skipif(not BUILT, reason="the _events extension was not built")
def test_the_extension_refuses_what_is_not_its_own() -> None:
    from quichsd.tls import _events

    with pytest.raises(TypeError):
        _events.Journal()
    with pytest.raises(TypeError):
        _events.step(object(), 0, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _events.drain(b"\0" * 64)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _events.open(b"too short", b"tp", b"")


def test_events_are_the_dataclasses(make_client: Callable[..., HandshakeEngine]) -> None:
    (hello,) = make_client().start()
    assert type(hello) is SendHandshake
    assert hello == SendHandshake(hello.level, hello.data)
    assert "data=" in repr(hello)


def test_engine_tests_pass_without_the_extension() -> None:
    files = sorted(str(p) for p in TESTS.glob("test_engine_*.py") if p.name != Path(__file__).name)
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTENSION, "-q", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
