"""``gamornet evaluate``: score a predictions table against true labels (confusion matrix, summary, sweep).

The report also holds ``gallery.html``, the galaxies behind the table with their true classes
(:func:`gamornet.gallery.make_gallery`), from the images the table records (``gamornet predict`` records what it
was given) or those of ``--images``; when the table records none, or they no longer exist, a note says so and the
report is written without it.  ``--no-gallery`` leaves it out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gamornet.cli.args import argument_type
from gamornet.cli.gallery import add_image_arguments, image_sources
from gamornet.evaluate import DEFAULT_POLICY, check_target, write_report

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add ``gamornet evaluate``."""
    p = subparsers.add_parser("evaluate", help="score predictions against true labels",
                              description="Confusion matrix, summary and threshold sweep of a prediction table, and "
                              "gallery.html, the galaxies behind it with their true classes: from the images "
                              "PREDICTIONS records (gamornet predict records what it was given), or those of "
                              "--images. When PREDICTIONS record none, or they no longer exist, a note says so and "
                              "the rest of the report is written.")
    p.add_argument("predictions", metavar="PREDICTIONS", help="table with p_disk, p_indeterminate, p_bulge (and id)")
    p.add_argument("catalog", metavar="CATALOG", help="table with label or bt (and id)")
    p.add_argument("--policy", default=None,
                   help="threshold policy name or policy .json file (default: the policy recorded in PREDICTIONS by "
                        "gamornet predict, "
                        f"else {DEFAULT_POLICY})")
    p.add_argument("--output", default="evaluation", help="output directory (default ./evaluation)")
    _add_target_arguments(p)
    add_image_arguments(p)
    p.add_argument("--no-gallery", dest="gallery", action="store_false",
                   help="do not write gallery.html")
    p.set_defaults(func=_main)


def _target(kind: str):
    """An argparse type: a number in (0, 1] for ``--target-KIND``."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = text
        return check_target(**{f"target_{kind}": value})[1]

    check.__name__ = f"target_{kind}"
    return argument_type(check)


def _add_target_arguments(p) -> None:
    """``--target-purity P`` / ``--target-completeness C``: thresholds chosen on these galaxies."""
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-purity", type=_target("purity"), metavar="P",
                        help="choose, per class, the lowest threshold whose purity on these galaxies is >= P, write "
                        "it to OUTPUT/policy.json (for gamornet predict --policy) and score with it")
    target.add_argument("--target-completeness", type=_target("completeness"), metavar="C",
                        help="likewise, the highest threshold whose completeness is >= C")


def _print_chosen(chosen: dict, policy: str) -> None:
    kind = "purity" if "target_purity" in chosen else "completeness"
    print(f"Thresholds chosen on these galaxies for {kind} >= {chosen[f'target_{kind}']:g} "
          f"(policy {policy}, written to {chosen['policy_file']}):")
    for cls, s in chosen["achieved"].items():
        print(f"  {cls:6s} P_{cls} >= {s['threshold']:.6g}: purity {s['purity']:.4f}, completeness "
              f"{s['completeness']:.4f} ({s['n_called']} called {cls}, {s['n_true']} true {cls})")
    print("The summary and confusion matrix below are computed with this chosen policy.")


def _gallery(args: argparse.Namespace, out: Path, sources: dict) -> Path | None:
    """``OUTPUT/gallery.html``, from ``--images`` or else the images PREDICTIONS record.

    Without ``--images``, a gallery that cannot be made from what the table
    records (none recorded, moved, or not those of its ids) is a note on
    stderr, and None.
    """
    from gamornet.gallery import make_gallery
    from gamornet.gallery.make import NoRecordedImagesError

    try:
        return make_gallery(args.predictions, output=out / "gallery.html", catalog=args.catalog, policy=args.policy,
                            progress=False, **sources)
    except NoRecordedImagesError as exc:
        reason = exc.reason
    except ValueError as exc:
        if args.images is not None:
            raise
        reason = "from the images PREDICTIONS record, " + " ".join(str(exc).split())
    print(f"gamornet evaluate: note: gallery not written: {reason}; pass --images",
          file=sys.stderr)
    return None


def _main(args: argparse.Namespace) -> int:
    sources = image_sources(args)  # --source-catalog without --images refused before anything is written
    result = write_report(args.predictions, args.catalog, args.output, args.policy,
                          target_purity=args.target_purity, target_completeness=args.target_completeness)
    if "chosen" in result:
        chosen = result.pop("chosen")
        _print_chosen(chosen, result["policy"])
        args.policy = chosen["policy_file"]  # the gallery labels with it too
    if not result.pop("policy_recorded"):
        print("gamornet evaluate: note: PREDICTIONS record no threshold policy (a .csv table holds metadata only in "
              f"its .csv.meta.json sidecar); scoring with {result['policy']}. Choose another with --policy.",
              file=sys.stderr)
    for key, value in result.items():
        print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
    out = Path(args.output)
    written = [out / "confusion_matrix.png", out / "threshold_sweep.png", out / "summary.json"]
    gallery = _gallery(args, out, sources) if args.gallery else None
    if gallery is not None:
        written.append(gallery)
    print("Wrote " + ", ".join(map(str, written)))
    return 0
