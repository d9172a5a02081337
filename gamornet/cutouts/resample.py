"""One cutout on the model grid: pixels copied where the tile has the grid's scale and orientation, else resampled.

Copied cutouts are the tile's own pixels (the slices
:class:`astropy.nddata.Cutout2D` takes in ``mode="partial"``: centred on
the pixel nearest the source, NaN where the grid runs off the tile), so the
source lies within half a pixel of the centre, at the position recorded in
``cutout_x``, ``cutout_y``.  Resampled cutouts are computed with
:func:`reproject.reproject_adaptive` (``conserve_flux=True``) onto the TAN
grid centred on the source: each pixel holds the flux that falls on it, so
the sum over any region of sky is kept, and pixel values scale with pixel
area (a tile at 0.2"/px resampled to 0.4"/px gives pixels about 4 times
brighter).  Pixel values thus stay flux per pixel, as in the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.nddata.utils import NoOverlapError, overlap_slices
from astropy.wcs import WCS, Sip

from gamornet.cutouts.grid import ModelGrid, grid_wcs
from gamornet.cutouts.tiles import Tile

__all__ = ["Cutout", "cut_source"]

#: Extra tile pixels read around a resampled cutout's footprint (the resampling kernel reaches beyond it).
_MARGIN = 4


@dataclass
class Cutout:
    """One cutout.

    Attributes
    ----------
    image : numpy.ndarray
        ``(size, size)`` float32, NaN off the tile.
    wcs : astropy.wcs.WCS
        Its WCS.
    coverage : float
        Fraction of its pixels that lie on the tile.
    method : str
        ``"copy"`` or ``"resample"``.
    x, y : float
        The source's 0-based pixel position in the cutout.
    """

    image: np.ndarray
    wcs: WCS
    coverage: float
    method: str
    x: float
    y: float


def _shifted(wcs: WCS, x0: int, y0: int) -> WCS:
    """``wcs`` with pixel ``(x0, y0)`` as its first pixel (a SIP distortion, which keeps its own CRPIX, moved too)."""
    out = wcs.deepcopy()
    out.wcs.crpix = out.wcs.crpix - np.array([x0, y0])
    if out.sip is not None:
        out.sip = Sip(out.sip.a, out.sip.b, out.sip.ap, out.sip.bp, out.sip.crpix - np.array([x0, y0]))
    return out


def _copy(tile: Tile, x: float, y: float, size: int) -> Cutout:
    image = np.full((size, size), np.nan, dtype=np.float32)
    try:
        large, small = overlap_slices(tile.shape, (size, size), (y, x), mode="partial")
    except NoOverlapError:
        x0, y0 = int(round(x)) - (size - 1) // 2, int(round(y)) - (size - 1) // 2
        return Cutout(image, _shifted(tile.wcs, x0, y0), 0.0, "copy", x - x0, y - y0)
    image[small] = tile.pixels(*large)
    x0, y0 = large[1].start - small[1].start, large[0].start - small[0].start
    covered = (small[0].stop - small[0].start) * (small[1].stop - small[1].start) / size**2
    return Cutout(image, _shifted(tile.wcs, x0, y0), covered, "copy", x - x0, y - y0)


def _resample(tile: Tile, x: float, y: float, ra: float, dec: float, grid: ModelGrid) -> Cutout:
    from reproject import reproject_adaptive

    target = grid_wcs(ra, dec, grid)
    edge = np.arange(grid.size + 1) - 0.5
    border = np.concatenate([np.stack([edge, np.full_like(edge, v)]) for v in (edge[0], edge[-1])]
                            + [np.stack([np.full_like(edge, v), edge]) for v in (edge[0], edge[-1])], axis=1)
    tx, ty = tile.wcs.world_to_pixel(target.pixel_to_world(border[0], border[1]))
    ny, nx = tile.shape
    x_lo, x_hi = max(0, math.floor(np.min(tx)) - _MARGIN), min(nx, math.ceil(np.max(tx)) + _MARGIN + 1)
    y_lo, y_hi = max(0, math.floor(np.min(ty)) - _MARGIN), min(ny, math.ceil(np.max(ty)) + _MARGIN + 1)
    centre = grid.centre
    if x_lo >= x_hi or y_lo >= y_hi:
        return Cutout(np.full((grid.size,) * 2, np.nan, np.float32), target, 0.0, "resample", centre, centre)
    pixels = tile.pixels(slice(y_lo, y_hi), slice(x_lo, x_hi)).astype(np.float64)
    image, footprint = reproject_adaptive((pixels, _shifted(tile.wcs, x_lo, y_lo)), target, (grid.size, grid.size),
                                          conserve_flux=True, boundary_mode="strict")
    on_tile = (tx >= -0.5) & (tx <= nx - 0.5) & (ty >= -0.5) & (ty <= ny - 0.5)
    coverage = 1.0 if on_tile.all() else float(np.mean(footprint > 0))
    return Cutout(image.astype(np.float32), target, coverage, "resample", centre, centre)


def cut_source(tile: Tile, x: float, y: float, ra: float, dec: float, grid: ModelGrid) -> Cutout:
    """The cutout of the source at tile pixel ``(x, y)`` (sky position ``(ra, dec)``, degrees) on ``grid``."""
    if tile.matches(grid):
        return _copy(tile, x, y, grid.size)
    return _resample(tile, x, y, ra, dec, grid)
