"""The cutout run: every catalogue row cut from its tile, in chunks, in parallel over tiles, resumable.

A run writes a folder laid out as ``gamornet simulate`` writes one, so
``gamornet predict DIR`` reads it:

- ``images.npy``: float32 ``(N, size, size, 1)``, one cutout per catalogue
  row, in catalogue order (all NaN where a source is on no tile);
- ``catalog.ecsv``: one row per catalogue row, in the same order
  (:data:`ADDED_COLUMNS`, then the catalogue's columns);
- with ``fits=True``, ``fits/cutout_NNNNNN.fits``: cutout ``NNNNNN`` with its WCS.

The run works in a hidden staging folder ``DIR/.cutouts.part/``: the stack
is a memory-mapped ``.npy`` filled chunk by chunk, and ``progress.json``
records the chunks done and the run's digest, so that ``resume=True``
continues an interrupted run (of the same catalogue, images and settings)
after its last complete chunk, with the same result as a run never
interrupted.  The finished files are moved into ``DIR`` only at the end,
the catalogue last: ``DIR`` never holds a mix of two runs or an unfinished
one.  A lock (``DIR/.lock``) keeps two runs out of one folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.table import Table

from gamornet.core.files import atomic_path, make_output_dir, output_lock
from gamornet.core.progress import progress_bar
from gamornet.core.tables import read_table, write_table
from gamornet.cutouts.catalog import load_catalog
from gamornet.cutouts.grid import model_grid
from gamornet.cutouts.plan import METHODS, ROW_DTYPE, CutoutPlan, cutout_flags
from gamornet.cutouts.tiles import tile_name

__all__ = ["make_cutouts", "cutout_table", "FLAGS", "ADDED_COLUMNS", "FITS_NAME", "DEFAULT_MAX_NAN_FRACTION"]

#: Values of ``cutout_flag``.
FLAGS = ("ok", "partial", "too_many_nan", "off_image")
#: Columns a run puts before the catalogue's.
ADDED_COLUMNS = ("cutout_index", "cutout_id", "cutout_ra", "cutout_dec", "cutout_flag", "cutout_coverage",
                 "cutout_nan_fraction", "cutout_method", "tile", "tile_x", "tile_y", "cutout_x", "cutout_y")
#: Name of the FITS file of cutout ``N`` (``fits=True``).
FITS_NAME = "cutout_{:06d}.fits"
#: Default ``max_nan_fraction``.
DEFAULT_MAX_NAN_FRACTION = 0.25
_STAGING = ".cutouts.part"
_PROGRESS_FORMAT = "gamornet cutouts progress 1"


def _write_fits(path: str, image: np.ndarray, wcs, index: int, source_id) -> None:
    from astropy.io import fits

    header = wcs.to_header()
    header["CUTIDX"] = (index, "row of the catalogue and of images.npy")
    header["SRCID"] = (str(source_id)[:60], "catalogue id")
    with atomic_path(path, suffix=".fits") as tmp:
        fits.PrimaryHDU(image, header=header).writeto(tmp, overwrite=True)


def _cut_rows(plan: CutoutPlan, rows: np.ndarray, fits_dir: str | None) -> list[tuple[int, np.ndarray, tuple]]:
    """Cut the sources ``rows`` (all from one tile, or on none): ``(row, image, results)`` each."""
    out = []
    for row in rows:
        image, wcs, result = plan.cut(row)
        if fits_dir is not None:
            _write_fits(os.path.join(fits_dir, FITS_NAME.format(row)), image, wcs, int(row), plan.ids[row])
        out.append((int(row), image, result))
    return out


def _run_chunks(plan: CutoutPlan, images: np.ndarray, rows: np.ndarray, chunks: list[np.ndarray],
                pool: ThreadPoolExecutor, fits_dir: str | None, on_chunk, bar, done: int) -> None:
    """Cut the chunks from ``done`` on, in order; within a chunk the tiles' groups of rows run in parallel."""
    for number in range(done, len(chunks)):
        chunk = chunks[number]
        groups = [chunk[plan.tile_index[chunk] == k] for k in np.unique(plan.tile_index[chunk])]
        for results in pool.map(lambda group: _cut_rows(plan, group, fits_dir), groups):
            for row, image, result in results:
                images[row, :, :, 0] = image
                rows[row] = result
        on_chunk(number + 1)
        bar.update(int(chunk[-1]) + 1)


def cutout_table(table: Table, plan: CutoutPlan, rows: np.ndarray, keep_columns=None,
                 max_nan_fraction: float = DEFAULT_MAX_NAN_FRACTION, select: slice = slice(None)) -> Table:
    """The output catalogue of the rows ``select``: :data:`ADDED_COLUMNS`, then the kept catalogue columns.

    Parameters
    ----------
    table : astropy.table.Table
        The whole catalogue.
    plan : CutoutPlan
        Its plan.
    rows : numpy.ndarray
        The cut results (:data:`gamornet.cutouts.plan.ROW_DTYPE`) of the rows ``select``.
    keep_columns : sequence of str, optional
        Catalogue columns to keep (default all).
    max_nan_fraction : float
        See :func:`make_cutouts`.
    select : slice
        The catalogue rows (default all).
    """
    index = np.arange(len(table))[select]
    tile_index = plan.tile_index[select]
    names = [tile_name(plan.paths[k]) if k >= 0 else "" for k in tile_index]
    out = Table()
    out["cutout_index"] = index
    out["cutout_id"] = plan.ids[select]
    out["cutout_ra"], out["cutout_dec"] = plan.ra[select], plan.dec[select]
    out["cutout_ra"].unit = out["cutout_dec"].unit = "deg"
    out["cutout_flag"] = cutout_flags(tile_index, rows["coverage"], rows["nan_fraction"], max_nan_fraction)
    out["cutout_coverage"], out["cutout_nan_fraction"] = rows["coverage"], rows["nan_fraction"]
    out["cutout_method"] = np.array([METHODS[m] for m in rows["method"]], dtype="U8")
    out["tile"] = np.array(names, dtype=f"U{max([1, *map(len, names)])}")
    out["tile_x"], out["tile_y"] = plan.x[select], plan.y[select]
    out["cutout_x"], out["cutout_y"] = rows["x"], rows["y"]
    keep = table.colnames if keep_columns is None else list(keep_columns)
    for name in keep:
        if name not in table.colnames:
            raise ValueError(f"`keep_columns`: no such column in the catalogue (columns: {', '.join(table.colnames)})"
                             f". Received: {name!r}")
        if name in out.colnames:
            if keep_columns is not None:
                raise ValueError(f"`keep_columns`: {name!r} is a column the cutouts add. Received: {name!r}")
            warnings.warn(f"the catalogue's column {name!r} is left out: the cutout table has its own", stacklevel=4)
            continue
        out[name] = table[name][select]
    return out


def _meta(plan: CutoutPlan, digest: str) -> dict:
    return {"survey": plan.grid.survey, "pixel_scale": plan.grid.pixel_scale, "size": plan.grid.size,
            "shape": [plan.grid.size, plan.grid.size, 1], "columns": plan.columns,
            "tiles": list(plan.paths), "pixels": "flux per pixel (sums over the sky are kept)",
            "flags": "ok; partial (runs off the tile, NaN there); too_many_nan (on the tile, more NaN pixels than "
                     "max_nan_fraction); off_image (on no tile, all NaN)",
            "run_sha256": digest}


def _chunks(n: int, chunk_size: int) -> list[np.ndarray]:
    return [np.arange(start, min(n, start + chunk_size)) for start in range(0, n, chunk_size)]


def _finished(out: Path, digest: str) -> bool:
    """Whether ``out`` holds the finished output of the run ``digest``."""
    if not (out / "catalog.ecsv").is_file() or not (out / "images.npy").is_file():
        return False
    with contextlib.suppress(Exception):
        return read_table(out / "catalog.ecsv").meta.get("run_sha256") == digest
    return False


def _progress(staging: Path, digest: str) -> int:
    """Chunks done by an interrupted run ``digest`` in ``staging`` (0 if there is none)."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((staging / "progress.json").read_text())
        if record.get("format") == _PROGRESS_FORMAT and record.get("run_sha256") == digest:
            return int(record["done"])
    return 0


def _record(staging: Path, digest: str, images: np.memmap, rows: np.memmap):
    """A callback saving the count of chunks done, once the pixels are flushed to disk."""

    def save(done: int) -> None:
        images.flush()
        rows.flush()
        with atomic_path(staging / "progress.json", suffix=".json") as tmp, open(tmp, "w") as f:
            json.dump({"format": _PROGRESS_FORMAT, "run_sha256": digest, "done": done}, f)

    return save


def _open_staging(staging: Path, n: int, size: int, done: int) -> tuple[np.memmap, np.memmap]:
    mode = "r+" if done else "w+"
    if not done:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    images = np.lib.format.open_memmap(staging / "images.npy", mode=mode, dtype=np.float32,
                                       shape=None if done else (n, size, size, 1))
    rows = np.lib.format.open_memmap(staging / "rows.npy", mode=mode, dtype=None if done else ROW_DTYPE,
                                     shape=None if done else (n,))
    if not done:
        images[:] = np.nan
    return images, rows


def _move_in(staging: Path, out: Path, result: Table, fits: bool) -> None:
    """Replace the folder's outputs with the staged ones: old catalogue first, new catalogue last."""
    for name in ("catalog.ecsv", "images.npy"):
        (out / name).unlink(missing_ok=True)
    if (out / "fits").is_dir():
        for path in (out / "fits").glob("cutout_*.fits"):
            path.unlink(missing_ok=True)
    if fits:
        (out / "fits").mkdir(exist_ok=True)
        for path in sorted((staging / "fits").iterdir()):
            os.replace(path, out / "fits" / path.name)
    os.replace(staging / "images.npy", out / "images.npy")
    write_table(result, out / "catalog.ecsv")
    shutil.rmtree(staging, ignore_errors=True)


def _write_dir(out: Path, table: Table, plan: CutoutPlan, settings: dict, options: dict) -> tuple[Table, np.ndarray]:
    digest = plan.digest(settings)
    staging = out / _STAGING
    if options["resume"] and _finished(out, digest):
        return read_table(out / "catalog.ecsv"), np.load(out / "images.npy", mmap_mode="r")
    if not options["overwrite"] and any((out / name).exists() for name in ("catalog.ecsv", "images.npy")):
        raise FileExistsError(f"`output` already holds cutouts (use overwrite=True, --overwrite). Received: "
                              f"output={str(out)!r}")
    done = _progress(staging, digest) if options["resume"] else 0
    images, rows = _open_staging(staging, len(table), plan.grid.size, done)
    fits_dir = None
    if settings["fits"]:
        fits_dir = str(staging / "fits")
        os.makedirs(fits_dir, exist_ok=True)
    chunks = _chunks(len(table), options["chunk_size"])
    _cut_all(plan, images, rows, chunks, fits_dir, _record(staging, digest, images, rows), options, done)
    result = cutout_table(table, plan, np.asarray(rows), options["keep_columns"], settings["max_nan_fraction"])
    result.meta.update(_meta(plan, digest))
    del images, rows
    _move_in(staging, out, result, settings["fits"])
    return result, np.load(out / "images.npy", mmap_mode="r")


def _cut_all(plan, images, rows, chunks, fits_dir, on_chunk, options: dict, done: int = 0) -> None:
    n = len(plan.ra)
    bar = progress_bar(n, options["progress"], label="Cutting")
    bar.update(int(chunks[done - 1][-1]) + 1 if done else 0)
    try:
        with ThreadPoolExecutor(options["workers"], thread_name_prefix="gamornet-cutouts") as pool:
            _run_chunks(plan, images, rows, chunks, pool, fits_dir, on_chunk, bar, done)
    finally:
        plan.close()
    bar.finish()


def _check_options(max_nan_fraction, chunk_size, workers) -> None:
    if isinstance(max_nan_fraction, bool) or not isinstance(max_nan_fraction, (int, float)) or not (
            0 <= max_nan_fraction <= 1):
        raise ValueError(f"`max_nan_fraction` must be a number in [0, 1]. Received: max_nan_fraction="
                         f"{max_nan_fraction!r}")
    for name, value in (("chunk_size", chunk_size), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")


def make_cutouts(catalog, images, output=None, *, survey: str | None = None, pixel_scale: float | None = None,
                 size: int | None = None, ra_column: str | None = None, dec_column: str | None = None,
                 id_column: str | None = None, hdu: int | str | None = None, keep_columns=None, fits: bool = False,
                 overwrite: bool = False, resume: bool = False, progress: bool = True,
                 max_nan_fraction: float = DEFAULT_MAX_NAN_FRACTION, chunk_size: int = 1024,
                 workers: int | None = None, fsspec_kwargs: dict | None = None) -> tuple[Table, np.ndarray]:
    """Cut every source of a catalogue out of survey images, on a model's grid.

    Each cutout is the model's grid (``survey``, or ``pixel_scale`` and
    ``size``) centred on the source, north up and east left: the tile's own
    pixels where it has the grid's scale (within 1%) and orientation (within
    0.5 degree), else resampled with flux conserved (pixels hold flux per
    pixel: sums over the sky are kept); see :mod:`gamornet.cutouts.resample`.
    A source is cut from the tile that holds its whole cutout (the one where
    it lies farthest from an edge when several do).

    Parameters
    ----------
    catalog : str, os.PathLike or astropy.table.Table
        Any table astropy reads (ECSV, CSV, FITS, VOTable, Parquet).
    images : str, os.PathLike or sequence of them
        FITS images with a celestial WCS (any projection, rotated or not),
        read memory-mapped; or their URLs (``http://``, ``https://``,
        ``s3://``; local paths and URLs may be mixed), of which only the
        headers and the cutouts' rows are read (through fsspec).
    output : str or os.PathLike, optional
        Folder to write (``images.npy``, ``catalog.ecsv``, with ``fits``
        ``fits/cutout_NNNNNN.fits``); None: keep the cutouts in memory.
    survey : {"SDSS", "CANDELS"}, optional
        The published grid: 167 x 167 at 0.396"/px, or 83 x 83 at 0.06"/px.
    pixel_scale, size : float, int, optional
        Arcsec per pixel and pixels on a side, instead of (or overriding) ``survey``.
    ra_column, dec_column, id_column : str, optional
        Catalogue columns; found by name when not given
        (:mod:`gamornet.cutouts.catalog`); without an id column, ids are row numbers.
    hdu : int or str, optional
        Image HDU of every image (index or EXTNAME); by default the first 2-D
        HDU with a celestial WCS.
    keep_columns : sequence of str, optional
        Catalogue columns to keep (default all).
    fits : bool
        Also write one FITS file per cutout, with its WCS (needs ``output``).
    overwrite : bool
        Replace cutouts already in ``output``.
    resume : bool
        Continue an interrupted run of the same catalogue, images and settings
        after its last complete chunk (a finished one is returned as it is).
    progress : bool
        Show a progress bar.
    max_nan_fraction : float
        Cutouts wholly on their tile with more NaN pixels than this fraction
        are flagged ``too_many_nan`` (cutouts running off the tile are ``partial``).
    chunk_size : int
        Catalogue rows per saved chunk (the result does not depend on it).
    workers : int, optional
        Threads cutting tiles in parallel (default: the CPU count, at most 8).
    fsspec_kwargs : dict, optional
        Options of the fsspec file system of the URLs in ``images``, such as
        ``{"anon": True}`` for a public S3 bucket (``s3://`` needs
        ``pip install gamornet[cloud]``).

    Returns
    -------
    table : astropy.table.Table
        One row per catalogue row, in catalogue order: ``cutout_index`` (row of
        ``images``; ``gamornet predict DIR`` names it ``DIR/images.npy:N``),
        ``cutout_id``, ``cutout_ra``, ``cutout_dec`` (degrees), ``cutout_flag``
        (:data:`FLAGS`), ``cutout_coverage`` (fraction of the cutout on the
        tile), ``cutout_nan_fraction``, ``cutout_method`` (``copy``,
        ``resample``, or empty), ``tile`` (file name, or URL), ``tile_x``, ``tile_y``
        (the source in the tile, 0-based pixels), ``cutout_x``, ``cutout_y``
        (the source in the cutout, 0-based pixels), then the catalogue's columns.
    images : numpy.ndarray
        float32 ``(N, size, size, 1)``, all NaN for ``off_image`` rows
        (memory-mapped from ``output/images.npy`` when writing).

    Raises
    ------
    ValueError
        For a bad argument, missing column, unreadable position or image, or an image URL that cannot be reached.
    FileExistsError
        If ``output`` holds cutouts and neither ``overwrite`` nor a matching ``resume`` is given.
    gamornet.core.files.OutputLockedError
        If another run writes into ``output``.
    """
    grid = model_grid(survey, pixel_scale, size)
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    _check_options(max_nan_fraction, chunk_size, workers)
    if fits and output is None:
        raise ValueError("`fits=True` writes files: give `output`. Received: output=None")
    table = load_catalog(catalog)
    plan = CutoutPlan(table, images, grid, {"ra_column": ra_column, "dec_column": dec_column, "id_column": id_column},
                      hdu, fsspec_kwargs)
    settings = {"columns": plan.columns, "hdu": hdu, "max_nan_fraction": float(max_nan_fraction), "fits": bool(fits)}
    options = {"resume": resume, "overwrite": overwrite, "keep_columns": keep_columns, "progress": progress,
               "chunk_size": int(chunk_size), "workers": int(workers)}
    if output is None:
        stack = np.full((len(table), grid.size, grid.size, 1), np.nan, dtype=np.float32)
        rows = np.zeros(len(table), dtype=ROW_DTYPE)
        _cut_all(plan, stack, rows, _chunks(len(table), int(chunk_size)), None, lambda done: None, options)
        result = cutout_table(table, plan, rows, keep_columns, float(max_nan_fraction))
        result.meta.update(_meta(plan, plan.digest(settings)))
        return result, stack
    out = Path(make_output_dir(output))
    with output_lock(out, "output", directory=True):
        return _write_dir(out, table, plan, settings, options)
