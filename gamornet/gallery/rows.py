"""The rows of a prediction table, read a batch at a time and only the columns asked for.

:func:`open_rows` gives a :class:`TableRows`: the table's column names,
metadata and length (read from the file's header alone), and
:meth:`TableRows.batches`, which yields consecutive rows of chosen columns.
Memory then grows with the batch, not the table:

- ``.parquet``: record batches read with pyarrow, only the chosen columns,
  as a buffered stream (a batch is decoded from the pages it needs, not
  from whole row groups); nulls are masked.
- FITS binary tables (``.fits``, ``.fit``, ``.fts``): the rows of a batch
  read from the file (not memory-mapped, so the pages of the file read
  before are not held); strings without their trailing blanks, NaN floats
  masked, as astropy reads them.  A column with scaling (``TSCAL`` /
  ``TZERO``), null values (``TNULL``) or a format other than numbers,
  logicals and strings is sliced from astropy's memory map instead
  (astropy scales its values; its nulls are not masked; the file's pages
  read count in the resident memory).  Compressed FITS tables are read
  whole, as text tables.
- Text tables (``.ecsv``, ``.csv``, ...) and anything else: read whole with
  :func:`gamornet.core.tables.read_table` (a text table cannot be read
  from the middle), then sliced; memory grows with the table.
- An :class:`astropy.table.Table` is sliced.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from astropy.table import Table

from gamornet.core.tables import read_table

__all__ = ["TableRows", "open_rows"]

#: Bytes of a Parquet file read at a time: a batch is decoded from the pages it needs, not a whole row group.
_PARQUET_BUFFER = 1 << 20
#: FITS column formats read from the file directly: logicals, integers, floats, strings.
_PLAIN_FITS = set("LBIJKEDA")


class TableRows:
    """A table to read in batches of rows.

    Attributes
    ----------
    name : str
        The path, or ``"predictions"`` for a table given in memory.
    colnames : list of str
    meta : dict
        The metadata :func:`gamornet.core.tables.read_table` would give.
    nrows : int
    """

    def __init__(self, name: str, colnames: Sequence[str], meta: dict, nrows: int, read):
        self.name, self.colnames, self.meta, self.nrows = name, list(colnames), dict(meta), int(nrows)
        self._read = read

    def batches(self, columns: Sequence[str], batch_rows: int) -> Iterator[tuple[int, dict]]:
        """``(first row, {column: values})`` for consecutive batches of at most ``batch_rows`` rows.

        Values are numpy arrays (masked arrays where values are missing),
        strings as ``str``.
        """
        yield from self._read(list(columns), int(batch_rows))


def _table_batches(table: Table):
    def read(columns, batch_rows):
        for start in range(0, len(table), batch_rows):
            yield start, {c: _plain(table[c][start:start + batch_rows]) for c in columns}
    return read


def _plain(column) -> np.ndarray:
    if isinstance(column, np.ma.MaskedArray):
        return np.ma.MaskedArray(np.asarray(column.data), mask=np.ma.getmaskarray(column))
    return np.asarray(column)


def _parquet(path: str) -> TableRows:
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    file = pq.ParquetFile(path)
    raw = (file.schema_arrow.metadata or {}).get(b"table_meta_yaml")
    meta = get_header_from_yaml(raw.decode().split("\n")).get("meta", {}) if raw else {}

    def read(columns, batch_rows):
        start = 0
        stream = pq.ParquetFile(path, buffer_size=_PARQUET_BUFFER, pre_buffer=False)  # pages read as decoded
        for batch in stream.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
            yield start, {c: _arrow_values(batch.column(c)) for c in columns}
            start += batch.num_rows
    return TableRows(path, file.schema_arrow.names, meta, file.metadata.num_rows, read)


def _arrow_values(column) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object:
        values = values.astype(str)
    if column.null_count:
        return np.ma.MaskedArray(values, mask=column.is_null().to_numpy(zero_copy_only=False))
    return values


def _fits_hdu(hdul) -> int | None:
    """The HDU astropy reads a table from: the first binary or ASCII table with rows."""
    from astropy.io import fits

    for i, hdu in enumerate(hdul):
        if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and hdu.header.get("NAXIS2", 0) > 0:
            return i
    return None


def _fits(path: str) -> TableRows | None:
    """A FITS table read in batches; None when it holds no table (read whole then, as astropy reads it)."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        index = _fits_hdu(hdul)
        if index is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the metadata astropy reads, no value read: memory-mapped, no NaN looked for
            header = Table.read(hdul, format="fits", hdu=index, memmap=True, mask_invalid=False)
        meta, colnames, nrows = dict(header.meta), header.colnames, len(header)
        hdu = hdul[index]
        formats = {c.name: c.format.format for c in hdu.columns if _plain_fits(c)} if isinstance(
            hdu, fits.BinTableHDU) else {}
        raw_dtype, offset = hdu.data.dtype, hdul.fileinfo(index)["datLoc"]
        del header

    def read(columns, batch_rows):
        with open(path, "rb") as f, fits.open(path, memmap=True) as hdul:
            table = hdul[index].data
            for start in range(0, nrows, batch_rows):
                count = min(batch_rows, nrows - start)
                raw = None
                if any(c in formats for c in columns):
                    f.seek(offset + start * raw_dtype.itemsize)
                    raw = np.frombuffer(f.read(count * raw_dtype.itemsize), dtype=raw_dtype)
                yield start, {c: _fits_values(raw[c], formats[c]) if c in formats
                              else _fits_values(np.asarray(table[c][start:start + count]), "") for c in columns}
    return TableRows(path, colnames, meta, nrows, read)


def _plain_fits(column) -> bool:
    fmt = column.format.format
    return (fmt in _PLAIN_FITS and (fmt == "A" or column.format.repeat in (None, 1)) and column.bscale is None
            and column.bzero is None and column.null is None and column.dim is None)


def _fits_values(raw: np.ndarray, fmt: str) -> np.ndarray:
    """The values astropy gives of a plain FITS column (see :data:`_PLAIN_FITS`), from its raw bytes."""
    if fmt == "A" or raw.dtype.kind == "S":
        return np.strings.decode(np.strings.rstrip(raw, b" "), "utf-8", "replace")
    if fmt == "L":
        return raw == ord("T")
    values = raw.astype(raw.dtype.newbyteorder("=")) if raw.dtype.kind in "iuf" else raw
    invalid = np.isnan(values) if values.dtype.kind == "f" else None
    return np.ma.MaskedArray(values, mask=invalid) if invalid is not None and invalid.any() else values


def open_rows(predictions) -> TableRows:
    """``predictions`` (a table, or a table file) to read in batches (see the module documentation).

    Raises
    ------
    TypeError, FileNotFoundError, ValueError
        As :func:`gamornet.core.tables.read_table`, naming ``predictions``.
    """
    if isinstance(predictions, Table):
        return TableRows("predictions", predictions.colnames, predictions.meta, len(predictions),
                         _table_batches(predictions))
    if not isinstance(predictions, (str, os.PathLike)) or not os.fspath(predictions):
        raise TypeError(f"`predictions` must be a file path (str or os.PathLike). Received: "
                        f"predictions={predictions!r}")
    path = os.fspath(predictions)
    lower = path.lower()
    if os.path.isfile(path):
        try:
            if lower.endswith(".parquet"):
                return _parquet(path)
            if lower.endswith((".fits", ".fit", ".fts")):
                rows = _fits(path)
                if rows is not None:
                    return rows
        except (ImportError, OSError, ValueError, TypeError, KeyError):
            pass  # read whole by read_table, which names what is wrong
    table = read_table(path, "predictions")
    return TableRows(path, table.colnames, table.meta, len(table), _table_batches(table))
