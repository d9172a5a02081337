"""``gamornet convert SRC DST``: move a model between the Keras and TFLearn forms."""

from __future__ import annotations

import argparse

from gamornet.cli.args import input_shape

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add the ``convert`` subcommand: ``gamornet convert SRC DST [--input-shape SHAPE]``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a model between the Keras and TFLearn forms",
        description="Convert a GaMorNet model. DST ending in .keras, .h5 or .hdf5 is written as a Keras 3 model; "
        "anything else as a TFLearn checkpoint prefix (PREFIX.index, .meta, .data-00000-of-00001). SRC is a Keras "
        "file, a TFLearn checkpoint prefix or a published model name (SDSS_sim, ...; the flavour opposite to DST).",
    )
    parser.add_argument("src", metavar="SRC", help="Keras file, TFLearn checkpoint prefix or published model name")
    parser.add_argument("dst", metavar="DST", help="Keras file (.keras/.h5/.hdf5) or TFLearn checkpoint prefix")
    parser.add_argument("--input-shape", type=input_shape, default=None, metavar="SHAPE",
                        help="SDSS, CANDELS or H,W,C (default: the source model's, else the preset it fits)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from gamornet.convert import convert

    written = convert(args.src, args.dst, args.input_shape, progress=not args.quiet)
    if not args.quiet:
        print(f"Wrote {written}")
    return 0
