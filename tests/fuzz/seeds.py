# SPDX-License-Identifier: GPL-2.0-only
"""Writes each target's seeds into ``corpus/<target>/`` (files named by content hash).

    python tests/fuzz/seeds.py [TARGET...]

Seeds that involve a handshake are recorded from a live engine pair, so rerunning
this adds new files (fresh randomness) beside the old ones instead of replacing them.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def main(names: list[str]) -> None:
    from fuzz.harness import targets

    for name, target in targets().items():
        if names and name not in names:
            continue
        target.corpus.mkdir(parents=True, exist_ok=True)
        written = 0
        for seed in target.seeds():
            path = target.corpus / f"seed-{hashlib.sha1(seed).hexdigest()}"
            if not path.exists():
                path.write_bytes(seed)
                written += 1
        print(f"{name}: {written} new seeds in {target.corpus}")


if __name__ == "__main__":
    main(sys.argv[1:])
