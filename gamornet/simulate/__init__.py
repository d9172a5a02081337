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

from gamornet.simulate.config import (
    BT_BOUNDS,
    PARAM_NAMES,
    SURVEYS,
    SurveyConfig,
    draw_parameters,
    get_config,
    label_index_from_bt,
)
from gamornet.simulate.render import render_galaxy, sersic_enclosed_flux
from gamornet.simulate.sets import (
    FITS_NAME,
    galaxy_id,
    iter_batches,
    save_montage,
    simulate_galaxies,
    simulate_to_disk,
)

__all__ = [
    "PARAM_NAMES",
    "BT_BOUNDS",
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
]
