# SPDX-License-Identifier: GPL-2.0-only
"""``python -m quichsd``: the same as the ``quichsd`` command."""

import sys

from quichsd.cli import main

sys.exit(main())
