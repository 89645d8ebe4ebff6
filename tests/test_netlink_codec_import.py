# SPDX-License-Identifier: GPL-2.0-only
"""The daemon's parent loads pyroute2's message classes, not the whole library
(quichsd/netlink/codec_import.py), and the rest of pyroute2 still works after it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import quichsd.daemon.main, quichsd.netlink.messages
before = sorted(m for m in sys.modules if m.startswith("pyroute2"))
from quichsd.netlink.messages import acceptmsg
msg = acceptmsg()
msg["cmd"] = 1
msg["version"] = 1
msg.encode()
from pyroute2 import IPRoute  # the package's own names: its __init__ now runs
after = sum(m.startswith("pyroute2") for m in sys.modules)
print(json.dumps({"before": before, "after": after, "iproute": IPRoute.__name__}))
"""


def test_the_parent_imports_the_codec_alone_and_pyroute2_stays_whole() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "pyroute2.netlink" in seen["before"]
    assert "pyroute2.ndb" not in seen["before"]  # sqlite3 and the rest: not loaded
    assert len(seen["before"]) < 20, seen["before"]
    assert seen["after"] > 100 and seen["iproute"] == "IPRoute"


def test_a_process_that_imported_pyroute2_first_keeps_it() -> None:
    probe = (
        "import pyroute2, sys\n"
        "whole = pyroute2\n"
        "import quichsd.netlink\n"
        "print(sys.modules['pyroute2'] is whole and hasattr(whole, 'IPRoute'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
