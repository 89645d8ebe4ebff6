"""``python -m quichsd``: the same as the ``quichsd`` command."""

import sys

from quichsd.cli import main

sys.exit(main())
