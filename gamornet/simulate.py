"""Simulated bulge + disk galaxies, the training data of GaMorNet (Ghosh et al. 2020).

Each galaxy is a Sersic ``n = 4`` bulge plus an ``n = 1`` exponential disk,
integrated over pixels, convolved with a Moffat PSF and given Poisson noise.
Pure numpy / scipy; no GalSim.

Conventions
-----------
- Pixel ``(row i, column j)`` covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``
  in ``(x, y)``: coordinates are 0-based pixel centres.
- ``re`` is the half-light radius along the major axis (pixels), ``q`` the
  axis ratio b/a, ``pa`` the position angle of the major axis in degrees,
  counter-clockwise from the +x (column) axis.
- Magnitudes turn into counts with ``flux = 10 ** (-0.4 * (mag - zero_point))``;
  ``bt = F_bulge / (F_bulge + F_disk)`` is computed from these fluxes, never
  from pixels.  Labels: disk if ``bt < 0.45``, indeterminate if
  ``0.45 <= bt <= 0.55``, bulge otherwise.
- Pixel values are counts.  Noise is Poisson in electrons (counts x ``gain``)
  on source + sky; the mean sky is then subtracted (``subtract_sky``).
- Image ``i`` of a set depends only on ``(seed, i)`` and the settings, through
  ``numpy.random.SeedSequence(seed, spawn_key=(i,))``: the same seed gives the
  same images whatever the number of workers or the chunking.

Class mix
---------
With ``bt_mode="paper"`` (the default, the recipe of Ghosh et al. 2020) the bulge magnitude is
the disk magnitude plus a uniform offset in [-3.2, 3.2], so ``bt`` piles up
near 0 and 1 and few galaxies are indeterminate: CANDELS about 46.5% disk,
7% indeterminate, 46.5% bulge; SDSS (bulge magnitude also kept inside
[15, 22], which favours small offsets) about 45% / 9% / 46%.
``bt_mode="uniform"`` draws ``bt`` uniformly in ``bt_range``;
``bt_mode="classes"`` (``balanced=True`` is a shortcut with equal fractions)
first draws the class with probabilities ``class_mix``, then ``bt`` uniformly
inside that class's interval (intersected with ``bt_range``).  In both the
bulge magnitude is then ``disk_mag - 2.5 log10(bt / (1 - bt))`` (for SDSS the
disk magnitude is drawn so that both stay inside [15, 22]).  With the default
``bt_range=(0.05, 0.95)`` (``|offset| <= 3.2`` mag) "uniform" gives 44% / 11% / 44%.

Rendering accuracy
------------------
Inside a small "core" ellipse (minor semi-axis 1.5 px) the flux of each
component is laid down exactly, annulus by annulus, from the analytic enclosed
flux (so the unresolved n = 4 cusp is handled exactly); outside it the profile
is integrated on nested sub-pixel grids, refined (up to 32x32 per pixel) only
where the profile changes on scales shorter than 3 sub-pixels.  Total fluxes
agree with the analytic values to better than 0.5%.

Parallelism
-----------
``workers > 1`` uses a process pool started with ``forkserver`` (safe when
TensorFlow threads already run in the parent).  As with every non-fork start
method, a script calling these functions must do so under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import math
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy import special

from gamornet.batching import CURRENT_STDERR
from gamornet.network import CLASS_NAMES

__all__ = [
    "SurveyConfig",
    "SURVEYS",
    "get_config",
    "draw_parameters",
    "render_galaxy",
    "simulate_galaxies",
    "simulate_to_disk",
    "galaxy_id",
    "FITS_NAME",
    "iter_batches",
    "label_index_from_bt",
    "sersic_enclosed_flux",
    "save_montage",
    "register_cli",
]

#: Catalog columns with the generating parameters, in order.
PARAM_NAMES: tuple[str, ...] = (
    "disk_mag", "bulge_mag", "disk_re", "bulge_re", "disk_q", "bulge_q",
    "disk_pa", "bulge_pa", "disk_x", "disk_y", "bulge_x", "bulge_y",
)
_UNITS = {"mag": "mag", "re": "pix", "pa": "deg", "x": "pix", "y": "pix", "flux": "ct"}
_RANGE_FIELDS = (
    "disk_re", "bulge_re", "disk_q", "bulge_q", "disk_mag", "bulge_delta",
    "disk_pa", "bulge_pa_offset", "centre", "bt_range",
)
BT_BOUNDS: tuple[float, float] = (0.45, 0.55)
#: File name of galaxy ``id`` in the ``fits/`` folder of a set written by :func:`simulate_to_disk`.
FITS_NAME = "gal_{:06d}.fits"
_FITS_FILE = re.compile(r"gal_\d+\.fits(?:\.part)?")
_SIMULATED_IMAGE_ID = re.compile(r"(?:.*[/\\])?(?:gal_(\d+)\.fits|images\.npy:(\d+))")
_LOCK_NAME = ".simulate.lock"


@dataclass(frozen=True)
class SurveyConfig:
    """Everything that defines a simulated data set (use :func:`get_config`).

    Attributes
    ----------
    name : str
        Preset name.
    shape : tuple of int
        Image ``(height, width)`` in pixels.
    pixel_scale : float
        Arcsec per pixel.
    zero_point : float
        Magnitude of 1 count.
    psf_fwhm : float
        Moffat PSF FWHM in arcsec (0 turns the PSF off).
    psf_beta : float
        Moffat index (> 1).
    sky_sb : float
        Sky surface brightness, mag / arcsec^2 (21.9 SDSS g, 22.2 CANDELS H).
    gain : float
        Electrons per count (sets the Poisson noise).  The presets give 5-sigma
        point-source depths of about 23.0 (SDSS g) and 27.0 (CANDELS H) mag.
    add_noise : bool
        Add Poisson sky + source noise (``False``: noise-free images).
    subtract_sky : bool
        Remove the mean sky level, so the background averages 0.
    disk_re, bulge_re : (float, float)
        Uniform ranges of the half-light radii (pixels).
    disk_q, bulge_q : (float, float)
        Uniform ranges of the axis ratios.
    disk_mag : (float, float)
        Uniform range of the disk magnitude.
    bulge_delta : (float, float)
        Range of ``bulge_mag - disk_mag`` (``bt_mode="paper"``).
    clip_bulge_mag : bool
        Keep the bulge magnitude inside ``disk_mag`` too (SDSS).
    disk_pa, bulge_pa_offset : (float, float)
        Disk position angle and bulge-minus-disk angle (degrees).
    centre : (float, float)
        Uniform range of the disk centre, x and y drawn independently (pixels).
    bulge_centre_jitter : float
        Bulge centre = disk centre * (1 + U(-j, j)) per coordinate (2.5% in
        both presets: the paper states it for SDSS, CANDELS is assumed alike).
    bt_mode : {"paper", "uniform", "classes"}
        How bulge-to-total ratios are drawn (see the module docstring).
    bt_range : (float, float)
        Range of ``bt`` for the ``uniform`` and ``classes`` modes, inside (0, 1).
    class_mix : (float, float, float)
        Class probabilities [disk, indeterminate, bulge] for ``classes`` mode.
    """

    name: str
    shape: tuple[int, int]
    pixel_scale: float
    zero_point: float
    psf_fwhm: float
    psf_beta: float
    sky_sb: float
    gain: float
    disk_re: tuple[float, float]
    bulge_re: tuple[float, float]
    disk_q: tuple[float, float]
    bulge_q: tuple[float, float]
    disk_mag: tuple[float, float]
    bulge_delta: tuple[float, float]
    clip_bulge_mag: bool
    centre: tuple[float, float]
    disk_pa: tuple[float, float] = (-90.0, 90.0)
    bulge_pa_offset: tuple[float, float] = (-15.0, 15.0)
    bulge_centre_jitter: float = 0.025
    add_noise: bool = True
    subtract_sky: bool = True
    bt_mode: str = "paper"
    bt_range: tuple[float, float] = (0.05, 0.95)
    class_mix: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)

    def __post_init__(self) -> None:
        def bad(field: str, rule: str) -> ValueError:
            return ValueError(f"`{field}` must be {rule}. Received: {field}={getattr(self, field)!r}")

        for field in _RANGE_FIELDS:
            value = getattr(self, field)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise bad(field, "a (low, high) pair of numbers") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise bad(field, "a (low, high) pair of finite numbers with low <= high")
            object.__setattr__(self, field, (lo, hi))
        for field in ("disk_re", "bulge_re", "disk_q", "bulge_q"):
            if getattr(self, field)[0] <= 0 or (field.endswith("_q") and getattr(self, field)[1] > 1):
                raise bad(field, "a range of positive numbers (axis ratios at most 1)")
        if not (0 < self.bt_range[0] and self.bt_range[1] < 1):
            raise bad("bt_range", "a range inside the open interval (0, 1)")
        try:
            shape = tuple(int(v) for v in self.shape)
        except (TypeError, ValueError):
            raise bad("shape", "(height, width) in pixels") from None
        if len(shape) != 2 or min(shape) < 8 or shape != tuple(self.shape):
            raise bad("shape", "(height, width), two integers >= 8")
        object.__setattr__(self, "shape", shape)
        for field in ("pixel_scale", "gain", "psf_beta"):
            if not float(getattr(self, field)) > (1.0 if field == "psf_beta" else 0.0):
                raise bad(field, "a positive number (psf_beta > 1)")
        if not float(self.psf_fwhm) >= 0:
            raise bad("psf_fwhm", "a FWHM in arcsec >= 0")
        if not 0 <= float(self.bulge_centre_jitter) < 1:
            raise bad("bulge_centre_jitter", "a fraction in [0, 1)")
        if self.bt_mode not in ("paper", "uniform", "classes"):
            raise bad("bt_mode", "'paper', 'uniform' or 'classes'")
        mix = np.asarray(self.class_mix, dtype=float)
        if mix.shape != (3,) or not np.all(mix >= 0) or not mix.sum() > 0:
            raise bad("class_mix", "three non-negative fractions [disk, indeterminate, bulge]")
        object.__setattr__(self, "class_mix", tuple(float(v) for v in mix / mix.sum()))
        if self.bt_mode == "classes":
            for k, (lo, hi) in enumerate(_class_bt_intervals(self.bt_range)):
                if self.class_mix[k] > 0 and lo > hi:
                    raise bad("bt_range", f"overlapping the {CLASS_NAMES[k]} interval when class_mix asks for it")

    def replace(self, **overrides: Any) -> SurveyConfig:
        """A copy with some settings changed (validated); unknown names raise ``ValueError``."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"Unknown simulation setting(s) {unknown}; valid: {[f.name for f in dataclasses.fields(self)]}. "
                f"Received: {', '.join(f'{k}={overrides[k]!r}' for k in unknown)}"
            )
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (for catalog metadata)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: The presets of the paper's simulations (Ghosh et al. 2020).
SURVEYS: dict[str, SurveyConfig] = {
    "SDSS": SurveyConfig(
        name="SDSS", shape=(167, 167), pixel_scale=0.396, zero_point=25.11, psf_fwhm=1.4, psf_beta=3.0,
        sky_sb=21.9, gain=75.0, disk_re=(10, 30), bulge_re=(4, 17), disk_q=(0.3, 1), bulge_q=(0.3, 1),
        disk_mag=(15, 22), bulge_delta=(-3.2, 3.2), clip_bulge_mag=True, centre=(75, 92),
    ),
    "CANDELS": SurveyConfig(
        name="CANDELS", shape=(83, 83), pixel_scale=0.06, zero_point=25.95, psf_fwhm=0.18, psf_beta=2.5,
        sky_sb=22.2, gain=800.0, disk_re=(1, 20), bulge_re=(1, 14), disk_q=(0.25, 1), bulge_q=(0.25, 1),
        disk_mag=(19, 30), bulge_delta=(-3.2, 3.2), clip_bulge_mag=False, centre=(39.4, 43.6),
    ),
}


def get_config(survey: str | SurveyConfig = "SDSS", **overrides: Any) -> SurveyConfig:
    """The preset ``"SDSS"`` or ``"CANDELS"`` (case-insensitive), or a given config, with overrides.

    ``balanced=True`` is accepted as shorthand for ``bt_mode="classes"`` with
    equal class fractions.

    Raises
    ------
    ValueError
        For an unknown survey, an unknown setting or an invalid value.
    """
    if isinstance(survey, SurveyConfig):
        config = survey
    elif isinstance(survey, str) and survey.upper() in SURVEYS:
        config = SURVEYS[survey.upper()]
    else:
        raise ValueError(f"`survey` must be one of {sorted(SURVEYS)} or a SurveyConfig. Received: survey={survey!r}")
    if overrides.pop("balanced", False):
        overrides = {"bt_mode": "classes", "class_mix": (1 / 3, 1 / 3, 1 / 3), **overrides}
    return config.replace(**overrides) if overrides else config


def label_index_from_bt(bt) -> np.ndarray:
    """Class index (0 disk, 1 indeterminate, 2 bulge) of bulge-to-total ratios."""
    bt = np.asarray(bt, dtype=float)
    return np.where(bt < BT_BOUNDS[0], 0, np.where(bt <= BT_BOUNDS[1], 1, 2))


def _class_bt_intervals(bt_range: tuple[float, float]) -> list[tuple[float, float]]:
    lo, hi = bt_range
    return [(lo, min(hi, BT_BOUNDS[0])), (max(lo, BT_BOUNDS[0]), min(hi, BT_BOUNDS[1])), (max(lo, BT_BOUNDS[1]), hi)]


def draw_parameters(config: SurveyConfig, rng: np.random.Generator) -> dict[str, float]:
    """Draw one galaxy's parameters (the :data:`PARAM_NAMES` keys) from ``config``."""
    u = rng.uniform
    mlo, mhi = config.disk_mag
    if config.bt_mode == "paper":
        disk_mag = u(mlo, mhi)
        dlo, dhi = config.bulge_delta
        if config.clip_bulge_mag:
            dlo, dhi = max(dlo, mlo - disk_mag), min(dhi, mhi - disk_mag)
        delta = u(dlo, dhi)
    else:
        if config.bt_mode == "uniform":
            bt = u(*config.bt_range)
        else:
            k = rng.choice(3, p=config.class_mix)
            bt = u(*_class_bt_intervals(config.bt_range)[k])
        delta = -2.5 * math.log10(bt / (1.0 - bt))
        if config.clip_bulge_mag:
            mlo, mhi = max(mlo, mlo - delta), min(mhi, mhi - delta)
            if mlo > mhi:  # the offset alone leaves the range: keep both magnitudes as close as possible
                mlo = mhi = (config.disk_mag[0] + config.disk_mag[1] - delta) / 2
        disk_mag = u(mlo, mhi)
    disk_pa = u(*config.disk_pa)
    disk_x, disk_y = u(*config.centre), u(*config.centre)
    jit = config.bulge_centre_jitter
    return {
        "disk_mag": disk_mag,
        "bulge_mag": disk_mag + delta,
        "disk_re": u(*config.disk_re),
        "bulge_re": u(*config.bulge_re),
        "disk_q": u(*config.disk_q),
        "bulge_q": u(*config.bulge_q),
        "disk_pa": disk_pa,
        "bulge_pa": disk_pa + u(*config.bulge_pa_offset),
        "disk_x": disk_x,
        "disk_y": disk_y,
        "bulge_x": disk_x * (1 + u(-jit, jit)),
        "bulge_y": disk_y * (1 + u(-jit, jit)),
    }


def _derived(params: dict[str, float], config: SurveyConfig) -> dict[str, Any]:
    disk_flux = 10 ** (-0.4 * (params["disk_mag"] - config.zero_point))
    bulge_flux = 10 ** (-0.4 * (params["bulge_mag"] - config.zero_point))
    bt = bulge_flux / (bulge_flux + disk_flux)
    k = int(label_index_from_bt(bt))
    return {"disk_flux": disk_flux, "bulge_flux": bulge_flux, "bt": bt, "label": CLASS_NAMES[k], "class_index": k}


# --------------------------------------------------------------------------- rendering

_CORE_MINOR_PX = 1.5  # minor semi-axis of the exactly integrated core (pixels)
_L_OK = 3.0  # a grid of step h is fine where the profile's scale length is >= _L_OK * h
_MAX_LEVEL = 5  # finest grid: 2**-5 px
_EDGE_LEVEL = 4  # grid step 2**-4 px around the edge of the core
_FLUX_EPS = 3e-3  # no refinement beyond the radius enclosing 1 - _FLUX_EPS of the flux
_CORE_NR, _CORE_NPHI = 64, 256


@functools.cache
def _sersic_b(n: float) -> float:
    return float(special.gammaincinv(2 * n, 0.5))


def sersic_enclosed_flux(radius, flux: float, re: float, n: float) -> np.ndarray:
    """Analytic flux of a Sersic profile inside the ellipse of semi-major axis ``radius``."""
    b = _sersic_b(n)
    return flux * special.gammainc(2 * n, b * (np.asarray(radius, dtype=float) / re) ** (1 / n))


@functools.lru_cache(maxsize=1)
def _core_lattice() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, _CORE_NR + 1) ** 2  # fine rings near the cusp
    rmid = np.sqrt((edges[:-1] ** 2 + edges[1:] ** 2) / 2)
    offsets = (np.arange(_CORE_NR) * (math.sqrt(5) - 1) / 2) % 1.0
    phi = 2 * np.pi * (np.arange(_CORE_NPHI)[None, :] + offsets[:, None]) / _CORE_NPHI
    return edges, (rmid[:, None] * np.cos(phi)).ravel(), (rmid[:, None] * np.sin(phi)).ravel()


def _add_sersic(canvas: np.ndarray, pad: int, flux: float, n: float, re: float, q: float, pa: float,
                xc: float, yc: float) -> None:
    """Add the pixel-integrated profile to ``canvas`` (stamp pixel (i, j) is canvas (i + pad, j + pad))."""
    if not flux > 0:
        return
    b = _sersic_b(n)
    i0 = flux * b ** (2 * n) / (2 * np.pi * n * q * re**2 * math.gamma(2 * n))
    c, s = math.cos(math.radians(pa)), math.sin(math.radians(pa))
    r_core = _CORE_MINOR_PX / q
    height, width = canvas.shape

    def intensity(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:  # canvas coordinates, broadcast
        dx, dy = xs - (xc + pad), ys - (yc + pad)
        u, v = dx * c + dy * s, (dy * c - dx * s) / q
        r2 = u * u + v * v
        out = i0 * np.exp(-b * (r2 / re**2) ** (0.5 / n))
        out[r2 < r_core**2] = 0.0
        return out

    comp = intensity(np.arange(width, dtype=float)[None, :], np.arange(height, dtype=float)[:, None])
    # Nested refinement: level k (step 2**-k) where the minor-axis scale length is below _L_OK * 2**-(k-1).
    r_flux = re * (special.gammaincinv(2 * n, 1 - _FLUX_EPS) / b) ** n
    for level in range(1, _MAX_LEVEL + 1):
        limit = _L_OK * 2.0 ** (1 - level)
        if n == 1:
            radius = r_flux if q * re / b < limit else 0.0
        else:
            radius = min(r_flux, (limit * b / (q * n * re ** (1 / n))) ** (n / (n - 1)))
        if level <= _EDGE_LEVEL:  # the sharp edge of the core is always sampled finely
            radius = max(radius, r_core + 0.5 / q)
        if radius <= r_core:
            break
        ex, ey = radius * math.hypot(c, q * s), radius * math.hypot(s, q * c)
        j0, j1 = max(0, math.floor(xc + pad - ex + 0.5)), min(width, math.ceil(xc + pad + ex + 0.5))
        i0_, i1 = max(0, math.floor(yc + pad - ey + 0.5)), min(height, math.ceil(yc + pad + ey + 0.5))
        if j0 >= j1 or i0_ >= i1:
            continue
        f = 2**level
        sub = (np.arange(f) + 0.5) / f - 0.5
        xs = (np.arange(j0, j1)[:, None] + sub[None, :]).ravel()
        ys = (np.arange(i0_, i1)[:, None] + sub[None, :]).ravel()
        vals = intensity(xs[None, :], ys[:, None])
        comp[i0_:i1, j0:j1] = vals.reshape(i1 - i0_, f, j1 - j0, f).mean(axis=(1, 3))
    canvas += comp
    # Exact core: annuli of known flux, each spread evenly in angle, dropped in the pixel they land on.
    edges, lat_u, lat_v = _core_lattice()
    ring_flux = np.diff(sersic_enclosed_flux(edges * r_core, flux, re, n)) / _CORE_NPHI
    u, v = lat_u * r_core, lat_v * r_core * q
    cols = np.floor(xc + pad + u * c - v * s + 0.5).astype(np.intp)
    rows = np.floor(yc + pad + u * s + v * c + 0.5).astype(np.intp)
    ok = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    weights = np.repeat(ring_flux, _CORE_NPHI)
    canvas += np.bincount(rows[ok] * width + cols[ok], weights[ok], minlength=canvas.size).reshape(canvas.shape)


@functools.lru_cache(maxsize=16)
def _psf_transfer(fwhm_px: float, beta: float, half: int, fft_shape: tuple[int, int]) -> np.ndarray:
    """rFFT of a pixel-integrated Moffat kernel of size (2 half + 1)^2, normalised to 1, centred at (0, 0)."""
    alpha = fwhm_px / (2 * math.sqrt(2 ** (1 / beta) - 1))
    f = 9
    sub = (np.arange((2 * half + 1) * f) + 0.5) / f - (half + 0.5)
    r2 = sub[:, None] ** 2 + sub[None, :] ** 2
    kernel = (1 + r2 / alpha**2) ** (-beta)
    kernel = kernel.reshape(2 * half + 1, f, 2 * half + 1, f).sum(axis=(1, 3))
    full = np.zeros(fft_shape)
    full[: 2 * half + 1, : 2 * half + 1] = kernel / kernel.sum()
    full = np.roll(full, (-half, -half), axis=(0, 1))
    return scipy.fft.rfft2(full)


def render_galaxy(params: dict[str, float], config: SurveyConfig | str = "SDSS",
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Render one galaxy.

    Parameters
    ----------
    params : dict
        The :data:`PARAM_NAMES` keys (as from :func:`draw_parameters`).
    config : SurveyConfig or str
        Survey settings (``add_noise=False`` for noise-free images).
    rng : numpy.random.Generator, optional
        Source of the noise (a fresh unseeded one if ``None``).

    Returns
    -------
    numpy.ndarray, float32, shape ``config.shape``
        Counts per pixel.
    """
    config = get_config(config)
    height, width = config.shape
    fwhm_px = config.psf_fwhm / config.pixel_scale
    half = int(math.ceil(4 * fwhm_px)) if fwhm_px > 0 else 0
    fft_shape = (scipy.fft.next_fast_len(height + 2 * half, real=True),
                 scipy.fft.next_fast_len(width + 2 * half, real=True))
    canvas = np.zeros(fft_shape)
    for comp, n in (("disk", 1.0), ("bulge", 4.0)):
        flux = 10 ** (-0.4 * (params[f"{comp}_mag"] - config.zero_point))
        _add_sersic(canvas, half, flux, n, params[f"{comp}_re"], params[f"{comp}_q"], params[f"{comp}_pa"],
                    params[f"{comp}_x"], params[f"{comp}_y"])
    if half:
        otf = _psf_transfer(fwhm_px, float(config.psf_beta), half, fft_shape)
        canvas = scipy.fft.irfft2(scipy.fft.rfft2(canvas, workers=1) * otf, s=fft_shape, workers=1)
    image = canvas[half : half + height, half : half + width]
    if config.add_noise:
        rng = np.random.default_rng() if rng is None else rng
        sky = 10 ** (-0.4 * (config.sky_sb - config.zero_point)) * config.pixel_scale**2
        electrons = rng.poisson(np.clip(image + sky, 0.0, None) * config.gain)
        image = electrons / config.gain - (sky if config.subtract_sky else 0.0)
    return image.astype(np.float32)


def _render_range(config: SurveyConfig, seed: int, start: int, stop: int,
                  fits_dir: str | None = None) -> tuple[int, np.ndarray, list[dict[str, Any]]]:
    """Images ``start .. stop - 1`` of the set (worker task); optionally also their FITS files."""
    images = np.empty((stop - start, *config.shape, 1), dtype=np.float32)
    rows = []
    for k, index in enumerate(range(start, stop)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        params = draw_parameters(config, rng)
        images[k, :, :, 0] = render_galaxy(params, config, rng)
        row = {"id": index, **params, **_derived(params, config)}
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
        unit = _UNITS.get(name.rsplit("_", 1)[-1])
        if unit and name != "bt":
            table[name].unit = unit
    table.meta.update(survey=config.name, seed=seed, config=config.as_dict(),
                      classes="class_index: 0 disk (bt < 0.45), 1 indeterminate, 2 bulge (bt > 0.55)")
    return table


def _check_common(n: int, workers: int | None) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1. Received: n={n!r}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1 (or None for all cores). Received: workers={workers!r}")
    return int(workers)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Received: seed={seed!r}")
    return int(seed)


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
    output_dir : path
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

    from gamornet.utils import OUTPUT_ERROR_FLAG, make_output_dir, output_error

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

    from gamornet.utils import atomic_path

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


def _int_arg(name: str, minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {minimum}. Received: {name}={text!r}")
        return value

    return parse


def register_cli(subparsers) -> None:
    """Add ``gamornet simulate``."""
    p = subparsers.add_parser("simulate", help="simulate bulge + disk training galaxies",
                              description="Simulate Sersic bulge + exponential disk galaxies (Ghosh et al. 2020).")
    p.add_argument("--survey", default="SDSS", help="SDSS or CANDELS (default SDSS)")
    p.add_argument("-n", type=_int_arg("-n", 1), required=True, help="number of galaxies")
    p.add_argument("--seed", type=_int_arg("--seed", 0), default=0, help="random seed (default 0)")
    p.add_argument("--output", help="output directory (images.npy, catalog.ecsv, fits/)")
    p.add_argument("--workers", type=_int_arg("--workers", 1), default=None, help="processes (default: all cores)")
    p.add_argument("--chunk-size", type=_int_arg("--chunk-size", 1), default=128, help="images per worker task")
    p.add_argument("--fits", action="store_true", help="also write one FITS file per galaxy")
    p.add_argument("--balanced", action="store_true", help="equal class fractions instead of the paper's sampling")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--montage", metavar="PNG", help="write a grid of the first (up to 16) galaxies to this PNG")
    p.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    if args.output is None and args.montage is None:
        raise ValueError("give --output DIR and/or --montage PNG. Received: neither")
    if not isinstance(args.survey, str) or args.survey.upper() not in SURVEYS:
        raise ValueError(f"--survey must be one of {sorted(SURVEYS)}. Received: --survey={args.survey!r}")
    extra = {"balanced": True} if args.balanced else {}
    if args.output is not None:
        simulate_to_disk(args.output, args.n, args.survey, args.seed, workers=args.workers, fits=args.fits,
                         chunk_size=args.chunk_size, progress=not args.quiet, overwrite=args.overwrite, **extra)
        print(f"Wrote {args.n} {args.survey.upper()} galaxies to {args.output}")
    if args.montage is not None:
        count = min(16, args.n)
        images, catalog = simulate_galaxies(count, args.survey, args.seed, workers=1, progress=False, **extra)
        title = f"{args.survey.upper()} simulated galaxies (seed {args.seed})"
        save_montage(images, catalog, args.montage, title=title)
        print(f"Wrote {args.montage}")
    return 0
