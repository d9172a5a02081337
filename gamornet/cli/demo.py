"""``gamornet demo``: simulate galaxies, train GaMorNet, classify and evaluate, in a few minutes."""

from __future__ import annotations

import argparse
from dataclasses import replace

from gamornet.demo import DemoSettings, run_demo

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add ``gamornet demo``."""
    d = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="simulate galaxies, train GaMorNet, classify and evaluate (a few minutes)",
        description="Simulate a training and a held-out set of bulge + disk galaxies, train GaMorNet on the first, "
        "classify the second with the saved model and write a report folder (predictions table, confusion matrix, "
        "threshold plot, trained model, summary).",
    )
    p.add_argument("--survey", choices=("SDSS", "CANDELS"), default=d.survey,
                   help="image preset (default: %(default)s)")
    p.add_argument("-n", type=int, default=d.n_train, dest="n_train",
                   help="training galaxies (default: %(default)s; held-out set: half as many)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: %(default)s)")
    p.add_argument("--output", default="gamornet_demo", help="report folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="simulation processes (default: all cores)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    n_test = max(1, args.n_train // 2)
    settings = replace(DemoSettings(), survey=args.survey, n_train=args.n_train, epochs=args.epochs,
                       n_test=n_test, n_validation=max(1, args.n_train // 8), seed=args.seed)
    run_demo(args.output, settings, workers=args.workers, verbose=0 if args.quiet else 1)
    return 0
