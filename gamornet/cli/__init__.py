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
import contextlib
import errno
import importlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator

from gamornet import __version__

__all__ = ["main", "build_parser"]

#: Modules providing subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "gamornet.cli.demo",
    "gamornet.cli.simulate",
    "gamornet.cli.predict",
    "gamornet.cli.evaluate",
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


#: TensorFlow's C++ log level set by the command line when the user has not chosen one (3: no INFO, WARNING, ERROR).
TF_LOG_LEVEL = "3"

#: Lines TensorFlow writes to stderr while it is imported that say nothing to a user of the command line.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "  # absl INFO / WARNING lines (oneDNN, cudart_stub, cpu_feature_guard)
    r"|E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] (?:Unable to register cu|failed call to cuInit)"
    r"|To enable the following instructions: .*rebuild TensorFlow"
)


@contextlib.contextmanager
def _startup_lines_dropped() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file inside; then write back its lines that are not start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _STARTUP_NOISE.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's loader with TensorFlow's start-up noise dropped (see :class:`_QuietStartup`)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module looks imported as usual
        with _startup_lines_dropped():
            self.loader.exec_module(module)


class _QuietStartup(importlib.abc.MetaPathFinder):
    """Import hook: the first import of ``tensorflow`` runs with its start-up lines dropped, then the hook leaves."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_startup() -> None:
    """Keep TensorFlow's start-up lines off the terminal, unless the user set ``TF_CPP_MIN_LOG_LEVEL``.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` to :data:`TF_LOG_LEVEL` (also for the
    processes the command starts) and, if TensorFlow is not imported yet,
    drops the absl and CPU-feature lines it writes while it is imported.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") is not None:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = TF_LOG_LEVEL
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietStartup) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietStartup())


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
