"""Tables by their file ending: reading, writing atomically, and the metadata of prediction tables.

- :data:`OUTPUT_FORMATS` maps the endings a table is written with to the
  astropy format (:func:`output_format`, :func:`check_output`).
- :func:`write_table` writes through a temporary file renamed into place.
  A ``.csv`` file holds no metadata, so its metadata go to a sidecar file
  ``<table>.csv.meta.json`` (:data:`META_SUFFIX`) that records the SHA-256 of
  the CSV it describes.
- :func:`read_table` reads any table astropy reads (by its ending, Parquet
  included) and gives a ``.csv`` table the metadata of its sidecar when the
  sidecar describes this very file.
- :func:`normalise_meta` keeps the metadata :func:`gamornet.predict_files`
  writes, with lower-case keys (FITS headers give upper-case ones).
- The inputs a prediction table records (:data:`INPUT_META`: ``inputs``,
  ``source_catalog``, ``source_images``) are written to FITS headers as JSON
  text, so that paths of any characters and lists of one item come back as
  they were; :func:`normalise_meta` decodes them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table

from gamornet.core.files import atomic_path, output_error

__all__ = ["OUTPUT_FORMATS", "META_SUFFIX", "META_KEYS", "INPUT_META", "output_format", "check_output", "read_table",
           "write_table", "normalise_meta", "file_sha256"]

#: Table formats by file ending.
OUTPUT_FORMATS: dict[str, str] = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".parquet": "parquet",
}
#: Endings read besides those of :data:`OUTPUT_FORMATS`.
_READ_ONLY_FORMATS = {".fts": "fits", ".fts.gz": "fits", ".fit.gz": "fits"}
#: Metadata sidecar of a ``.csv`` table: ``<table>.csv.meta.json``.
META_SUFFIX = ".meta.json"
#: What a sidecar's ``format`` field reads.
_SIDECAR_FORMAT = "gamornet table metadata 1"
#: Metadata of the tables :func:`gamornet.predict_files` writes, as :func:`normalise_meta` keeps them.
META_KEYS = ("model", "flavor", "policy", "policy_thresholds", "shape", "mc", "engine", "precision", "version",
             "ntotal", "shard", "shards", "nimages", "nskipped", "skipped", "run_sha256", "inputs", "source_catalog",
             "source_images")
#: What a prediction table was predicted from: absolute paths (or URLs) as given; lists but ``source_catalog``.
INPUT_META = ("inputs", "source_catalog", "source_images")


def _format_by_ending(path: str | os.PathLike, endings: dict[str, str]) -> tuple[str, str] | None:
    lower = os.fspath(path).lower()
    for ending, fmt in sorted(endings.items(), key=lambda item: -len(item[0])):
        if lower.endswith(ending):
            return ending, fmt
    return None


def _need_pyarrow(path: str | os.PathLike, name: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError(f"`{name}`: .parquet tables need pyarrow (pip install pyarrow). "
                         f"Received: {name}={os.fspath(path)!r}") from None


def output_format(path: str | os.PathLike, name: str = "output") -> tuple[str, str]:
    """``(ending, astropy format)`` of a table path to write, by its ending (one of :data:`OUTPUT_FORMATS`).

    Raises
    ------
    ValueError
        For another ending, or ``.parquet`` without pyarrow installed.
    """
    found = _format_by_ending(path, OUTPUT_FORMATS) if isinstance(path, (str, os.PathLike)) else None
    if found is None:
        shown = os.fspath(path) if isinstance(path, os.PathLike) else path
        raise ValueError(f"`{name}` must end in one of {list(OUTPUT_FORMATS)}. Received: {name}={shown!r}")
    if found[1] == "parquet":
        _need_pyarrow(path, name)
    return found


def check_output(output: str | os.PathLike | None, name: str = "output") -> str | None:
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"`table`: metadata of type {type(value).__name__} cannot be kept beside a .csv table (JSON "
                    f"holds strings, numbers, booleans, lists and dicts). Received: {value!r}")


def write_table(table: Table, path: str | os.PathLike, name: str = "path") -> None:
    """Write ``table`` by the file's ending, through a temporary file renamed into place.

    The file gets the mode a plain ``open()`` would give it.  A ``.csv`` table
    cannot hold metadata: ``table.meta`` is written to the sidecar
    ``<path>.meta.json`` (also atomically), a JSON object with ``format``
    (``"gamornet table metadata 1"``), ``table`` (the CSV's file name),
    ``table_sha256`` (the SHA-256 of the CSV's bytes) and ``meta``.  The
    sidecar is renamed into place before the CSV, so a run stopped between the
    two leaves a sidecar whose digest does not match, which :func:`read_table`
    ignores.

    Parameters
    ----------
    table : astropy.table.Table
        The table to write.
    path : str or os.PathLike
        Where to write it; its ending (:data:`OUTPUT_FORMATS`) chooses the format.
    name : str
        Argument name used in error messages.

    Raises
    ------
    TypeError
        If ``table`` is not a Table, or (for ``.csv``) its metadata cannot be written as JSON.
    ValueError
        For an unknown ending.
    OSError
        If the file cannot be written (the error names ``path``); ``path``
        and its sidecar are then left as they were.
    """
    if not isinstance(table, Table):
        raise TypeError(f"`table` must be an astropy Table. Received: table of type {type(table).__name__}")
    ending, fmt = output_format(path, name)
    path = os.fspath(path)
    sidecar = None
    if fmt == "ascii.csv":  # checked before anything is written
        sidecar = {"format": _SIDECAR_FORMAT, "table": os.path.basename(path), "table_sha256": "",
                   "meta": json.loads(json.dumps(dict(table.meta), default=_json_value))}
    if fmt == "fits":
        table = _fits_ready(table)
    with atomic_path(path, suffix=ending) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on long FITS keyword values
            table.write(tmp, format=fmt, overwrite=True)
        if sidecar is not None:
            sidecar["table_sha256"] = file_sha256(tmp)
            with atomic_path(path + META_SUFFIX, suffix=".json") as meta_tmp, open(meta_tmp, "w") as f:
                f.write(json.dumps(sidecar, indent=2) + "\n")


def _fits_ready(table: Table) -> Table:
    """``table`` (a shallow copy) with the recorded inputs (:data:`INPUT_META`) as JSON text, ASCII only.

    A FITS header holds ASCII strings without trailing blanks, and a list
    as repeated keywords (one item reads back as a string); JSON text keeps
    every path as it was.
    """
    keys = [k for k in table.meta if str(k).lower() in INPUT_META]
    if not keys:
        return table
    table = table.copy(copy_data=False)
    for key in keys:
        table.meta[key] = json.dumps(table.meta[key], default=_json_value)
    return table


def _sidecar_meta(path: str) -> dict:
    """The metadata of the sidecar of the ``.csv`` table ``path``; {} (with a warning) if it does not describe it."""
    sidecar_path = path + META_SUFFIX
    if not os.path.isfile(sidecar_path):
        return {}
    try:
        with open(sidecar_path) as f:
            sidecar = json.load(f)
        valid = (isinstance(sidecar, dict) and sidecar.get("format") == _SIDECAR_FORMAT
                 and isinstance(sidecar.get("meta"), dict))
    except (OSError, ValueError) as exc:
        valid, sidecar = False, str(exc)
    if not valid:
        warnings.warn(f"{sidecar_path} is not a gamornet metadata file; {path} is read without metadata",
                      stacklevel=3)
        return {}
    if sidecar.get("table_sha256") != file_sha256(path):
        warnings.warn(f"{sidecar_path} describes another version of {path} (the table changed after it was "
                      f"written); the table is read without metadata", stacklevel=3)
        return {}
    return sidecar["meta"]


def _read_parquet(path: str) -> Table:
    """A Parquet table with pyarrow alone (astropy's reader also needs pandas), its astropy metadata included."""
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    data = pq.read_table(path)
    raw = (data.schema.metadata or {}).get(b"table_meta_yaml")
    header = get_header_from_yaml(raw.decode().split("\n")) if raw else {}
    columns = {}
    for column in data.column_names:
        values = data.column(column).to_numpy(zero_copy_only=False)
        columns[column] = values.astype(str) if values.dtype == object else values
    table = Table(columns, meta=dict(header.get("meta", {})))
    for column in header.get("datatype", []):  # the units astropy stored (an RA in hourangle stays one)
        name, unit = column.get("name"), column.get("unit")
        if unit and name in table.colnames:
            table[name].unit = u.Unit(unit, parse_strict="silent")
    return table


def _read_any(path: str, fmt: str | None) -> Table:
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt is not None:
        return Table.read(path, format=fmt)
    try:
        return Table.read(path)  # astropy identifies the format by the ending or the content
    except Exception:  # astropy's registry raises several kinds; plain text tables need a guess
        return Table.read(path, format="ascii")


def read_table(path: str | os.PathLike, name: str = "path") -> Table:
    """Read a table by its ending: the formats of :data:`OUTPUT_FORMATS`, else any astropy identifies or guesses.

    Parquet files are read with pyarrow alone; FITS strings come back as
    ``str``; a ``.csv`` table gets the metadata of its sidecar
    ``<path>.meta.json`` (see :func:`write_table`) when the sidecar records
    this file's SHA-256, and none otherwise (with a warning when a sidecar
    exists but does not match).

    Parameters
    ----------
    path : str or os.PathLike
        The table file.
    name : str
        Argument name used in error messages (e.g. ``"PREDICTIONS"``).

    Raises
    ------
    TypeError
        If ``path`` is not a path.
    FileNotFoundError
        If there is no such file.
    ValueError
        If it names a directory, or cannot be read as a table.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"`{name}` must be a table file path (str or os.PathLike). Received: {name}={path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"`{name}` is a directory, not a table file. Received: {name}={path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}`: no such table file. Received: {name}={path!r}")
    found = _format_by_ending(path, {**OUTPUT_FORMATS, **_READ_ONLY_FORMATS})
    fmt = None if found is None else found[1]
    if fmt == "parquet":
        _need_pyarrow(path, name)
    try:
        table = _read_any(path, fmt)
    except Exception as exc:  # astropy and pyarrow raise many kinds
        raise ValueError(f"`{name}` could not be read as a table ({exc}). Received: {name}={path!r}") from None
    table.convert_bytestring_to_unicode()  # FITS gives bytes
    if fmt == "ascii.csv":
        table.meta.update(_sidecar_meta(path))
    return table


def normalise_meta(meta: Mapping) -> dict:
    """The metadata of :data:`META_KEYS` in ``meta``, keys in lower case.

    A lone ``skipped`` string is made a list; the recorded inputs
    (:data:`INPUT_META`) written as JSON text (FITS) are decoded, and a lone
    ``inputs`` or ``source_images`` string is made a list.
    """
    out = {str(k).lower(): v for k, v in meta.items() if str(k).lower() in META_KEYS}
    for key in INPUT_META:
        value = out.get(key)
        if isinstance(value, str) and value[:1] in ('"', "["):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass  # a path that merely starts so
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
    for key in ("skipped", "inputs", "source_images"):
        if key in out and isinstance(out[key], str):
            out[key] = [out[key]]
    return out
