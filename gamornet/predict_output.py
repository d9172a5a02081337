"""The files of a :func:`gamornet.predict_files` run: table formats, the output lock, the chunk store.

- The table is written by its file ending (:data:`OUTPUT_FORMATS`) under a
  temporary name and renamed into place (:func:`write_table`).
- While a run writes ``<output>``, it holds ``<output>.lock`` (a
  :class:`filelock.FileLock`, an advisory ``flock`` that the kernel drops when
  the process ends, however it ends).  A second writer of the same output, in
  another process or the same one, fails at once with
  :class:`OutputLockedError`; nothing of two runs is ever mixed.
- Finished chunks go to ``<output>.chunks/`` beside a ``manifest.json`` that
  records everything deciding their content (:class:`ChunkStore`), and, when
  the run failed, the error it failed with.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import warnings
from collections.abc import Iterator

import filelock
import numpy as np
from astropy.table import Table

from gamornet import utils

__all__ = ["OUTPUT_FORMATS", "CHUNKS_SUFFIX", "SKIPPED_SUFFIX", "LOCK_SUFFIX", "OutputLockedError", "check_output",
           "output_format", "output_lock", "read_table", "write_table", "write_skipped", "ChunkStore"]

#: Table formats by file ending.
OUTPUT_FORMATS: dict[str, str] = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".parquet": "parquet",
}
#: Sidecar directory of an unfinished run: ``<output>.chunks``.
CHUNKS_SUFFIX = ".chunks"
#: Skipped images of a run with ``skip_bad``: ``<output>.skipped.csv``.
SKIPPED_SUFFIX = ".skipped.csv"
#: Lock held while an output is written: ``<output>.lock``.
LOCK_SUFFIX = ".lock"


class OutputLockedError(RuntimeError):
    """Another run (in this or another process) is writing the same output."""


def output_format(path, name: str = "output") -> tuple[str, str]:
    """``(ending, astropy format)`` of a table path, by its ending."""
    lower = os.fspath(path).lower() if isinstance(path, (str, os.PathLike)) else ""
    for ending, fmt in sorted(OUTPUT_FORMATS.items(), key=lambda item: -len(item[0])):
        if lower.endswith(ending):
            if fmt == "parquet":
                try:
                    import pyarrow  # noqa: F401
                except ImportError:
                    raise ValueError(f"`{name}`: writing .parquet needs pyarrow (pip install pyarrow). "
                                     f"Received: {name}={path!r}") from None
            return ending, fmt
    raise ValueError(f"`{name}` must end in one of {list(OUTPUT_FORMATS)}. Received: {name}={path!r}")


def check_output(output, name: str = "output") -> str | None:
    """Check a table path to be written: a path with a known ending, in an existing directory; None stays None.

    Raises
    ------
    TypeError
        If ``output`` is not a path.
    ValueError
        For an unknown ending, or a path naming a directory.
    FileNotFoundError
        If its directory does not exist.
    """
    if output is None:
        return None
    if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
        raise TypeError(f"`{name}` must be a file path (str or os.PathLike) or None. Received: {name}={output!r}")
    output = os.fspath(output)
    output_format(output, name)
    if os.path.isdir(output):
        raise ValueError(f"`{name}` is a directory; give a table file path. Received: {name}={output!r}")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"`{name}`: directory {directory!r} does not exist. Received: {name}={output!r}")
    return output


@contextlib.contextmanager
def output_lock(output: str | None) -> Iterator[None]:
    """Hold ``<output>.lock`` for the duration of the block; fail at once if another run holds it.

    The lock file is removed while still held, just before the lock is
    released, so a finished run leaves no file behind.  (filelock 4 refuses a
    lock taken on a file that was removed meanwhile; with older filelock a
    second writer racing with that removal could, in a window of a few
    microseconds, take the lock of the removed file.)

    Raises
    ------
    OutputLockedError
        If another run holds the lock.
    """
    if output is None:
        yield
        return
    path = output + LOCK_SUFFIX
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OutputLockedError(f"`output` is being written by another run, which holds the lock {path}; wait for "
                                f"it to finish or choose another output. Received: output={output!r}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        lock.release()


def write_table(table: Table, path: str) -> None:
    """Write ``table`` by the file's ending, through a temporary file renamed into place."""
    ending, fmt = output_format(path)
    with utils.atomic_path(path, suffix=ending) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on long FITS keyword values
            table.write(tmp, format=fmt, overwrite=True)


def read_table(path) -> Table:
    """Read a table written by :func:`gamornet.predict_files` or :func:`gamornet.merge_tables`, by its ending.

    Parquet files are read with pyarrow alone (astropy's reader also needs pandas).
    """
    fmt = output_format(path, "path")[1]
    if fmt != "parquet":
        table = Table.read(path, format=fmt)
        table.convert_bytestring_to_unicode()  # FITS gives bytes
        return table
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    data = pq.read_table(path)
    raw = (data.schema.metadata or {}).get(b"table_meta_yaml")
    meta = get_header_from_yaml(raw.decode().split("\n")).get("meta", {}) if raw else {}
    columns = {}
    for name in data.column_names:
        values = data.column(name).to_numpy(zero_copy_only=False)
        columns[name] = values.astype(str) if values.dtype == object else values
    return Table(columns, meta=dict(meta))


def write_skipped(path: str, bad: list[tuple]) -> None:
    """``id,reason`` rows of the skipped images, written atomically."""
    with utils.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "reason"])
        writer.writerows(bad)


class ChunkStore:
    """Finished chunks: ``<output>.chunks/chunk-NNNNNN.npz`` beside a ``manifest.json`` (in memory without output).

    Each chunk file appears by an atomic rename once complete, so after a
    crash every chunk file present is whole.  The manifest holds everything
    that decides the chunks' content; resuming with other settings is refused.
    A run that fails (an exception, not an interruption) either removes the
    directory, when no chunk was complete, or records its error in the
    manifest (:meth:`fail`), so that a later run tells a failed run from an
    interrupted one.

    Parameters
    ----------
    output : str or None
        The table path (None: chunks are kept in memory).
    manifest : dict
        JSON-serialisable settings deciding the chunks' content.
    resume : bool
        Continue the chunks of an earlier run with the same manifest.
    overwrite : bool
        Discard the chunks of an earlier run (unless ``resume``).
    """

    def __init__(self, output: str | None, manifest: dict, resume: bool, overwrite: bool = False):
        self.dir, self.memory, self.manifest = (None if output is None else output + CHUNKS_SUFFIX), {}, manifest
        if self.dir is None:
            return
        if overwrite and not resume:
            self.remove()
        if os.path.isdir(self.dir) and os.path.exists(self._manifest_path):  # (no manifest yet: no chunk either)
            with open(self._manifest_path) as f:
                old = json.load(f)
            if not resume:
                if old.get("failed"):
                    what = (f"the chunks of a failed run ({self.n_done()} complete; it failed with: {old['failed']}): "
                            "pass resume=True (--resume) to continue it once the cause is fixed")
                else:
                    what = "the chunks of an interrupted run: pass resume=True (--resume) to continue it"
                raise FileExistsError(f"{self.dir} holds {what}, or overwrite=True (--overwrite) to discard it. "
                                      "Received: resume=False")
            changed = [f"{k} was {old[k]!r}, now {v!r}" if k in old else f"{k} was not recorded, now {v!r}"
                       for k, v in manifest.items() if old.get(k) != v]
            if changed:
                raise ValueError(f"Cannot resume from {self.dir}: {'; '.join(changed)}. Rerun with the same "
                                 "arguments, or delete that directory to start again.")
            if "failed" not in old:
                return
        os.makedirs(self.dir, exist_ok=True)
        self._write_manifest(manifest)

    @property
    def _manifest_path(self) -> str:
        return os.path.join(self.dir, "manifest.json")

    def _write_manifest(self, manifest: dict) -> None:
        with utils.atomic_path(self._manifest_path) as tmp, open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)

    def _path(self, k: int) -> str:
        return os.path.join(self.dir, f"chunk-{k:06d}.npz")

    def n_done(self) -> int:
        """Number of complete chunks, counted from the first."""
        k = 0
        while self.dir is not None and os.path.exists(self._path(k)):
            k += 1
        return k

    def save(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        """Store chunk ``k`` (atomically, synced to disk)."""
        if self.dir is None:
            self.memory[k] = arrays
            return
        with utils.atomic_path(self._path(k), suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())

    def load(self, k: int) -> dict[str, np.ndarray]:
        """The arrays of chunk ``k``."""
        if self.dir is None:
            return self.memory[k]
        with np.load(self._path(k), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def fail(self, error: BaseException) -> None:
        """After a failed run: remove the directory if no chunk is complete, else record ``error`` in the manifest."""
        if self.dir is None or not os.path.isdir(self.dir):
            return
        if self.n_done() == 0:
            self.remove()
            return
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        with contextlib.suppress(OSError):
            self._write_manifest({**self.manifest, "failed": message})

    def remove(self) -> None:
        """Delete the chunk directory."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
