"""The chunks of a :func:`gamornet.predict_files` run: finished work kept on disk, so a run can resume.

Finished chunks go to ``<output>.chunks/`` beside a ``manifest.json`` that
records everything deciding their content (:class:`ChunkStore`), and, when
the run failed, the error it failed with.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np

from gamornet.core.files import atomic_path
from gamornet.predict.tables import CHUNKS_SUFFIX

__all__ = ["ChunkStore"]


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
        with atomic_path(self._manifest_path) as tmp, open(tmp, "w") as f:
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
        with atomic_path(self._path(k), suffix=".npz") as tmp:
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
