"""The ``gamornet`` command line (also ``python -m gamornet``).

Each subcommand lives in its own module, which exposes
``register_cli(subparsers)``: it adds its parser and sets ``func`` (a callable
taking the parsed arguments and returning an exit code).  Modules are
imported lazily so that ``gamornet --help`` stays fast.

A failing command ends with one line on stderr (``gamornet COMMAND: error:
MESSAGE``, e.g. ``cannot write PATH: No space left on device``) and exit
status 2; ``gamornet --debug COMMAND ...`` shows the traceback instead.

TensorFlow's start-up lines (its oneDNN notice, "failed call to cuInit",
the CPU-feature notice, absl's "All log messages before
absl::InitializeLog()") are kept off the terminal: unless
``TF_CPP_MIN_LOG_LEVEL`` is set, the command line sets it to ``3`` (errors
of TensorFlow's C++ code reach Python as exceptions anyway) and drops those
lines when TensorFlow is first imported.  Set ``TF_CPP_MIN_LOG_LEVEL``
yourself (``0`` shows everything) to see them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from gamornet import __version__
from gamornet.cli.startup import quiet_startup

__all__ = ["main", "build_parser"]

#: Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "gamornet.cli.demo",
    "gamornet.cli.simulate",
    "gamornet.cli.cutout",
    "gamornet.cli.predict",
    "gamornet.cli.evaluate",
    "gamornet.cli.gallery",
    "gamornet.cli.models",
    "gamornet.cli.convert",
    "gamornet.cli.train",
    "gamornet.cli.performance",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gamornet",
        description="GaMorNet: classify galaxy images as disk-dominated, indeterminate or bulge-dominated.",
    )
    parser.add_argument("--version", action="version", version=f"gamornet {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of a one-line message")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


#: Error numbers only writing can give: no space, quota, read-only file system, file too large.
_WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG")
                          if hasattr(errno, name))


def error_message(exc: BaseException) -> str:
    """One line describing an error of a command.

    Errors of the operating system (no space left, no permission, a missing
    directory...) name the file and the cause; an output that could not be
    written reads ``cannot write PATH: CAUSE``.  Other errors give their
    message.
    """
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        from gamornet.core.files import OUTPUT_ERROR_FLAG

        cause = exc.strerror or str(exc)
        path = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            path = f"{path} -> {os.fsdecode(exc.filename2)}"
        writing = getattr(exc, OUTPUT_ERROR_FLAG, False) or exc.errno in _WRITE_ERRNOS
        return f"cannot write {path}: {cause}" if writing else f"{path}: {cause}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split("\n")[:1]) if isinstance(exc, OSError) else text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    A failing command (bad input, or an error of the operating system such
    as a full disk or an unwritable directory) prints
    ``gamornet COMMAND: error: MESSAGE`` on stderr and returns 2;
    ``gamornet --debug COMMAND`` shows the traceback instead.  TensorFlow's
    start-up lines are dropped unless ``TF_CPP_MIN_LOG_LEVEL`` is set
    (:func:`quiet_startup`).
    """
    quiet_startup()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"gamornet {args.command}: error: {error_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
