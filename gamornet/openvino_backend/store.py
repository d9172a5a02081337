"""Converted models on disk: one folder per (model file, input shape, LRN flavour, versions).

Layout, under ``<cache>/openvino/`` (``<cache>`` being
:func:`gamornet.published.models.cache_dir`)::

    <key>/model.xml       the graph (OpenVINO IR)
    <key>/model.bin       the weights, float32 (saved with compress_to_fp16=False)
    <key>/gamornet.json   what it was converted from: the description below, file sizes
    <key>.lock            held while the folder is being made

``<key>`` is a digest of the *description*, a JSON-able dict naming the
model file (its path, modification time and size), the input shape, the
LRN flavour asked for and the versions of gamornet, Keras and OpenVINO:
any change gives another folder, so a folder never changes once written.
It is written into a temporary folder beside it and renamed into place,
so readers see a whole folder or none; the lock makes concurrent
processes convert a model once.  :func:`prune_entries` removes the folders
of earlier versions of the same model file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import filelock

__all__ = ["FORMAT", "MODEL_XML", "MODEL_BIN", "MANIFEST", "entry_key", "find_entry", "conversion_lock",
           "save_entry", "remove_entry", "prune_entries"]

#: Version of the folder layout (part of every key).
FORMAT = 1
MODEL_XML, MODEL_BIN, MANIFEST = "model.xml", "model.bin", "gamornet.json"
_PART = ".part"


def entry_key(description: dict) -> str:
    """Folder name of a description: the first 24 hex digits of the SHA-256 of its sorted JSON."""
    text = json.dumps({**description, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_manifest(directory: Path) -> dict | None:
    try:
        with open(directory / MANIFEST, encoding="utf8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def find_entry(root, description: dict) -> Path | None:
    """The ``model.xml`` of the stored conversion of ``description``, or None.

    A folder counts only if its manifest records the same description and
    both files have the sizes it records.
    """
    directory = Path(root) / entry_key(description)
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("description") != json.loads(json.dumps(description)):
        return None
    sizes = manifest.get("sizes", {})
    for name in (MODEL_XML, MODEL_BIN):
        try:
            if os.path.getsize(directory / name) != sizes.get(name):
                return None
        except OSError:
            return None
    return directory / MODEL_XML


def conversion_lock(root, description: dict) -> filelock.FileLock:
    """The lock to hold while converting ``description`` (blocks until a concurrent conversion ends)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(Path(root) / f"{entry_key(description)}.lock"))


def remove_entry(directory) -> None:
    """Remove a folder: renamed aside first (one atomic step), then deleted."""
    directory = Path(directory)
    aside = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.old")
    with contextlib.suppress(FileNotFoundError):
        os.rename(directory, aside)
        shutil.rmtree(aside, ignore_errors=True)


def save_entry(root, description: dict, save) -> Path:
    """Store a conversion: ``save(xml_path)`` writes the model, then the folder is renamed into place.

    Call it holding :func:`conversion_lock`: it first removes what killed
    processes left of the same conversion (temporary folders).

    Parameters
    ----------
    root : str or os.PathLike
        ``<cache>/openvino``.
    description : dict
        What was converted (see the module docstring).
    save : callable
        ``save(xml_path)`` writes ``xml_path`` and the ``.bin`` beside it
        (``openvino.save_model(model, xml_path, compress_to_fp16=False)``).

    Returns
    -------
    pathlib.Path
        The stored ``model.xml``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = entry_key(description)
    final = root / key
    for leftover in (*root.glob(f".{key}.*{_PART}"), *root.glob(f".{key}.*.old")):  # of killed processes
        shutil.rmtree(leftover, ignore_errors=True)
    staging = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_PART}"
    os.mkdir(staging)  # the mode a plain mkdir gives (0o777 less the umask)
    try:
        save(str(staging / MODEL_XML))
        manifest = {"description": description, "format": FORMAT,
                    "sizes": {name: os.path.getsize(staging / name) for name in (MODEL_XML, MODEL_BIN)}}
        with open(staging / MANIFEST, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        if final.exists():  # an incomplete or unreadable folder, found by the caller under the lock
            remove_entry(final)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final / MODEL_XML


def prune_entries(root, description: dict, same: tuple[str, ...] = ("source", "input_shape", "lrn")) -> list[Path]:
    """Remove stored conversions that agree with ``description`` on ``same`` but are other conversions.

    These are conversions of earlier versions of the same model file (or of
    other gamornet / Keras / OpenVINO versions), which no run asks for
    again.  Folders that are being written and lock files are left alone.

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    root, key = Path(root), entry_key(description)
    removed = []
    with contextlib.suppress(OSError):
        for directory in root.iterdir():
            if directory.name == key or directory.name.startswith(".") or not directory.is_dir():
                continue
            manifest = _read_manifest(directory)
            other = (manifest or {}).get("description")
            if isinstance(other, dict) and all(other.get(k) == description.get(k) for k in same):
                remove_entry(directory)
                removed.append(directory)
    return removed
