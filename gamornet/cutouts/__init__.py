"""Cutouts for the models from survey images and a catalogue: :func:`make_cutouts` (``gamornet cutout``).

- :mod:`gamornet.cutouts.catalog`: the RA, Dec and id columns of a catalogue.
- :mod:`gamornet.cutouts.tiles`: survey images (memory-mapped, or URLs read in parts) and which one holds a source.
- :mod:`gamornet.cutouts.grid`: the model grid (survey pixel scale and size) and its WCS.
- :mod:`gamornet.cutouts.resample`: one cutout, copied or resampled with flux conserved.
- :mod:`gamornet.cutouts.plan`: what a run cuts (:class:`CutoutPlan`, picklable), one row at a time, and the flags.
- :mod:`gamornet.cutouts.run`: the run, atomic, resumable, parallel over tiles.
"""

from gamornet.cutouts.grid import ModelGrid, model_grid
from gamornet.cutouts.plan import ROW_DTYPE, CutoutPlan, cutout_flags
from gamornet.cutouts.run import ADDED_COLUMNS, DEFAULT_MAX_NAN_FRACTION, FITS_NAME, FLAGS, cutout_table, make_cutouts

__all__ = ["make_cutouts", "ModelGrid", "model_grid", "FLAGS", "ADDED_COLUMNS", "FITS_NAME",
           "DEFAULT_MAX_NAN_FRACTION", "CutoutPlan", "cutout_flags", "cutout_table", "ROW_DTYPE"]
