"""The chunks of a :func:`gamornet.predict_files` run: finished work kept on disk, so a run can resume.

Finished chunks go to ``<output>.chunks/`` beside a ``manifest.json`` that
records everything deciding their content (:class:`ChunkStore`), the id of
the run now writing them and, when the run failed, the error it failed with.

Chunks may be written by other processes than the one holding the store (the
workers of a Dask cluster, :mod:`gamornet.predict.distributed`), through
:func:`write_chunk` with the run id: a chunk whose run is no longer the one
recorded in the manifest (a task left running by an earlier, killed run) is
refused instead of being renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil

import numpy as np

from gamornet.core.files import atomic_path
from gamornet.predict.tables import CHUNKS_SUFFIX

__all__ = ["ChunkStore", "StaleChunkError", "write_chunk", "chunk_path"]

#: Name of a complete chunk file.
_CHUNK_NAME = re.compile(r"chunk-(\d{6,})\.npz")
_MANIFEST = "manifest.json"


class StaleChunkError(RuntimeError):
    """A chunk computed for a run that is no longer the one writing its folder (it is not saved)."""


def chunk_path(directory: str, k: int) -> str:
    """Path of chunk ``k`` in a chunk folder."""
    return os.path.join(directory, f"chunk-{k:06d}.npz")


def _recorded_run(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, _MANIFEST)) as f:
            return json.load(f).get("run_id")
    except (OSError, ValueError):
        return None


def write_chunk(directory: str, k: int, arrays: dict[str, np.ndarray], run_id: str | None = None) -> None:
    """Write chunk ``k`` to ``directory`` atomically (synced to disk before its rename).

    Parameters
    ----------
    directory : str
        The chunk folder (``<output>.chunks``).
    k : int
        Chunk number.
    arrays : dict of numpy.ndarray
        Its content.
    run_id : str, optional
        The run the chunk was computed for: just before the rename, the
        manifest must still name this run, else nothing is written.

    Raises
    ------
    StaleChunkError
        If ``run_id`` is given and the manifest names another run (or none).
    """
    with atomic_path(chunk_path(directory, k), suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if run_id is not None:
            recorded = _recorded_run(directory)
            if recorded != run_id:
                raise StaleChunkError(f"chunk {k} was computed for run {run_id}, but {directory} now belongs to "
                                      f"run {recorded}; it was not saved")


class ChunkStore:
    """Finished chunks: ``<output>.chunks/chunk-NNNNNN.npz`` beside a ``manifest.json`` (in memory without output).

    Each chunk file appears by an atomic rename once complete, so after a
    crash every chunk file present is whole.  The manifest holds everything
    that decides the chunks' content; resuming with other settings is refused.
    A run that fails (an exception, not an interruption) either removes the
    directory, when no chunk was complete, or records its error in the
    manifest (:meth:`fail`), so that a later run tells a failed run from an
    interrupted one.  Every run (new or resumed) records a fresh
    :attr:`run_id` in the manifest; :func:`write_chunk` refuses chunks of
    another run.  Chunks may complete in any order (on a cluster):
    :meth:`done` lists the complete ones.

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
        self.run_id = secrets.token_hex(8)
        if self.dir is None:
            return
        if overwrite and not resume:
            self.remove()
        if os.path.isdir(self.dir) and os.path.exists(self._manifest_path):  # (no manifest yet: no chunk either)
            with open(self._manifest_path) as f:
                old = json.load(f)
            if not resume:
                if old.get("failed"):
                    what = (f"the chunks of a failed run ({len(self.done())} complete; it failed with: "
                            f"{old['failed']}): pass resume=True (--resume) to continue it once the cause is fixed")
                else:
                    what = "the chunks of an interrupted run: pass resume=True (--resume) to continue it"
                raise FileExistsError(f"{self.dir} holds {what}, or overwrite=True (--overwrite) to discard it. "
                                      "Received: resume=False")
            changed = [f"{k} was {old[k]!r}, now {v!r}" if k in old else f"{k} was not recorded, now {v!r}"
                       for k, v in manifest.items() if old.get(k) != v]
            if changed:
                raise ValueError(f"Cannot resume from {self.dir}: {'; '.join(changed)}. Rerun with the same "
                                 "arguments, or delete that directory to start again.")
        os.makedirs(self.dir, exist_ok=True)
        self._write_manifest(manifest)

    @property
    def _manifest_path(self) -> str:
        return os.path.join(self.dir, _MANIFEST)

    def _write_manifest(self, manifest: dict) -> None:
        with atomic_path(self._manifest_path) as tmp, open(tmp, "w") as f:
            json.dump({**manifest, "run_id": self.run_id}, f, indent=1)

    def done(self) -> set[int]:
        """Numbers of the complete chunks (any order: a cluster completes them out of order)."""
        if self.dir is None:
            return set(self.memory)
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        return {int(m.group(1)) for m in map(_CHUNK_NAME.fullmatch, names) if m}

    def n_done(self) -> int:
        """Number of complete chunks, counted from the first."""
        done, k = self.done(), 0
        while k in done:
            k += 1
        return k

    def save(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        """Store chunk ``k`` (atomically, synced to disk)."""
        if self.dir is None:
            self.memory[k] = arrays
            return
        write_chunk(self.dir, k, arrays)

    def load(self, k: int) -> dict[str, np.ndarray]:
        """The arrays of chunk ``k``."""
        if self.dir is None:
            return self.memory[k]
        with np.load(chunk_path(self.dir, k), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def fail(self, error: BaseException) -> None:
        """After a failed run: remove the directory if no chunk is complete, else record ``error`` in the manifest."""
        if self.dir is None or not os.path.isdir(self.dir):
            return
        if not self.done():
            self.remove()
            return
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        with contextlib.suppress(OSError):
            self._write_manifest({**self.manifest, "failed": message})

    def remove(self) -> None:
        """Delete the chunk directory."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
