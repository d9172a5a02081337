"""``gamornet evaluate``: score a predictions table against true labels (confusion matrix, summary, sweep)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gamornet.evaluate import DEFAULT_POLICY, write_report

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add ``gamornet evaluate``."""
    p = subparsers.add_parser("evaluate", help="score predictions against true labels",
                              description="Confusion matrix, summary and threshold sweep of a prediction table.")
    p.add_argument("predictions", metavar="PREDICTIONS", help="table with p_disk, p_indeterminate, p_bulge (and id)")
    p.add_argument("catalog", metavar="CATALOG", help="table with label or bt (and id)")
    p.add_argument("--policy", default=None,
                   help="threshold policy name (default: the policy recorded in PREDICTIONS by gamornet predict, "
                        f"else {DEFAULT_POLICY})")
    p.add_argument("--output", default="evaluation", help="output directory (default ./evaluation)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = write_report(args.predictions, args.catalog, args.output, args.policy)
    if not result.pop("policy_recorded"):
        print("gamornet evaluate: note: PREDICTIONS record no threshold policy (a .csv table holds metadata only in "
              f"its .csv.meta.json sidecar); scoring with {result['policy']}. Choose another with --policy.",
              file=sys.stderr)
    for key, value in result.items():
        print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
    out = Path(args.output)
    print(f"Wrote {out / 'confusion_matrix.png'}, {out / 'threshold_sweep.png'}, {out / 'summary.json'}")
    return 0
