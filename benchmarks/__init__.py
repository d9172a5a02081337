"""GaMorNet's benchmarks, run with ``python -m benchmarks`` from the repository root.

The code lives in :mod:`gamornet.benchmark` (so ``gamornet bench`` runs the
same thing from an installed package); this package is the entry point of a
checkout.  ``benchmarks/predict_memory.py`` measures file-prediction memory
alone.
"""

from __future__ import annotations

from gamornet.benchmark import main

__all__ = ["main"]
