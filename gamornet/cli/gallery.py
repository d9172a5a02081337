"""``gamornet gallery``: a static HTML page of the galaxies behind a prediction table.

Examples::

    gamornet gallery sdss.ecsv --output gallery.html      # the images the table records (gamornet predict)
    gamornet gallery sdss.ecsv --images cutouts/ --output gallery.html
    gamornet gallery sim.ecsv --images sim/ --catalog sim/catalog.ecsv --png gallery.png --output gallery.html
    gamornet gallery sdss.ecsv --source-catalog galaxies.ecsv --images 'tiles/*.fits' --output gallery.html
"""

from __future__ import annotations

import argparse

from gamornet.cli.args import argument_type, int_at_least
from gamornet.core.thresholds import get_policy

__all__ = ["register_cli", "add_image_arguments"]

_SECTIONS = ("disk", "indeterminate", "bulge", "borderline", "mistakes")


def _policy(text: str) -> str:
    get_policy(text)
    return text


def add_image_arguments(parser) -> None:
    """``--images INPUT...`` and ``--source-catalog CATALOG``: the images a prediction table was made from."""
    parser.add_argument("--images", nargs="+", metavar="INPUT",
                        help="what gamornet predict was given: FITS / .npy files, directories (a cutout or simulated "
                        "folder), quoted glob patterns; with --source-catalog, the survey images (default: the "
                        "inputs recorded in PREDICTIONS by gamornet predict)")
    parser.add_argument("--source-catalog", metavar="CATALOG",
                        help="for a table predicted with gamornet predict --catalog CATALOG --images ...: that "
                        "catalogue (the galaxies shown are cut again from --images)")


def register_cli(subparsers) -> None:
    """Add ``gamornet gallery``."""
    p = subparsers.add_parser(
        "gallery", help="an HTML page of the galaxies behind a prediction table",
        description="Write one self-contained HTML page (no network needed) showing sampled galaxies of a "
        "prediction table, a section per label, the borderline cases of the threshold policy and, with --catalog, "
        "every kind of mistake. Only the images shown are read. Without --images, the images are those the table "
        "records (gamornet predict records what it was given).")
    p.add_argument("predictions", metavar="PREDICTIONS", help="table with id, p_disk, p_indeterminate, p_bulge")
    add_image_arguments(p)
    p.add_argument("--catalog", metavar="TRUTH", help="true classes: a table with id and label or bt")
    p.add_argument("--per-class", type=int_at_least("per_class", 1), default=48, metavar="N",
                   help="thumbnails per section at most (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least("seed", 0), default=0, help="seed of the sampling (default: 0)")
    p.add_argument("--policy", type=argument_type(_policy), metavar="NAME",
                   help="threshold policy (default: the one recorded in PREDICTIONS)")
    p.add_argument("--sections", nargs="+", choices=_SECTIONS, metavar="NAME",
                   help=f"sections to show, of {', '.join(_SECTIONS)} (default: all; mistakes needs --catalog)")
    p.add_argument("--interval", choices=("percentile", "zscale"), default="percentile",
                   help="display interval of the asinh stretch (default: %(default)s)")
    p.add_argument("--title", help="page title")
    p.add_argument("--png", metavar="FILE", help="also write the gallery as one PNG figure")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--output", "-o", default="gallery.html", metavar="FILE", help="page (default: gallery.html)")
    p.set_defaults(func=_main)


def image_sources(args: argparse.Namespace) -> dict:
    """``images`` or ``catalog_images`` of :func:`gamornet.gallery.make_gallery` from the parsed arguments.

    Both None without ``--images``: the gallery then uses the inputs the table records.

    Raises
    ------
    ValueError
        For ``--source-catalog`` without ``--images``.
    """
    if args.source_catalog is not None and args.images is None:
        raise ValueError(f"--source-catalog needs --images. Received: --source-catalog={args.source_catalog}")
    if args.source_catalog is not None:
        return {"images": None, "catalog_images": (args.source_catalog, args.images)}
    return {"images": args.images, "catalog_images": None}


def _main(args: argparse.Namespace) -> int:
    from gamornet.gallery import make_gallery

    path = make_gallery(args.predictions, output=args.output, catalog=args.catalog, per_class=args.per_class,
                        seed=args.seed, policy=args.policy, sections=args.sections, title=args.title, png=args.png,
                        progress=not args.quiet, interval=args.interval, **image_sources(args))
    if not args.quiet:
        print(f"Wrote {path}" + (f" and {args.png}" if args.png else ""))
    return 0
