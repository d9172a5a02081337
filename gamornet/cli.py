"""The ``gamornet`` command line (also ``python -m gamornet``).

Each subcommand lives in its own module, which exposes
``register_cli(subparsers)``: it adds its parser and sets ``func`` (a callable
taking the parsed arguments and returning an exit code).  Modules are
imported lazily so that ``gamornet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gamornet import __version__

__all__ = ["main", "build_parser"]

#: Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "gamornet.demo",
    "gamornet.simulate",
    "gamornet.predict_cli",
    "gamornet.evaluate",
    "gamornet.models_cli",
    "gamornet.convert",
    "gamornet.train_cli",
    "gamornet.bench_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gamornet",
        description="GaMorNet: classify galaxy images as disk-dominated, indeterminate or bulge-dominated.",
    )
    parser.add_argument("--version", action="version", version=f"gamornet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"gamornet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
