"""What a cutout run cuts: positions, tiles, the tile of each source, and one row cut at a time.

:class:`CutoutPlan` is small and picklable (numpy arrays of positions, tile
paths or URLs, the grid; no pixels): a process that receives one reopens the
tiles (memory-mapped, or remote files read in parts) when it first cuts a row.  :func:`cutout_flags` turns the
results of cuts into ``cutout_flag`` values.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
from astropy.table import Table

from gamornet.cutouts.catalog import catalog_positions
from gamornet.cutouts.grid import ModelGrid, grid_wcs
from gamornet.cutouts.resample import cut_source
from gamornet.cutouts.tiles import Tile, is_url, locate_sources, open_tile, tile_location

__all__ = ["CutoutPlan", "cutout_flags", "METHODS", "ROW_DTYPE"]

#: Values of the ``method`` field of a cut row: none (off every tile), copied, resampled.
METHODS = ("", "copy", "resample")
#: The results of one cut: coverage, NaN fraction, method (index in :data:`METHODS`), source position in the cutout.
ROW_DTYPE = np.dtype([("coverage", "f8"), ("nan_fraction", "f8"), ("method", "i1"), ("x", "f8"), ("y", "f8")])


def cutout_flags(tile_index, coverage, nan_fraction, max_nan_fraction: float) -> np.ndarray:
    """``cutout_flag`` of cut rows: ``off_image``, ``partial``, ``too_many_nan`` or ``ok``."""
    flags = np.where(np.asarray(nan_fraction) > max_nan_fraction, "too_many_nan", "ok").astype("U12")
    flags[np.asarray(coverage) < 1] = "partial"
    flags[np.asarray(tile_index) < 0] = "off_image"
    return flags


class CutoutPlan:
    """The rows of a catalogue to cut: their positions, the tiles and which tile each source comes from.

    Parameters
    ----------
    table : astropy.table.Table
        The catalogue.
    images : str, os.PathLike or sequence of them
        FITS tiles (local paths made absolute) or their URLs (``http://``,
        ``https://``, ``s3://``), mixed as wished.
    grid : ModelGrid
        The model grid.
    columns : dict
        ``ra_column``, ``dec_column``, ``id_column`` (None: found by name).
    hdu : int or str, optional
        Image HDU of every tile.
    fsspec_kwargs : dict, optional
        Options of the fsspec file system of the URLs (see
        :func:`gamornet.cutouts.tiles.open_tile`).

    Attributes
    ----------
    ra, dec : numpy.ndarray
        Degrees, one per row.
    ids : numpy.ndarray
        The id column's values, else row numbers.
    columns : dict
        The columns used (``ra``, ``dec``, ``id``).
    paths : list of str
        Absolute tile paths, and URLs.
    versions : list of tuple
        Per tile, for a URL, ``(size, ETag or modification time)`` when it was opened; empty for a local file.
    tile_index, x, y : numpy.ndarray
        Tile of each row (-1: none) and the source's 0-based pixel position there.
    """

    def __init__(self, table: Table, images, grid: ModelGrid, columns: dict, hdu=None,
                 fsspec_kwargs: dict | None = None):
        coords, self.ids, self.columns = catalog_positions(table, **columns)
        self.ra, self.dec = coords.ra.deg, coords.dec.deg
        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        if not paths:
            raise ValueError("`images` must name at least one FITS file. Received: images=[]")
        self._tiles: list[Tile] | None = [open_tile(p, hdu, fsspec_kwargs) for p in paths]
        self.paths = [tile_location(t.path) for t in self._tiles]
        self.versions = [t.version for t in self._tiles]
        self.grid, self.hdu, self.fsspec_kwargs = grid, hdu, fsspec_kwargs
        self.tile_index, self.x, self.y, _ = locate_sources(coords, self._tiles, grid)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tiles"] = state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def tiles(self) -> list[Tile]:
        """The tiles, opened (memory-mapped, or remote) on first use in this process."""
        with self._lock:
            if self._tiles is None:
                self._tiles = [open_tile(p, self.hdu, self.fsspec_kwargs) for p in self.paths]
            for tile in self._tiles:
                tile.open()
            return self._tiles

    #: Attributes holding one value per catalogue row.
    ROW_ATTRIBUTES = ("ra", "dec", "ids", "tile_index", "x", "y")

    def subset(self, rows) -> CutoutPlan:
        """The plan of ``rows`` alone (row ``i`` of the result is row ``rows[i]`` here), tiles not opened.

        What one chunk of a cluster run sends its worker: the chunk's rows, not
        the whole catalogue.
        """
        rows = np.asarray(rows, dtype=np.intp)
        part = CutoutPlan.__new__(CutoutPlan)
        state = self.__getstate__()
        state.update({name: np.asarray(getattr(self, name))[rows] for name in self.ROW_ATTRIBUTES})
        part.__setstate__(state)
        return part

    def close(self) -> None:
        """Close the tiles' memory maps and remote files."""
        for tile in self._tiles or []:
            tile.close()

    def tile_fingerprints(self) -> list:
        """``(path, size, modification time in ns, hdu)`` of each tile; ``(URL, size, ETag or modification time,
        hdu)`` of a remote one, as the server gave them when the plan was made."""
        return [(p, *version, self.hdu) if is_url(p) else (p, os.path.getsize(p), os.stat(p).st_mtime_ns, self.hdu)
                for p, version in zip(self.paths, self.versions)]

    def digest(self, settings: dict) -> str:
        """SHA-256 of what decides the cutouts: positions, ids, tiles (path or URL, size, time), grid and settings."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"tiles": self.tile_fingerprints(), "grid": [self.grid.pixel_scale, self.grid.size],
                                  **settings}, sort_keys=True, default=str).encode())
        for values in (self.ra, self.dec, np.asarray(self.ids).astype(str)):
            digest.update(np.ascontiguousarray(values).tobytes())
        return digest.hexdigest()

    def cut(self, row: int) -> tuple[np.ndarray, object, tuple]:
        """Cut row ``row``: ``(image (size, size) float32, its WCS, results)``, results as in :data:`ROW_DTYPE`.

        A source on no tile gives an all-NaN image and results ``(0, 1, 0, NaN, NaN)``.
        """
        k = self.tile_index[row]
        if k < 0:
            image = np.full((self.grid.size,) * 2, np.nan, np.float32)
            return image, grid_wcs(self.ra[row], self.dec[row], self.grid), (0.0, 1.0, 0, np.nan, np.nan)
        tile = self.tiles[k]
        cut = cut_source(tile, self.x[row], self.y[row], self.ra[row], self.dec[row], self.grid)
        image = cut.image
        result = (cut.coverage, float(np.mean(np.isnan(image))), METHODS.index(cut.method), cut.x, cut.y)
        return image, cut.wcs, result
