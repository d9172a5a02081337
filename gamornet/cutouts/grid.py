"""The model grid: the size and pixel scale of a model's input, and its TAN WCS centred on a source.

The published models take SDSS g-band cutouts of 167 x 167 pixels at
0.396"/px and CANDELS H-band cutouts of 83 x 83 pixels at 0.06"/px
(:data:`gamornet.simulate.SURVEYS`).  A cutout's grid has north up and east
left; its centre is pixel ``((size - 1) / 2, (size - 1) / 2)`` (0-based).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from gamornet.simulate.config import SURVEYS

__all__ = ["ModelGrid", "model_grid", "grid_wcs", "SCALE_TOLERANCE", "ANGLE_TOLERANCE"]

#: Relative difference of pixel scales within which pixels are copied rather than resampled.
SCALE_TOLERANCE = 0.01
#: Rotation (degrees) within which pixels are copied rather than resampled.
ANGLE_TOLERANCE = 0.5


@dataclass(frozen=True)
class ModelGrid:
    """The pixel grid of a model's input.

    Attributes
    ----------
    pixel_scale : float
        Arcseconds per pixel.
    size : int
        Pixels on a side (cutouts are square).
    survey : str or None
        ``"SDSS"`` or ``"CANDELS"`` for the published grids.
    """

    pixel_scale: float
    size: int
    survey: str | None = None

    @property
    def centre(self) -> float:
        """0-based pixel coordinate of the centre (both axes)."""
        return (self.size - 1) / 2


def _positive(value, name: str, integer: bool):
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer) if integer else (int, float, np.number))
    if not ok or not math.isfinite(float(value)) or value <= 0:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"`{name}` must be {kind} > 0. Received: {name}={value!r}")
    return int(value) if integer else float(value)


def model_grid(survey: str | None = None, pixel_scale: float | None = None, size: int | None = None) -> ModelGrid:
    """The grid of ``survey`` (``"SDSS"`` or ``"CANDELS"``), or of ``pixel_scale`` and ``size``.

    ``pixel_scale`` or ``size`` given with ``survey`` replace the survey's.

    Raises
    ------
    ValueError
        For an unknown survey, or neither a survey nor both ``pixel_scale`` and ``size``.
    """
    if survey is not None:
        if not isinstance(survey, str) or survey.upper() not in SURVEYS:
            raise ValueError(f"`survey` must be one of {sorted(SURVEYS)}. Received: survey={survey!r}")
        config = SURVEYS[survey.upper()]
        pixel_scale = config.pixel_scale if pixel_scale is None else pixel_scale
        size = config.shape[0] if size is None else size
        survey = config.name
    elif pixel_scale is None or size is None:
        raise ValueError(f"give `survey` (one of {sorted(SURVEYS)}) or both `pixel_scale` and `size`. Received: "
                         f"survey=None, pixel_scale={pixel_scale!r}, size={size!r}")
    return ModelGrid(_positive(pixel_scale, "pixel_scale", False), _positive(size, "size", True), survey)


def grid_wcs(ra: float, dec: float, grid: ModelGrid) -> WCS:
    """TAN WCS (ICRS, degrees) of ``grid`` centred on ``(ra, dec)``: north up, east left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [float(ra), float(dec)]
    wcs.wcs.crpix = [grid.centre + 1, grid.centre + 1]  # FITS pixels count from 1
    wcs.wcs.cdelt = [-grid.pixel_scale / 3600, grid.pixel_scale / 3600]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.pixel_shape = (grid.size, grid.size)
    return wcs
