"""``gamornet bench``: the benchmarks of :mod:`gamornet.benchmark` (the same as ``python -m benchmarks``).

Registering the subcommand imports nothing heavy; NumPy and TensorFlow are
imported when it runs.
"""

from __future__ import annotations

import argparse

__all__ = ["register_cli", "add_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``python -m benchmarks`` and ``gamornet bench``."""
    parser.add_argument("--quick", action="store_true",
                        help="short run: CANDELS only unless --survey, fewer images and repeats (< 3 min, 2 cores)")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest run (a few images, one repeat): checks that every measurement works")
    parser.add_argument("--json", metavar="FILE", help="also write every figure, ratio and target as JSON")
    parser.add_argument("--survey", choices=("SDSS", "CANDELS", "both"), default=None,
                        help="survey shapes to measure (default: both; CANDELS with --quick / --tiny)")


def register_cli(subparsers) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser(
        "bench",
        help="measure prediction and training speed, memory and import time",
        description="Measure GaMorNet on this machine in one run: the matmul ceiling, the raw forward pass, the "
        "predict functions of both backends, `gamornet predict` on files, training speed, PyTorch (if installed), "
        "bfloat16 inference, peak memory and import times. Every speed is also given as a ratio to its "
        "reference measured in the same run; targets are marked PASS or MISS. Prints a table; --json keeps "
        "every figure.",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gamornet.benchmark import run_from_args

    return run_from_args(args)
