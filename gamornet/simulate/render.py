"""Rendering one galaxy: Sersic bulge + exponential disk, PSF convolution, sky and Poisson noise."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
from scipy import special

from gamornet.simulate.config import SurveyConfig, get_config

__all__ = ["render_galaxy", "sersic_enclosed_flux"]

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


