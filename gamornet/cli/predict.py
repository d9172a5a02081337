"""``gamornet predict`` (classify image files into a table) and ``gamornet merge`` (join shard tables).

Examples::

    gamornet predict 'cutouts/*.fits' --model SDSS_tl --output sdss.ecsv
    gamornet predict stack.npy --model my_model.keras --input-shape 83,83,1 --shard 3/8 --output part3.fits
    gamornet merge part*.fits --output all.fits
    gamornet predict cutouts/ --model SDSS_tl --output sdss.parquet --workers 4
    gamornet predict cutouts/ --model SDSS_tl --output sdss.parquet --scheduler scheduler.json
    gamornet predict --catalog galaxies.ecsv --images 'tiles/*.fits' --model SDSS_tl --output sdss.ecsv

TensorFlow is imported only when a command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

from gamornet.cli.args import add_grid_arguments, argument_type, hdu, input_shape, int_at_least, number
from gamornet.core.thresholds import get_policy
from gamornet.core.validation import ENGINES, PRECISIONS
from gamornet.published.registry import FLAVORS

__all__ = ["register_cli"]


def _policy(text: str) -> str:
    get_policy(text)
    return text


def _shard(text: str) -> str:
    from gamornet.predict.tables import parse_shard

    parse_shard(text)
    return text


def _scheduler(text: str) -> str:
    from gamornet.predict.distributed import check_scheduler

    return check_scheduler(text)


def _add_catalog_arguments(p) -> None:
    """The arguments of ``gamornet predict --catalog CATALOG --images IMAGE ...``."""
    catalog = p.add_argument_group("one step from a catalogue", "cut every catalogue row out of survey images on the "
                                   "fly, on the model's grid (its card, else --survey, or --pixel-scale and --size), "
                                   "and write every row with its cutout_flag and columns; rows whose cutout is not "
                                   "usable get masked probabilities")
    catalog.add_argument("--catalog", metavar="CATALOG", help="table with RA and Dec (ECSV, CSV, FITS, VOTable, "
                         "Parquet), instead of INPUTs")
    catalog.add_argument("--images", nargs="+", metavar="IMAGE", help="FITS survey images with a celestial WCS: "
                         "paths or URLs (http(s)://, s3://)")
    add_grid_arguments(catalog, "grid of a model file without a card", "the cutouts")


def register_cli(subparsers) -> None:
    """Add the ``predict`` and ``merge`` subcommands."""
    p = subparsers.add_parser(
        "predict",
        help="classify the galaxies of FITS / .npy files into a table",
        description="Classify galaxy images (FITS files, .npy stacks, directories, glob patterns) as disk, "
        "indeterminate or bulge, writing a table (.ecsv, .csv, .fits, .parquet). Bad files are reported before "
        "anything is predicted. Large runs are saved in chunks (<output>.chunks/) and can be resumed.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="FITS / .npy files, directories or quoted glob patterns "
                   "(or --catalog and --images)")
    _add_catalog_arguments(p)
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="published model (SDSS_sim, SDSS_tl, CANDELS_sim, CANDELS_tl) or a model file / prefix")
    p.add_argument("--flavor", choices=FLAVORS, default="keras", help="backend (default: keras)")
    p.add_argument("--input-shape", type=input_shape, metavar="SDSS|CANDELS|H,W,C",
                   help="needed for a model file; published models know theirs")
    p.add_argument("--policy", type=argument_type(_policy), metavar="NAME|FILE.json",
                   help="threshold policy: keras_sdss, keras_candels, tflearn_sdss, tflearn_candels, or a policy file "
                   "(the policy.json of gamornet evaluate --target-purity)")
    p.add_argument("--output", "-o", metavar="FILE", help="table to write (default: CSV on standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--batch-size", type=int_at_least("batch_size", 1), default=64, metavar="B",
                   help="images per forward pass (default: 64; at most the number of images is used)")
    p.add_argument("--chunk-size", type=int_at_least("chunk_size", 1), default=4096, metavar="K",
                   help="images per saved chunk (default: 4096)")
    p.add_argument("--shard", type=argument_type(_shard), metavar="I/N",
                   help="predict only the I-th (1-based) of N contiguous blocks of the sorted images")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted or failed run from its last complete chunk (a finished output is "
                   "kept only if it is the table of the same run)")
    p.add_argument("--mc-samples", type=int_at_least("mc_samples", 0), default=0, metavar="N",
                   help="add Monte-Carlo dropout mean and std from N passes (keras flavor)")
    p.add_argument("--seed", type=int_at_least("seed", 0), default=0, help="seed of the MC passes")
    p.add_argument("--crop-pad", type=number("crop_pad"), metavar="VALUE",
                   help="centre-crop / pad images of another size, padding with VALUE")
    p.add_argument("--nan-fill", type=number("nan_fill"), metavar="VALUE",
                   help="replace NaN / inf pixels with VALUE")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images, listing them in <output>.skipped.csv")
    p.add_argument("--check-data", action="store_true",
                   help="also read all pixels before predicting, so NaN pixels are reported up front")
    p.add_argument("--hdu", type=hdu, metavar="N|NAME", help="FITS HDU number or EXTNAME (of the --images with "
                   "--catalog; default: the first 2-D one with a WCS)")
    p.add_argument("--strict", action="store_true",
                   help="stop, before predicting, when FITS headers (pixel scale, FILTER, BUNIT) differ from the "
                   "model's card (default: warn)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what computes the probabilities: auto (default: openvino when installed and no NVIDIA GPU "
                   "is visible, else keras; keras with --mc-samples), keras, openvino (converted once, stored in the "
                   "cache), tflearn (TFLearn models)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32 (default; reproduces published predictions) or bfloat16 (faster with "
                   "openvino on CPUs with avx512_bf16 / amx_bf16, see the performance page; probabilities move by up "
                   "to ~1e-2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int_at_least("workers", 1), metavar="N",
                         help="predict on a Dask cluster of N worker processes (one thread each) started on this "
                         "machine (needs gamornet[dask])")
    cluster.add_argument("--scheduler", type=argument_type(_scheduler), metavar="ADDRESS",
                         help="predict on a running Dask cluster: its scheduler's address (tcp://HOST:PORT) or "
                         "scheduler file (dask scheduler --scheduler-file FILE); the workers must see the input and "
                         "output files")
    p.add_argument("--worker-timeout", type=number("worker_timeout", low=0, low_open=True), default=60.0,
                   metavar="SECONDS", help="with --workers / --scheduler: end the run with an error when the cluster "
                   "has had no workers for SECONDS (default: 60); complete chunks are kept for --resume")
    p.set_defaults(func=_predict)

    m = subparsers.add_parser("merge", help="join the shard tables of one catalogue",
                              description="Join shard tables written by `gamornet predict --shard`, checking "
                              "that their metadata agree (settings, engine, precision, run digest) and no id appears "
                              "twice. A .csv shard needs the <table>.csv.meta.json sidecar written beside it.")
    m.add_argument("tables", nargs="+", metavar="SHARD_TABLE")
    m.add_argument("--output", "-o", required=True, metavar="FILE")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.set_defaults(func=_merge)


def _summary(table, output: str | None) -> str:
    counts = Counter(table["label"].tolist())  # masked labels (rows not predicted) count as None
    labels = ", ".join(f"{name} {counts.get(name, 0)}" for name in ("disk", "indeterminate", "bulge"))
    skipped = table.meta.get("nskipped", 0)
    engine = f", {table.meta['engine']} {table.meta['precision']}" if "engine" in table.meta else ""
    return f"{len(table)} images ({labels}; {skipped} skipped{engine})" + (f" -> {output}" if output else "")


def _predict(args: argparse.Namespace) -> int:
    from gamornet.core.notices import show_bfloat16_notice

    if bool(args.inputs) == (args.catalog is not None) or (args.catalog is not None) != (args.images is not None):
        raise ValueError("give INPUT files, or --catalog with --images. Received: "
                         f"INPUT={args.inputs}, --catalog={args.catalog}, --images={args.images}")
    show_bfloat16_notice(args.precision, args.engine, args.flavor, args.quiet)  # float32 on a bfloat16 CPU
    from gamornet.predict.distributed import cluster_client
    from gamornet.predict.files import predict_files

    route = {"catalog": args.catalog, "images": args.images, "survey": args.survey, "pixel_scale": args.pixel_scale,
             "size": args.size, "ra_column": args.ra_column, "dec_column": args.dec_column,
             "id_column": args.id_column}
    try:
        quiet = not getattr(args, "debug", False)  # Dask's own log lines only with gamornet --debug
        with warnings.catch_warnings(record=True) as caught, cluster_client(args.scheduler, args.workers,
                                                                            quiet=quiet) as client:
            warnings.simplefilter("always", UserWarning)
            table = predict_files(
                args.inputs or None, model=args.model, flavor=args.flavor, input_shape=args.input_shape,
                policy=args.policy,
                output=args.output, batch_size=args.batch_size, shard=args.shard, resume=args.resume,
                mc_samples=args.mc_samples, crop_pad=args.crop_pad, nan_fill=args.nan_fill, skip_bad=args.skip_bad,
                progress=not args.quiet, chunk_size=args.chunk_size, hdu=args.hdu, overwrite=args.overwrite,
                check_data=args.check_data, seed=args.seed, client=client, engine=args.engine,
                precision=args.precision, worker_timeout=args.worker_timeout, strict=args.strict, **route,
            )
        for warning in caught:
            print(f"gamornet predict: warning: {warning.message}", file=sys.stderr)
    except KeyboardInterrupt:
        hint = " (rerun with --resume to continue)" if args.output else ""
        print(f"gamornet predict: interrupted{hint}", file=sys.stderr)
        return 130
    if args.output is None:
        table.write(sys.stdout, format="ascii.csv")
    elif not args.quiet:
        print(_summary(table, args.output))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from gamornet.predict.tables import merge_tables

    table = merge_tables(args.tables, args.output, overwrite=args.overwrite)
    print(_summary(table, args.output))
    return 0
