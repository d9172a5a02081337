"""``gamornet bench``: run the benchmark suite of a source checkout (the same as ``python -m benchmarks``).

The suite lives beside the package in a checkout (``benchmarks/``), not in
the installed package; from a wheel install this command says so.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["register_cli"]


def _suite(strict: bool, module: str = "benchmarks.suite"):
    """A module of the ``benchmarks`` package of the checkout holding this package, or None."""
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(checkout, "benchmarks", "suite.py")):
        if strict:
            raise RuntimeError("`gamornet bench` runs the benchmark suite of a source checkout (benchmarks/ beside "
                               "the gamornet package); this installation has none. Clone the repository, install "
                               "it with `pip install -e .` and run `python -m benchmarks` there.")
        return None
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    return importlib.import_module(module)


def register_cli(subparsers) -> None:
    """Add the ``bench`` subcommand (its options come from the checkout's suite, when there is one)."""
    p = subparsers.add_parser(
        "bench",
        help="measure prediction and training speed, memory and import time (from a source checkout)",
        description="Measure GaMorNet on this machine in one run: the matmul ceiling, the raw forward pass, the "
        "predict functions of both backends, `gamornet predict` on files, training speed, PyTorch (if installed), "
        "bfloat16 inference, peak memory and import times. Every speed is also given as a ratio to its "
        "reference measured in the same run; targets are marked PASS or MISS. Prints a table; --json keeps "
        "every figure. Runs the suite of a source checkout (python -m benchmarks).",
    )
    config = _suite(strict=False, module="benchmarks.config")
    if config is not None:
        config.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    return _suite(strict=True).run_from_args(args)
