"""Predict from a catalogue and survey images in one step: every row cut on the fly, no cutout files.

:func:`open_catalog` reads the catalogue and the tiles' headers and plans
the cuts (:class:`gamornet.cutouts.CutoutPlan`); its :class:`CatalogInput`
lists the rows as :class:`~gamornet.predict.inputs.ImageRef` of one source
of kind ``"cutout"`` (id from the id column, index = row), which
:class:`~gamornet.predict.images.ImageReader` reads by cutting them, so
chunks, ``resume``, shards and clusters work as for image files.  Rows whose
cutout is not usable (``cutout_flag`` other than ``ok``) are not predicted;
:meth:`CatalogInput.table` gives every row of the shard, in catalogue order,
with the columns :func:`gamornet.cutouts.make_cutouts` writes and the
probabilities and labels (masked where not predicted).

The grid (pixel scale and size) is the model card's (:func:`catalog_grid`).
Before predicting, the headers of the survey images the rows are cut from
(pixel scale, ``FILTER``, ``BUNIT``) are compared with the card, as those of
image files are (:mod:`gamornet.predict.headers`): a native pixel scale other
than the model's is reported with the cutouts resampled from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
from astropy.table import MaskedColumn, Table

from gamornet.cutouts import ROW_DTYPE, CutoutPlan, ModelGrid, cutout_table, model_grid
from gamornet.cutouts.catalog import load_catalog
from gamornet.predict.inputs import ImageRef, InputSource
from gamornet.published.cards import read_card

__all__ = ["CatalogInput", "open_catalog", "catalog_grid"]

_SURVEYS = ("SDSS", "CANDELS")


def catalog_grid(model, flavor: str, input_shape=None, survey: str | None = None, pixel_scale: float | None = None,
                 size: int | None = None) -> ModelGrid:
    """The grid of the cutouts: ``survey`` (or the ``input_shape`` alias ``"SDSS"`` / ``"CANDELS"``), else the
    model's card, ``pixel_scale`` and ``size`` replacing either's.

    Raises
    ------
    ValueError
        If none of them gives both a pixel scale and a size.
    """
    if survey is None and isinstance(input_shape, str) and input_shape.upper() in _SURVEYS:
        survey = input_shape.upper()
    if survey is not None:
        return model_grid(survey, pixel_scale, size)
    card = read_card(model, flavor) if isinstance(model, (str, os.PathLike)) else None
    if card is not None and card.pixel_scale_arcsec is not None and card.shape is not None:
        pixel_scale = card.pixel_scale_arcsec if pixel_scale is None else pixel_scale
        size = card.shape[0] if size is None else size
    if pixel_scale is None or size is None:
        raise ValueError("The grid of the cutouts is unknown: the model has no card giving its pixel scale and size. "
                         "Give survey='SDSS' or 'CANDELS' (--survey), input_shape='SDSS' or 'CANDELS', or both "
                         f"pixel_scale and size (--pixel-scale, --size). Received: model={model!r}, survey=None, "
                         f"input_shape={input_shape!r}, pixel_scale={pixel_scale!r}, size={size!r}")
    return model_grid(None, pixel_scale, size)


@dataclass(eq=False)
class CatalogInput:
    """A catalogue to predict, its cut plan and the source its rows are read from.

    Attributes
    ----------
    table : astropy.table.Table
        The catalogue.
    path : str or None
        Its file (absolute), None for a Table.
    plan : gamornet.cutouts.CutoutPlan
        Positions, tiles and grid.
    source : gamornet.predict.inputs.InputSource
        Kind ``"cutout"``, one image per row.
    """

    table: Table
    path: str | None
    plan: CutoutPlan
    source: InputSource

    def refs(self) -> list[ImageRef]:
        """One ref per row, in catalogue order."""
        return [ImageRef(image_id, self.source, row) for row, image_id in enumerate(self.plan.ids.tolist())]

    def digest(self) -> str:
        """SHA-256 of the catalogue (file size and time, positions, ids), the tiles, the grid and the columns."""
        file = [] if self.path is None else [self.path, os.path.getsize(self.path), os.stat(self.path).st_mtime_ns]
        digest = hashlib.sha256(json.dumps(file).encode())
        digest.update(self.plan.digest({"columns": self.plan.columns, "hdu": self.plan.hdu}).encode())
        return digest.hexdigest()

    def recorded(self, limit: int) -> dict:
        """``source_catalog`` (None for a Table: left out) and ``source_images`` (absolute paths or URLs, as given)
        for the table's metadata; {} for more than ``limit`` survey images."""
        if len(self.plan.paths) > limit:
            return {}
        source = {} if self.path is None else {"source_catalog": self.path}
        return {**source, "source_images": list(self.plan.paths)}

    def table_of(self, first: int, stop: int, chunks: list[dict], predicted: Table) -> Table:
        """Rows ``first:stop``: id, the cutout columns, the catalogue's, then ``predicted``'s (masked where absent)."""
        rows = np.zeros(stop - first, dtype=ROW_DTYPE)
        where = {str(image_id): i for i, image_id in enumerate(self.plan.ids[first:stop].tolist())}
        for chunk in chunks:
            for image_id, values in zip(chunk.get("cut_ids", ()), chunk.get("cut_rows", ())):
                rows[where[str(image_id)]] = tuple(values)
        out = cutout_table(self.table, self.plan, rows, select=slice(first, stop))
        if "id" not in out.colnames:
            out.add_column(self.plan.ids[first:stop], name="id", index=0)
        found = np.array([where[str(image_id)] for image_id in predicted["id"].tolist()], dtype=np.intp)
        mask = np.ones(stop - first, dtype=bool)
        mask[found] = False
        for name in predicted.colnames[1:]:
            column = predicted[name]
            values = np.zeros(stop - first, dtype=column.dtype)
            values[found] = np.asarray(column)
            out[name] = MaskedColumn(values, mask=mask.copy())
        out.meta.update(predicted.meta)
        out.meta.update(pixel_scale=self.plan.grid.pixel_scale, size=self.plan.grid.size,
                        columns=self.plan.columns, tiles=list(self.plan.paths))
        return out


def open_catalog(catalog, images, grid: ModelGrid, ra_column=None, dec_column=None, id_column=None,
                 hdu=None) -> CatalogInput:
    """Read ``catalog``, open the tiles ``images`` (headers only) and plan every row's cut on ``grid``.

    Raises
    ------
    ValueError
        For missing columns or images, unreadable positions or tiles, an empty catalogue, or repeated ids.
    """
    if images is None:
        raise ValueError("`catalog` needs `images`: the survey images (FITS) to cut. Received: images=None")
    table = load_catalog(catalog)
    if len(table) == 0:
        raise ValueError(f"`catalog` has no rows. Received: catalog={catalog!r}")
    columns = {"ra_column": ra_column, "dec_column": dec_column, "id_column": id_column}
    plan = CutoutPlan(table, images, grid, columns, hdu)
    ids = plan.ids.astype(str)
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise ValueError(f"`id_column`: ids must be unique to name the rows of the table; "
                         f"{values[counts > 1][0]!r} repeats. Received: id_column={plan.columns['id']!r}")
    path = None if isinstance(catalog, Table) else os.path.abspath(os.fspath(catalog))
    name = "catalog" if path is None else os.path.basename(path)
    source = InputSource("cutout", path, name, len(table), image_shape=(grid.size, grid.size), cutting=plan)
    return CatalogInput(table, path, plan, source)
