"""``python -m benchmarks [--quick] [--json FILE] [--survey SDSS|CANDELS|both]``: see :mod:`benchmarks.suite`."""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.suite import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
