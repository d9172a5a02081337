"""``gamornet cutout``: cutouts on a model's grid from survey images and a catalogue, into a folder."""

from __future__ import annotations

import argparse
from collections import Counter

from gamornet.cli.args import add_grid_arguments, hdu, int_at_least, number

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add ``gamornet cutout``."""
    p = subparsers.add_parser(
        "cutout", help="cut the sources of a catalogue out of survey images, on a model's grid",
        description="Cut every source of CATALOG out of the FITS IMAGEs (celestial WCS, any projection), centred, "
        "north up, east left, on the grid of a model (--survey, or --pixel-scale and --size): pixels are copied "
        "where the image has that scale and orientation, else resampled with flux conserved. Writes OUTPUT/images.npy"
        " and OUTPUT/catalog.ecsv (one row per catalogue row, with cutout_flag), which `gamornet predict OUTPUT` "
        "reads.")
    p.add_argument("catalog", metavar="CATALOG", help="table with RA and Dec (ECSV, CSV, FITS, VOTable, Parquet)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="FITS images (tiles or mosaics) with a celestial "
                   "WCS: paths, or URLs (http(s)://, s3:// with gamornet[cloud]) (only the needed parts read)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    add_grid_arguments(p, "grid of the published models", "the grid")
    p.add_argument("--hdu", type=hdu, metavar="N|NAME", help="image HDU (default: the first 2-D one with a WCS)")
    p.add_argument("--keep-columns", metavar="A,B,...", type=lambda text: [c for c in text.split(",") if c],
                   help="catalogue columns to keep (default: all)")
    p.add_argument("--max-nan-fraction", type=number("max_nan_fraction", low=0), default=0.25,
                   metavar="F", help="flag cutouts with more NaN pixels as too_many_nan (default: 0.25)")
    p.add_argument("--workers", type=int_at_least("workers", 1), metavar="N", help="threads (default: CPU count)")
    p.add_argument("--fits", action="store_true", help="also write OUTPUT/fits/cutout_NNNNNN.fits with WCS")
    p.add_argument("--overwrite", action="store_true", help="replace cutouts already in OUTPUT")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run after its last complete chunk")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from gamornet.cutouts import make_cutouts

    if args.survey is None and (args.pixel_scale is None or args.size is None):
        raise ValueError("give --survey SDSS|CANDELS, or --pixel-scale and --size. Received: "
                         f"--survey=None, --pixel-scale={args.pixel_scale}, --size={args.size}")
    table, _ = make_cutouts(
        args.catalog, args.images, args.output, survey=args.survey, pixel_scale=args.pixel_scale, size=args.size,
        ra_column=args.ra_column, dec_column=args.dec_column, id_column=args.id_column, hdu=args.hdu,
        keep_columns=args.keep_columns, fits=args.fits, overwrite=args.overwrite, resume=args.resume,
        progress=not args.quiet, max_nan_fraction=args.max_nan_fraction, workers=args.workers)
    if not args.quiet:
        counts = Counter(table["cutout_flag"].tolist())
        flags = ", ".join(f"{flag} {counts.get(flag, 0)}" for flag in ("ok", "partial", "too_many_nan", "off_image"))
        print(f"Wrote {len(table)} cutouts ({flags}) to {args.output}")
    return 0
