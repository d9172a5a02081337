"""Keeping TensorFlow's start-up lines off the terminal of the command line.

TensorFlow writes lines when it is imported (its oneDNN notice, "failed call
to cuInit", the CPU-feature notice, absl's "All log messages before
absl::InitializeLog()") that say nothing to a user of ``gamornet``, and
``TF_CPP_MIN_LOG_LEVEL`` alone does not silence all of them: they are
written before the level takes effect.  :func:`quiet_startup` sets the level
and drops those lines (and only those) during TensorFlow's first import,
unless the user set ``TF_CPP_MIN_LOG_LEVEL``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["TF_LOG_LEVEL", "quiet_startup"]


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

    def __init__(self, loader, finder: _QuietStartup):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module looks imported as usual
        with contextlib.suppress(ValueError):  # TensorFlow is imported now: the hook's work is done
            sys.meta_path.remove(self.finder)
        with _startup_lines_dropped():
            self.loader.exec_module(module)


class _QuietStartup(importlib.abc.MetaPathFinder):
    """Import hook: the first import of ``tensorflow`` runs with its start-up lines dropped, then the hook leaves.

    It stays in place until TensorFlow is really imported: a look-up alone
    (``importlib.util.find_spec("tensorflow")``, as done to tell whether
    TensorFlow is installed) does not use it up.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
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
