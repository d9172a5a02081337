"""Survey settings of the simulated galaxies and the drawing of their parameters (Ghosh et al. 2020 recipe)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gamornet.core.labels import BT_BOUNDS
from gamornet.core.labels import class_index_from_bt as label_index_from_bt
from gamornet.core.network import CLASS_NAMES

__all__ = ["SurveyConfig", "SURVEYS", "get_config", "draw_parameters", "label_index_from_bt", "PARAM_NAMES",
           "PARAM_UNITS", "BT_BOUNDS", "derived_quantities"]

#: Catalog columns with the generating parameters, in order.
PARAM_NAMES: tuple[str, ...] = (
    "disk_mag", "bulge_mag", "disk_re", "bulge_re", "disk_q", "bulge_q",
    "disk_pa", "bulge_pa", "disk_x", "disk_y", "bulge_x", "bulge_y",
)
#: Unit of a catalog column by the last word of its name (``disk_re`` is in ``pix``); ``q`` and ``bt`` have none.
PARAM_UNITS: dict[str, str] = {"mag": "mag", "re": "pix", "pa": "deg", "x": "pix", "y": "pix", "flux": "ct"}
_RANGE_FIELDS = (
    "disk_re", "bulge_re", "disk_q", "bulge_q", "disk_mag", "bulge_delta",
    "disk_pa", "bulge_pa_offset", "centre", "bt_range",
)


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


def derived_quantities(params: dict[str, float], config: SurveyConfig) -> dict[str, Any]:
    disk_flux = 10 ** (-0.4 * (params["disk_mag"] - config.zero_point))
    bulge_flux = 10 ** (-0.4 * (params["bulge_mag"] - config.zero_point))
    bt = bulge_flux / (bulge_flux + disk_flux)
    k = int(label_index_from_bt(bt))
    return {"disk_flux": disk_flux, "bulge_flux": bulge_flux, "bt": bt, "label": CLASS_NAMES[k], "class_index": k}


# --------------------------------------------------------------------------- rendering

