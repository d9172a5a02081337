"""Prediction tables: shards, and merging the shard tables of a catalogue.

- Tables are read and written by their file ending with
  :func:`gamornet.core.tables.read_table` and
  :func:`gamornet.core.tables.write_table` (also importable from here); a
  ``.csv`` table keeps its metadata in the sidecar ``<table>.csv.meta.json``.
- ``--shard I/N`` predicts the I-th of N contiguous blocks of a catalogue
  (:func:`parse_shard`, :func:`shard_bounds`); :func:`merge_tables` joins the
  shard tables, checking that they belong together: the same settings,
  engine and precision, and the same run digest (``run_sha256``).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable

import numpy as np
from astropy.table import Table, vstack

from gamornet.core.files import atomic_path, output_lock
from gamornet.core.tables import (  # re-exported: the names' former home
    INPUT_META,
    META_SUFFIX,
    OUTPUT_FORMATS,  # noqa: F401
    check_output,
    normalise_meta,
    output_format,
    read_table,
    write_table,
)
from gamornet.core.validation import check_flag

__all__ = ["CHUNKS_SUFFIX", "SKIPPED_SUFFIX", "SHARED_META", "write_skipped", "parse_shard", "shard_bounds",
           "merge_tables"]

#: Sidecar directory of an unfinished run: ``<output>.chunks``.
CHUNKS_SUFFIX = ".chunks"
#: Skipped images of a run with ``skip_bad``: ``<output>.skipped.csv``.
SKIPPED_SUFFIX = ".skipped.csv"
#: Metadata that must agree between the shard tables of one catalogue.
SHARED_META = ("model", "flavor", "policy", "policy_thresholds", "shape", "mc", "engine", "precision", "version",
               "ntotal")
#: Metadata naming what computed the probabilities: tables recording it never merge with tables lacking it.
_COMPUTED_BY = ("engine", "precision")
#: Formats whose tables carry the metadata that merging checks.
_MERGEABLE = f".ecsv, .fits, .fits.gz, .parquet, or .csv with its {META_SUFFIX} sidecar (as predict_files writes it)"


def write_skipped(path: str, bad: list[tuple]) -> None:
    """``id,reason`` rows of the skipped images, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "reason"])
        writer.writerows(bad)


def parse_shard(shard) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` -> ``(I, N)`` with ``1 <= I <= N``; None stays None."""
    if shard is None:
        return None
    message = (f"`shard` must be 'I/N' or (I, N) with integers 1 <= I <= N (the I-th of N slices), e.g. '1/4'. "
               f"Received: shard={shard!r}")
    if isinstance(shard, str):
        try:
            i, n = (int(part) for part in shard.split("/"))
        except ValueError:
            raise ValueError(message) from None
    elif isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard
    ):
        i, n = int(shard[0]), int(shard[1])
    else:
        raise ValueError(message)
    if not 1 <= i <= n:
        raise ValueError(message)
    return i, n


def shard_bounds(n_items: int, i: int, n: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``i`` of ``n`` (1-based): contiguous blocks differing by at most one item."""
    return (i - 1) * n_items // n, i * n_items // n


# ---------------------------------------------------------------- merge


def merge_tables(paths, output=None, overwrite: bool = False) -> Table:
    """Join the shard tables of one catalogue into one table.

    Checks that every table has the same columns (with an ``id`` column),
    the same shared metadata (model, flavor, policy, shape, mc, engine,
    precision, version, ntotal) and the same run digest (``run_sha256``:
    the model file, the input files and the settings), that no id appears
    twice and no shard twice.  Tables are stacked in shard order, which for a
    complete set of shards gives the table of an unsharded run (its ``shard``
    metadata then reads ``1/1``, and ``run_sha256`` is kept when every shard
    records it); an incomplete set is merged with a warning naming the
    missing shards.  The inputs the shards record (``inputs``, or
    ``source_catalog`` and ``source_images``) are kept when every shard
    records the same, and left out otherwise.

    Parameters
    ----------
    paths : str or sequence of str
        Shard tables (any format :func:`predict_files` writes).  A ``.csv``
        table needs its metadata sidecar ``<table>.csv.meta.json`` (see
        :func:`gamornet.core.tables.write_table`); one without it is refused,
        as is any table without metadata.
    output : str, optional
        Where to write the merged table (by its ending, atomically, holding
        ``<output>.lock`` while it is written).
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    ValueError
        For tables that do not belong together (naming the two files and
        what differs), a table without ids or metadata, an id or a shard
        given twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif isinstance(paths, Iterable) and not isinstance(paths, (bytes, dict)):
        paths = list(paths)
    else:
        raise TypeError(f"`paths` must be a table path or a sequence of them. Received: paths={paths!r}")
    if not paths:
        raise ValueError("`paths` must name at least one table. Received: paths=[]")
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`paths`: each item must be a table path, not {type(path)}. Received: paths={paths!r}")
        if os.path.isdir(path):
            raise ValueError(f"`paths`: {os.fspath(path)!r} is a directory, not a table file. "
                             f"Received: paths={paths!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`paths`: {os.fspath(path)!r} does not exist. Received: paths={paths!r}")
        output_format(path, "paths")
    output = check_output(output)
    overwrite = check_flag(overwrite, "overwrite")
    with output_lock(output):
        if output is not None and os.path.exists(output) and not overwrite:
            raise FileExistsError(f"`output` exists; pass overwrite=True (--overwrite). Received: output={output!r}")
        merged = _merge(paths)
        if output is not None:
            write_table(merged, output)
    return merged


def _read_shard(path, paths: list) -> Table:
    """A shard table with its normalised metadata; refuses a table without ids or without metadata."""
    table = read_table(path, "paths")
    if "id" not in table.colnames:
        raise ValueError(f"`paths`: {os.fspath(path)!r} has no `id` column (columns {table.colnames}); it is not a "
                         f"table written by predict_files. Received: paths={paths!r}")
    table.meta = normalise_meta(table.meta)
    if not table.meta:
        what = (f"a .csv table without its metadata sidecar {os.fspath(path) + META_SUFFIX!r} (or changed since it "
                f"was written)" if output_format(path, "paths")[1] == "ascii.csv" else "a table without metadata")
        raise ValueError(f"`paths`: {os.fspath(path)!r} is {what}, so it cannot be checked to belong with the other "
                         f"shards (model, settings, engine, precision, run digest). Tables that merge safely: "
                         f"{_MERGEABLE}. Received: paths={paths!r}")
    return table


def _check_agree(paths: list, tables: list[Table]) -> None:
    """Refuse tables whose columns, shared metadata or run digests differ from the first table's."""
    first, first_path = tables[0], paths[0]
    for path, table in zip(paths[1:], tables[1:]):
        if table.colnames != first.colnames:
            raise ValueError(f"{path} has columns {table.colnames}, {first_path} has {first.colnames}")
        for key in SHARED_META:
            if key in table.meta and key in first.meta and table.meta[key] != first.meta[key]:
                raise ValueError(f"Cannot merge: {key} is {first.meta[key]!r} in {first_path} but "
                                 f"{table.meta[key]!r} in {path}")
            if key in _COMPUTED_BY and "model" in table.meta and "model" in first.meta and (
                    (key in table.meta) != (key in first.meta)):
                recorded, missing = (first_path, path) if key in first.meta else (path, first_path)
                value = first.meta.get(key, table.meta.get(key))
                raise ValueError(f"Cannot merge: {key} is {value!r} in {recorded} but not recorded in {missing} "
                                 f"(a table of an earlier version, computed by another engine or precision)")
        digests = (first.meta.get("run_sha256"), table.meta.get("run_sha256"))
        if None not in digests and digests[0] != digests[1]:
            raise ValueError(f"Cannot merge: {first_path} and {path} are tables of different runs (run_sha256 "
                             f"{digests[0]} and {digests[1]}): the model file, the input files or a setting "
                             f"(batch_size, crop_pad, nan_fill, hdu, skip_bad, seed, policy thresholds) changed "
                             f"between them. Predict all shards again with the same model and settings")


def _merge(paths: list) -> Table:
    tables = [_read_shard(path, paths) for path in paths]
    _check_agree(paths, tables)
    first = tables[0]
    order, meta = _check_shards(paths, tables), dict(first.meta)
    paths, tables = [paths[i] for i in order], [tables[i] for i in order]
    ids = np.concatenate([np.asarray(t["id"]).astype(str) for t in tables])
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = str(unique[np.argmax(counts > 1)])
        owners = [p for p, t in zip(paths, tables) if dup in np.asarray(t["id"]).astype(str)]
        raise ValueError(f"Cannot merge: id {dup!r} appears more than once (in {', '.join(map(str, owners))})")
    merged = vstack(tables, join_type="exact", metadata_conflicts="silent")
    skipped = list(dict.fromkeys(s for t in tables for s in t.meta.get("skipped", [])))
    meta.update(nimages=sum(t.meta.get("nimages", len(t)) for t in tables), nskipped=len(skipped))
    for key in ("skipped", "shard", "shards", "run_sha256"):
        meta.pop(key, None)
    if skipped:
        meta["skipped"] = skipped
    meta.update(_shard_meta(tables))
    digests = {t.meta.get("run_sha256") for t in tables}
    if len(digests) == 1 and None not in digests:
        meta["run_sha256"] = digests.pop()
    for key in INPUT_META:  # what the shards were predicted from: kept where all record the same
        if any(t.meta.get(key) != first.meta.get(key) for t in tables):
            meta.pop(key, None)
    merged.meta = meta
    return merged


def _check_shards(paths: list, tables: list[Table]) -> list[int]:
    """Order of the tables by shard; refuses a shard given twice or different shard counts."""
    parts = [parse_shard(t.meta["shard"]) if "shard" in t.meta else None for t in tables]
    if any(p is None for p in parts):
        return list(range(len(tables)))
    counts = {n for _, n in parts}
    if len(counts) > 1:
        raise ValueError(f"Cannot merge shards of different splits: {[f'{i}/{n}' for i, n in parts]}")
    seen: dict[int, str] = {}
    for path, (i, n) in zip(paths, parts):
        if i in seen:
            raise ValueError(f"Cannot merge: shard {i}/{n} is in both {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(1, counts.pop() + 1)) - set(seen))
    if missing:
        warnings.warn(f"Merging an incomplete set of shards; missing: {missing}", stacklevel=3)
    return sorted(range(len(tables)), key=lambda j: parts[j][0])


def _shard_meta(tables: list[Table]) -> dict:
    parts = [parse_shard(t.meta["shard"]) for t in tables if "shard" in t.meta]
    if len(parts) != len(tables) or not parts:
        return {}
    n = parts[0][1]
    if sorted(i for i, _ in parts) == list(range(1, n + 1)):
        return {"shard": "1/1"}
    return {"shards": f"{','.join(str(i) for i, _ in parts)}/{n}"}
