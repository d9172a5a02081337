"""``gamornet simulate``: simulated bulge + disk training galaxies, on disk or as a montage."""

from __future__ import annotations

import argparse

from gamornet.cli.args import int_at_least

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add ``gamornet simulate``."""
    p = subparsers.add_parser("simulate", help="simulate bulge + disk training galaxies",
                              description="Simulate Sersic bulge + exponential disk galaxies (Ghosh et al. 2020).")
    p.add_argument("--survey", default="SDSS", help="SDSS or CANDELS (default SDSS)")
    p.add_argument("-n", type=int_at_least("-n", 1), required=True, help="number of galaxies")
    p.add_argument("--seed", type=int_at_least("--seed", 0), default=0, help="random seed (default 0)")
    p.add_argument("--output", help="output directory (images.npy, catalog.ecsv, fits/)")
    p.add_argument("--workers", type=int_at_least("--workers", 1), default=None, help="processes (default: all cores)")
    p.add_argument("--chunk-size", type=int_at_least("--chunk-size", 1), default=128, help="images per worker task")
    p.add_argument("--fits", action="store_true", help="also write one FITS file per galaxy")
    p.add_argument("--balanced", action="store_true", help="equal class fractions instead of the paper's sampling")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--montage", metavar="PNG", help="write a grid of the first (up to 16) galaxies to this PNG")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from gamornet.simulate import SURVEYS, save_montage, simulate_galaxies, simulate_to_disk

    if args.output is None and args.montage is None:
        raise ValueError("give --output DIR and/or --montage PNG. Received: neither")
    if not isinstance(args.survey, str) or args.survey.upper() not in SURVEYS:
        raise ValueError(f"--survey must be one of {sorted(SURVEYS)}. Received: --survey={args.survey!r}")
    extra = {"balanced": True} if args.balanced else {}
    if args.output is not None:
        simulate_to_disk(args.output, args.n, args.survey, args.seed, workers=args.workers, fits=args.fits,
                         chunk_size=args.chunk_size, progress=not args.quiet, overwrite=args.overwrite, **extra)
        print(f"Wrote {args.n} {args.survey.upper()} galaxies to {args.output}")
    if args.montage is not None:
        count = min(16, args.n)
        images, catalog = simulate_galaxies(count, args.survey, args.seed, workers=1, progress=False, **extra)
        title = f"{args.survey.upper()} simulated galaxies (seed {args.seed})"
        save_montage(images, catalog, args.montage, title=title)
        print(f"Wrote {args.montage}")
    return 0
