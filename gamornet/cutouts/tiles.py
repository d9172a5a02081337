"""Survey images: their image HDU and WCS, their pixels read memory-mapped, and which tile holds a source.

A tile is a FITS file whose image HDU (the first with 2-D data and a
celestial WCS, or the one ``hdu`` names) is opened memory-mapped and never
read whole: integer images are read raw (``do_not_scale_image_data``) and
scaled (``BSCALE``, ``BZERO``, ``BLANK`` as NaN) cutout by cutout.

Tile pixel coordinates are 0-based, pixel ``(x, y)`` covering
``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]`` (``x`` the column).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from gamornet.cutouts.grid import ANGLE_TOLERANCE, SCALE_TOLERANCE, ModelGrid

__all__ = ["Tile", "open_tile", "locate_sources"]


@dataclass
class Tile:
    """One survey image.

    Attributes
    ----------
    path : str
        The FITS file.
    hdu : int
        Index of its image HDU.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    shape : tuple of int
        ``(ny, nx)``.
    scale : float
        Pixel scale (arcsec / px) at the reference pixel (the mean of both axes).
    angle : float
        Angle (degrees, east of north) of the tile's +y axis; 0 for north up.
    east_left : bool
        Whether east is towards -x (the sky as seen, the usual orientation).
    """

    path: str
    hdu: int
    wcs: WCS
    shape: tuple[int, int]
    scale: float
    angle: float
    east_left: bool
    _scaling: tuple[float, float, float | None] = (1.0, 0.0, None)
    _hdul: fits.HDUList | None = field(default=None, repr=False)
    _data: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """File name, without its folder."""
        return os.path.basename(self.path)

    def matches(self, grid: ModelGrid) -> bool:
        """Whether pixels are copied: scale within 1%, north up and east left within 0.5 degree."""
        return (abs(self.scale / grid.pixel_scale - 1) <= SCALE_TOLERANCE and abs(self.angle) <= ANGLE_TOLERANCE
                and self.east_left)

    def open(self) -> None:
        """Map the pixels into memory (nothing is read); done before threads read them."""
        if self._hdul is None:
            self._hdul = fits.open(self.path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)
            self._data = self._hdul[self.hdu].data

    def pixels(self, rows: slice, cols: slice) -> np.ndarray:
        """The pixels ``[rows, cols]`` as float32 (scaled, ``BLANK`` as NaN), read from the memory map."""
        self.open()
        raw = np.asarray(self._data[rows, cols])
        bscale, bzero, blank = self._scaling
        values = raw.astype(np.float64) * bscale + bzero if (bscale, bzero) != (1.0, 0.0) else raw
        values = np.asarray(values, dtype=np.float32)
        if blank is not None and raw.dtype.kind in "iu":
            values[raw == blank] = np.nan
        return values

    def close(self) -> None:
        """Close the memory map."""
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = self._data = None


def _celestial_wcs(header: fits.Header) -> WCS | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # astropy raises many kinds for broken headers
            return None
    return wcs if wcs.has_celestial and wcs.naxis == 2 else None


def _orientation(wcs: WCS) -> tuple[float, float, bool]:
    """``(scale arcsec/px, angle of +y from north in degrees, east left)`` at the reference pixel."""
    matrix = wcs.pixel_scale_matrix  # degrees per pixel: rows (lon, lat), columns (x, y)
    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600
    angle = float(np.degrees(np.arctan2(matrix[0, 1], matrix[1, 1])))
    return scale, angle, bool(np.linalg.det(matrix) < 0)


def _image_hdu(hdul: fits.HDUList, hdu, path: str) -> tuple[int, WCS]:
    """Index and WCS of the image HDU: ``hdu`` (index or EXTNAME), else the first 2-D one with a celestial WCS."""
    candidates = range(len(hdul)) if hdu is None else [hdu if isinstance(hdu, int) else hdul.index_of(hdu)]
    for index in candidates:
        if not 0 <= index < len(hdul):
            raise ValueError(f"`hdu`: {path} has {len(hdul)} HDUs. Received: hdu={hdu!r}")
        header = hdul[index].header
        if header.get("NAXIS") == 2 and isinstance(hdul[index], (fits.PrimaryHDU, fits.ImageHDU)):
            wcs = _celestial_wcs(header)
            if wcs is not None:
                return index, wcs
    what = "has no" if hdu is None else f"HDU {hdu!r} is no"
    what += " 2-D image with a celestial WCS"
    raise ValueError(f"`images`: {path} {what}. Received: images=[..., {path!r}, ...]")


def open_tile(path: str | os.PathLike, hdu: int | str | None = None) -> Tile:
    """Open one survey image (its header now, its pixels memory-mapped when first cut).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not FITS, or has no 2-D image with a celestial WCS (in ``hdu``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`images`: no such file. Received: {path!r}")
    try:
        hdul = fits.open(path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"`images`: {path} could not be read as FITS ({exc}). Received: {path!r}") from None
    with hdul:
        try:
            index, wcs = _image_hdu(hdul, hdu, path)
        except KeyError:
            raise ValueError(f"`hdu`: {path} has no HDU named {hdu!r}. Received: hdu={hdu!r}") from None
        header = hdul[index].header
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        blank = header.get("BLANK") if header.get("BITPIX", -32) > 0 else None
        scaling = (float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)), blank)
    return Tile(path, index, wcs.celestial, shape, *_orientation(wcs.celestial), _scaling=scaling)


def _half_extent(tile: Tile, grid: ModelGrid) -> tuple[float, float]:
    """Half width of the model grid's footprint along the tile's x and y, in tile pixels."""
    half = grid.size * grid.pixel_scale / 3600 / 2  # degrees
    to_pixels = np.linalg.inv(tile.wcs.pixel_scale_matrix)
    corners = np.array([[-half, -half], [-half, half], [half, -half], [half, half]])
    offsets = corners @ to_pixels.T
    return float(np.abs(offsets[:, 0]).max()), float(np.abs(offsets[:, 1]).max())


def locate_sources(coords: SkyCoord, tiles: list[Tile], grid: ModelGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """For each source, the tile to cut it from, its pixel position there, and whether the cutout fits whole.

    A source is held by the tiles whose area contains its position; among
    them, those that hold its whole cutout come first, then the one where it
    lies farthest from an edge.

    Returns
    -------
    tile_index : numpy.ndarray of int
        Index in ``tiles``; -1 where no tile holds the source.
    x, y : numpy.ndarray of float
        0-based pixel position in that tile (NaN for -1).
    whole : numpy.ndarray of bool
        Whether the whole cutout lies inside that tile.
    """
    n = len(coords)
    best = np.full(n, -np.inf)
    index = np.full(n, -1)
    x_out, y_out = np.full(n, np.nan), np.full(n, np.nan)
    whole = np.zeros(n, dtype=bool)
    for k, tile in enumerate(tiles):
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore")  # positions far from the projection's centre give NaN
            x, y = (np.asarray(v, dtype=float) for v in tile.wcs.world_to_pixel(coords))
        ny, nx = tile.shape
        inside = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        hx, hy = _half_extent(tile, grid)
        slack = np.minimum.reduce([x + 0.5 - hx, nx - 0.5 - x - hx, y + 0.5 - hy, ny - 0.5 - y - hy])
        better = inside & (slack > best)
        index[better], best[better], x_out[better], y_out[better] = k, slack[better], x[better], y[better]
        whole[better] = slack[better] >= -1e-9
    return index, x_out, y_out, whole
