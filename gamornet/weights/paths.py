"""What a model path names: the file kinds of saved GaMorNet models, and their fingerprints.

Three kinds of saved model exist:

- ``keras``: a Keras 3 ``.keras`` file (a zip archive);
- ``hdf5``: a Keras-2-era (or Keras 3 weights) HDF5 file, ``.h5`` / ``.hdf5``
  (also a ``.keras`` name holding HDF5 data);
- ``checkpoint``: a TFLearn (TF1) checkpoint, three files
  ``<prefix>.index``, ``<prefix>.meta`` and ``<prefix>.data-00000-of-00001``,
  named by their prefix or by any one of the three.

This module is the one place that knows those endings.
"""

from __future__ import annotations

import os

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "KERAS_SUFFIXES",
    "HDF5_MAGIC",
    "ZIP_MAGIC",
    "strip_checkpoint_suffix",
    "is_checkpoint",
    "resolve_checkpoint_prefix",
    "model_kind",
    "model_files",
    "fingerprint",
    "file_magic",
]

#: The three files of a TFLearn (TF1) checkpoint, appended to its prefix.
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".data-00000-of-00001", ".index", ".meta")
#: Endings of Keras model files; any other destination is a checkpoint prefix.
KERAS_SUFFIXES: tuple[str, ...] = (".keras", ".h5", ".hdf5")
#: First bytes of an HDF5 file and of a zip archive.
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def strip_checkpoint_suffix(path) -> str:
    """A checkpoint prefix without ``.index`` / ``.meta`` / ``.data-00000-of-00001``."""
    path = os.fspath(path)
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def is_checkpoint(path) -> bool:
    """Whether ``path`` names a TF1 checkpoint (a prefix with an ``.index`` file, or one of its files)."""
    path = os.fspath(path)
    return path.endswith(CHECKPOINT_SUFFIXES) or os.path.exists(path + ".index")


def resolve_checkpoint_prefix(path, name: str = "model_load_path") -> str:
    """The prefix of an existing TF1 checkpoint, given with or without one of its extensions.

    Raises
    ------
    ValueError
        If ``path`` is not a path.
    FileNotFoundError
        If ``<prefix>.index`` does not exist.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`{name}` must be a TFLearn checkpoint prefix. Received: {name}={path!r}")
    prefix = strip_checkpoint_suffix(path)
    if not os.path.isfile(prefix + ".index"):
        hint = " (a directory: give the checkpoint prefix inside it, e.g. 'dir/check-1000')" if os.path.isdir(
            prefix) else ""
        raise FileNotFoundError(
            f"`{name}` is not an existing TFLearn checkpoint: {prefix + '.index'!r} not found{hint}. "
            f"Received: {name}={os.fspath(path)!r}"
        )
    return prefix


def file_magic(path, size: int = 8) -> bytes:
    """The first ``size`` bytes of a file (fewer for a shorter one)."""
    with open(path, "rb") as f:
        return f.read(size)


def model_kind(path) -> str:
    """``"checkpoint"``, ``"keras"`` (a zip archive named ``.keras``) or ``"hdf5"`` (anything else) for a path.

    Only the name and, for ``.keras`` files, the first bytes are looked at:
    readers report what is wrong inside.
    """
    path = os.fspath(path)
    if is_checkpoint(path):
        return "checkpoint"
    if path.endswith(".keras") and not (os.path.isfile(path) and file_magic(path).startswith(HDF5_MAGIC)):
        return "keras"
    return "hdf5"


def model_files(path) -> list[str]:
    """The files that hold a model's weights (for a checkpoint its ``.index`` and data file)."""
    path = os.fspath(path)
    if is_checkpoint(path):
        prefix = strip_checkpoint_suffix(path)
        return [prefix + ".index", prefix + ".data-00000-of-00001"]
    return [path]


def fingerprint(path) -> tuple:
    """``(absolute path, modification time in ns, size)`` of each file of a model: changes when a file does.

    Files that do not exist are left out (so a missing model has an empty
    fingerprint).
    """
    out = []
    for file in model_files(path):
        try:
            info = os.stat(file)
        except OSError:
            continue
        out.append((os.path.abspath(file), info.st_mtime_ns, info.st_size))
    return tuple(out)
