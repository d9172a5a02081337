"""Simulated sets: many galaxies in parallel, in memory, on disk (``images.npy``, catalogue, FITS), or streamed."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from gamornet.core.files import OUTPUT_ERROR_FLAG, atomic_path, make_output_dir, output_error
from gamornet.core.progress import CURRENT_STDERR
from gamornet.core.validation import check_positive_int
from gamornet.simulate.config import (
    PARAM_NAMES,
    PARAM_UNITS,
    SurveyConfig,
    derived_quantities,
    draw_parameters,
    get_config,
)
from gamornet.simulate.render import render_galaxy

__all__ = ["simulate_galaxies", "simulate_to_disk", "iter_batches", "save_montage", "galaxy_id", "FITS_NAME"]

#: File name of galaxy ``id`` in the ``fits/`` folder of a set written by :func:`simulate_to_disk`.
FITS_NAME = "gal_{:06d}.fits"
_FITS_FILE = re.compile(r"gal_\d+\.fits(?:\.part)?")
_SIMULATED_IMAGE_ID = re.compile(r"(?:.*[/\\])?(?:gal_(\d+)\.fits|images\.npy:(\d+))")
_LOCK_NAME = ".simulate.lock"


def _render_range(config: SurveyConfig, seed: int, start: int, stop: int,
                  fits_dir: str | None = None) -> tuple[int, np.ndarray, list[dict[str, Any]]]:
    """Images ``start .. stop - 1`` of the set (worker task); optionally also their FITS files."""
    images = np.empty((stop - start, *config.shape, 1), dtype=np.float32)
    rows = []
    for k, index in enumerate(range(start, stop)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        params = draw_parameters(config, rng)
        images[k, :, :, 0] = render_galaxy(params, config, rng)
        row = {"id": index, **params, **derived_quantities(params, config)}
        rows.append(row)
        if fits_dir is not None:
            _write_fits(Path(fits_dir) / FITS_NAME.format(index), images[k, :, :, 0], row, config, seed)
    return start, images, rows


def _write_fits(path: Path, image: np.ndarray, row: dict[str, Any], config: SurveyConfig, seed: int) -> None:
    from astropy.io import fits

    header = fits.Header()
    header["SURVEY"], header["SEED"], header["GALID"] = config.name, seed, (row["id"], "index in the set")
    header["PIXSCALE"] = (config.pixel_scale, "arcsec / pixel")
    header["ZEROPT"] = (config.zero_point, "mag of 1 count")
    header["PSFFWHM"] = (config.psf_fwhm, "Moffat PSF FWHM, arcsec")
    keys = {"disk_mag": "DMAG", "bulge_mag": "BMAG", "disk_re": "DRE", "bulge_re": "BRE", "disk_q": "DQ",
            "bulge_q": "BQ", "disk_pa": "DPA", "bulge_pa": "BPA", "disk_x": "DX", "disk_y": "DY", "bulge_x": "BX",
            "bulge_y": "BY", "disk_flux": "DFLUX", "bulge_flux": "BFLUX", "bt": "BT"}
    for name, key in keys.items():
        header[key] = (float(row[name]), name)
    header["LABEL"], header["CLASSIDX"] = row["label"], row["class_index"]
    fits.PrimaryHDU(image, header=header).writeto(path, overwrite=True)  # into the set's staging folder


def _catalog(rows: list[dict[str, Any]], config: SurveyConfig, seed: int):
    from astropy.table import Table

    names = ["id", *PARAM_NAMES, "disk_flux", "bulge_flux", "bt", "label", "class_index"]
    table = Table(rows=[[r[k] for k in names] for r in rows] or None, names=names,
                  dtype=[np.int64] + [np.float64] * 15 + ["U13", np.int64])
    for name in names:
        unit = PARAM_UNITS.get(name.rsplit("_", 1)[-1])
        if unit and name != "bt":
            table[name].unit = unit
    table.meta.update(survey=config.name, seed=seed, config=config.as_dict(),
                      classes="class_index: 0 disk (bt < 0.45), 1 indeterminate, 2 bulge (bt > 0.55)")
    return table


def _check_common(n: int, workers: int | None) -> int:
    check_positive_int(n, "n")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return check_positive_int(workers, "workers", allow_none=True)


def _check_seed(seed: int) -> int:
    return check_positive_int(seed, "seed", minimum=0)


def _executor(workers: int) -> ProcessPoolExecutor:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def _run_tasks(config, seed, n, workers, chunk, progress, fits_dir=None) -> Iterator[tuple[int, np.ndarray, list]]:
    """Yield rendered chunks (in completion order), with at most 2 * workers chunks in flight."""
    import progressbar

    bar = progressbar.ProgressBar(max_value=n, fd=CURRENT_STDERR) if progress else None
    done = 0
    starts = list(range(0, n, chunk))
    if workers == 1:
        for start in starts:
            result = _render_range(config, seed, start, min(n, start + chunk), fits_dir)
            done += len(result[2])
            if bar:
                bar.update(done)
            yield result
    else:
        with _executor(workers) as pool:
            pending: set = set()
            while starts or pending:
                while starts and len(pending) < 2 * workers:
                    start = starts.pop(0)
                    pending.add(pool.submit(_render_range, config, seed, start, min(n, start + chunk), fits_dir))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()
                    done += len(result[2])
                    if bar:
                        bar.update(done)
                    yield result
    if bar:
        bar.finish()


def simulate_galaxies(n: int, survey: str | SurveyConfig = "SDSS", seed: int = 0, workers: int | None = None,
                      progress: bool = True, **overrides: Any):
    """Simulate ``n`` galaxies in memory.

    Parameters
    ----------
    n : int
        Number of galaxies.
    survey : str or SurveyConfig
        ``"SDSS"`` or ``"CANDELS"`` (or a config).
    seed : int
        Image ``i`` depends only on ``(seed, i)`` and the settings.
    workers : int, optional
        Processes to use (default: all cores); 1 renders in this process.
    progress : bool
        Show a progress bar on stderr.
    **overrides
        Settings of :class:`SurveyConfig` to change (e.g. ``bt_mode``,
        ``disk_re=(5, 10)``, ``add_noise=False``), or ``balanced=True``.

    Returns
    -------
    images : numpy.ndarray, float32, shape (n, height, width, 1)
    catalog : astropy.table.Table
        One row per image: ``id``, the :data:`PARAM_NAMES` parameters,
        ``disk_flux``, ``bulge_flux`` (counts), ``bt``, ``label`` (class name)
        and ``class_index`` (0 disk, 1 indeterminate, 2 bulge).
    """
    workers = _check_common(n, workers)
    seed = _check_seed(seed)
    config = get_config(survey, **overrides)
    images = np.empty((n, *config.shape, 1), dtype=np.float32)
    rows: list = [None] * n
    chunk = max(1, min(64, -(-n // (4 * workers))))
    for start, block, block_rows in _run_tasks(config, seed, n, workers, chunk, progress):
        images[start : start + len(block)] = block
        rows[start : start + len(block)] = block_rows
    return images, _catalog(rows, config, seed)


def galaxy_id(image_id) -> int | None:
    """Catalogue ``id`` of a simulated galaxy, from the id :func:`gamornet.predict_files` gives its image.

    A set written by :func:`simulate_to_disk` names galaxy ``N`` (the row of
    ``catalog.ecsv`` whose ``id`` is ``N``) ``images.npy:N`` as image ``N`` of
    ``images.npy``, and ``gal_NNNNNN.fits`` as a FITS file (see
    :data:`FITS_NAME`), either possibly after a directory.  Any other id
    gives ``None``.

    Examples
    --------
    >>> galaxy_id("gal_000042.fits"), galaxy_id("sim/images.npy:42"), galaxy_id("ngc1300.fits")
    (42, 42, None)
    """
    match = _SIMULATED_IMAGE_ID.fullmatch(str(image_id))
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def _set_fits_files(fits_dir: Path) -> list[Path]:
    """The FITS files of a simulated set in ``fits_dir`` (also unfinished ``.part`` files of older versions)."""
    if not fits_dir.is_dir():
        return []
    return [f for f in fits_dir.iterdir() if _FITS_FILE.fullmatch(f.name)]


def _retire_set(out: Path) -> None:
    """Remove the simulated set in ``out``: catalogue first (no catalogue: no complete set), images, FITS files."""
    for name in ("catalog.ecsv", "catalog.ecsv.part", "images.npy", "images.npy.part"):
        (out / name).unlink(missing_ok=True)
    for path in _set_fits_files(out / "fits"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out / "fits").rmdir()  # only if empty: files of the user's stay


def _move_in_set(staging: Path, out: Path) -> None:
    """Move a finished set from ``staging`` into ``out``: FITS files, images, catalogue last."""
    if (staging / "fits").is_dir():
        if not (out / "fits").exists():
            os.replace(staging / "fits", out / "fits")
        else:
            for path in sorted((staging / "fits").iterdir()):
                os.replace(path, out / "fits" / path.name)
    os.replace(staging / "images.npy", out / "images.npy")
    os.replace(staging / "catalog.ecsv", out / "catalog.ecsv")


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give errors of writing ``path`` that name no file (those of file objects) its name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _write_set(staging: Path, out: Path, config: SurveyConfig, seed: int, n: int, workers: int, chunk_size: int,
               progress: bool, fits: bool) -> None:
    """Render a set into ``staging``, then swap it into ``out``."""
    fits_dir = None
    if fits:
        fits_dir = staging / "fits"
        fits_dir.mkdir(mode=0o777)
    with _naming(staging / "images.npy"):
        images = np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.float32,
                                           shape=(n, *config.shape, 1))
        if hasattr(os, "posix_fallocate"):  # claim the space now: a full disk fails here, not as a fault when mapped
            with open(staging / "images.npy", "r+b") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
    rows: list = [None] * n
    tasks = _run_tasks(config, seed, n, workers, chunk_size, progress, None if fits_dir is None else str(fits_dir))
    for start, block, block_rows in tasks:
        images[start : start + len(block)] = block
        rows[start : start + len(block)] = block_rows
    images.flush()
    del images
    with _naming(staging / "catalog.ecsv"):
        _catalog(rows, config, seed).write(staging / "catalog.ecsv", format="ascii.ecsv", overwrite=True)
    _retire_set(out)
    _move_in_set(staging, out)


def simulate_to_disk(output_dir: str | os.PathLike, n: int, survey: str | SurveyConfig = "SDSS", seed: int = 0,
                     workers: int | None = None, fits: bool = False, chunk_size: int = 128, progress: bool = True,
                     overwrite: bool = False, **overrides: Any) -> Path:
    """Simulate ``n`` galaxies straight to disk, chunk by chunk.

    Writes ``DIR/images.npy`` (float32, ``(n, height, width, 1)``, readable
    with ``numpy.load(..., mmap_mode="r")``), ``DIR/catalog.ecsv`` (the
    columns of :func:`simulate_galaxies`, settings in its metadata) and, with
    ``fits=True``, ``DIR/fits/gal_NNNNNN.fits`` (2-D image, parameters in the
    header), where ``NNNNNN`` is the galaxy's catalogue ``id`` (see
    :func:`galaxy_id`).

    The set is written into a hidden staging folder inside ``DIR`` and moved
    into place only when complete: the previous set's files are removed
    first (catalogue first), then the new ones moved in (catalogue last).
    ``DIR`` never holds files of two sets, even after an interruption (which
    may leave no set, or an incomplete one without catalogue).  A lock file
    (``DIR/.simulate.lock``) keeps two processes from writing into ``DIR``
    at once.

    Parameters
    ----------
    output_dir : str or os.PathLike
        Created if needed.
    n, survey, seed, workers, progress, **overrides
        As for :func:`simulate_galaxies`.
    fits : bool
        Also write one FITS file per galaxy.
    chunk_size : int
        Images per worker task (the result does not depend on it).
    overwrite : bool
        Replace an existing set in ``output_dir`` (all its files, FITS files
        included).

    Returns
    -------
    pathlib.Path
        ``output_dir``.

    Raises
    ------
    FileExistsError
        If ``output_dir`` holds a set (or part of one) and ``overwrite`` is false.
    RuntimeError
        If another process is writing a set into ``output_dir``.
    """
    from filelock import FileLock, Timeout

    workers = _check_common(n, workers)
    seed = _check_seed(seed)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an integer >= 1. Received: chunk_size={chunk_size!r}")
    config = get_config(survey, **overrides)
    out = Path(output_dir)

    def holds_set() -> bool:
        return any((out / name).exists() for name in ("images.npy", "catalog.ecsv")) or bool(
            _set_fits_files(out / "fits"))

    if not overwrite and holds_set():
        raise FileExistsError(f"`output_dir` already holds a simulated set (use overwrite=True). Received: {out}")
    make_output_dir(out)
    lock = FileLock(str(out / _LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"`output_dir` is being written by another process (lock {out / _LOCK_NAME}). "
                           f"Received: output_dir={str(out)!r}") from None
    try:
        if not overwrite and holds_set():
            raise FileExistsError(f"`output_dir` already holds a simulated set (use overwrite=True). Received: {out}")
        for stale in out.glob(".simulate-*.part"):  # left by a killed run; the lock keeps live ones out
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging = Path(tempfile.mkdtemp(prefix=".simulate-", suffix=".part", dir=out))
        except OSError as exc:
            raise output_error(exc, out) from exc
        try:
            _write_set(staging, out, config, seed, n, workers, int(chunk_size), progress, fits)
        except OSError as exc:  # no space, quota...: name the file of the set, not its staging copy
            if getattr(exc, OUTPUT_ERROR_FLAG, False):
                raise
            name = os.fsdecode(exc.filename) if exc.filename is not None else str(out)
            if name.startswith(str(staging)):
                name = str(out) + name[len(str(staging)):]
            raise output_error(exc, name) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    return out


def iter_batches(batch_size: int, survey: str | SurveyConfig = "SDSS", seed: int = 0, workers: int = 1,
                 start: int = 0, **overrides: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images, onehot_labels)`` batches of new galaxies forever.

    Batch ``k`` holds galaxies ``start + k * batch_size`` onwards of the set
    ``seed`` (the same galaxies :func:`simulate_galaxies` gives for that
    seed).  Labels are float32 one-hot rows ``[disk, indeterminate, bulge]``.
    With ``workers > 1``, that many batches are rendered ahead in processes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    workers = _check_common(1, workers)
    seed = _check_seed(seed)
    config = get_config(survey, **overrides)
    eye = np.eye(3, dtype=np.float32)

    def pack(result: tuple[int, np.ndarray, list]) -> tuple[np.ndarray, np.ndarray]:
        return result[1], eye[[row["class_index"] for row in result[2]]]

    index = int(start)
    if workers == 1:
        while True:
            yield pack(_render_range(config, seed, index, index + batch_size))
            index += batch_size
    with _executor(workers) as pool:
        queue = []
        try:
            while True:
                while len(queue) < workers:
                    queue.append(pool.submit(_render_range, config, seed, index, index + batch_size))
                    index += batch_size
                yield pack(queue.pop(0).result())
        finally:
            for future in queue:
                future.cancel()


def save_montage(images: np.ndarray, catalog, path: str | os.PathLike, ncols: int = 4,
                 title: str | None = None) -> Path:
    """Write a PNG grid of galaxies (asinh stretch) titled with their ``bt`` and label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    count = len(images)
    nrows = -(-count // ncols)
    fig = Figure(figsize=(2.0 * ncols, 2.1 * nrows + (0.3 if title else 0)), dpi=72)
    FigureCanvasAgg(fig)
    for k in range(count):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        img = np.asarray(images[k]).squeeze()
        scale = max(float(np.percentile(img, 99.5)), 1e-12)
        noise = max(float(np.std(img[:8])), scale * 1e-3)
        ax.imshow(np.arcsinh(img / noise) / np.arcsinh(scale / noise), origin="lower", cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"bt={catalog['bt'][k]:.3f} {catalog['label'][k]}", fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.canvas.draw()
    gray = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(axis=2).round().astype(np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(gray, mode="L").save(tmp, format="PNG", optimize=True)  # grey PNG: a third of the size
    return Path(path)


# --------------------------------------------------------------------------- command line


