"""Prediction tables: their formats, reading and writing, shards, and merging the shards of a catalogue.

- A table is written by its file ending (:data:`OUTPUT_FORMATS`) under a
  temporary name and renamed into place (:func:`write_table`).
- ``--shard I/N`` predicts the I-th of N contiguous blocks of a catalogue
  (:func:`parse_shard`, :func:`shard_bounds`); :func:`merge_tables` joins the
  shard tables, checking that they belong together.
"""

from __future__ import annotations

import csv
import errno
import os
import warnings
from collections.abc import Iterable

import numpy as np
from astropy.table import Table, vstack

from gamornet.core.files import atomic_path, output_error, output_lock
from gamornet.core.validation import check_flag

__all__ = ["OUTPUT_FORMATS", "CHUNKS_SUFFIX", "SKIPPED_SUFFIX", "SHARED_META", "output_format", "check_output",
           "read_table", "write_table", "write_skipped", "parse_shard", "shard_bounds", "merge_tables",
           "normalise_meta"]

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
#: Metadata that must agree between the shard tables of one catalogue.
SHARED_META = ("model", "flavor", "policy", "shape", "mc", "engine", "precision", "version", "ntotal")
#: Metadata naming what computed the probabilities: tables recording it never merge with tables lacking it.
_COMPUTED_BY = ("engine", "precision")
_META_KEYS = (*SHARED_META, "shard", "shards", "nimages", "nskipped", "skipped", "run_sha256")


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
    if os.path.exists(directory) and not os.path.isdir(directory):  # a file where the folder must be
        raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"`{name}`: directory {directory!r} does not exist. Received: {name}={output!r}")
    return output


def write_table(table: Table, path: str) -> None:
    """Write ``table`` by the file's ending, through a temporary file renamed into place."""
    ending, fmt = output_format(path)
    with atomic_path(path, suffix=ending) as tmp:
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


def normalise_meta(meta) -> dict:
    out = {str(k).lower(): v for k, v in meta.items() if str(k).lower() in _META_KEYS}
    if "skipped" in out and isinstance(out["skipped"], str):
        out["skipped"] = [out["skipped"]]
    return out


def merge_tables(paths, output=None, overwrite: bool = False) -> Table:
    """Join the shard tables of one catalogue into one table.

    Checks that every table has the same columns (with an ``id`` column) and
    the same shared metadata (model, flavor, policy, shape, mc, engine,
    precision, version, ntotal), that no id appears twice and no shard twice.  Tables are
    stacked in shard order, which for a complete set of shards gives the
    table of an unsharded run (its ``shard`` metadata then reads ``1/1``,
    and ``run_sha256`` is kept when every shard records the same one); an
    incomplete set is merged with a warning naming the missing shards.

    Parameters
    ----------
    paths : str or sequence of str
        Shard tables (any format :func:`predict_files` writes).
    output : str, optional
        Where to write the merged table (by its ending, atomically, holding
        ``<output>.lock`` while it is written).
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    astropy.table.Table
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


def _merge(paths: list) -> Table:
    tables = []
    for path in paths:
        table = read_table(path)
        if "id" not in table.colnames:
            raise ValueError(f"`paths`: {os.fspath(path)!r} has no `id` column (columns {table.colnames}); it is not a "
                             f"table written by predict_files. Received: paths={paths!r}")
        table.meta = normalise_meta(table.meta)
        tables.append(table)
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
