"""The images behind a gallery's rows: found by id as prediction lists them, read, stretched, encoded as PNG.

Images have the ids prediction gives them: :class:`ImageIndex` finds a
table's ids among the sources of :func:`gamornet.predict.inputs.list_sources`
(the image of an id of a ``.npy`` stack or an array is computed from the id,
:func:`gamornet.predict.inputs.image_ref`, so a stack of millions of images
is never listed), or, for a table predicted from a catalogue, among
:meth:`gamornet.predict.catalog.CatalogInput.refs` (one per catalogue row).
Only the images shown are read, by
:class:`gamornet.predict.images.ImageReader` (stacks are memory-mapped, rows
of a catalogue are cut from the survey images when read).

Every thumbnail of a page shares one display interval, computed from the
pixels of all the images shown, and one stretch (:func:`display_limits`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gamornet.core.progress import progress_bar
from gamornet.predict.catalog import catalog_grid, open_catalog
from gamornet.predict.fits import scan_fits
from gamornet.predict.images import ImageReader
from gamornet.predict.inputs import BadImageError, ImageRef, id_prefix, image_ref, list_sources

__all__ = ["INTERVALS", "DEFAULT_PERCENTILE", "Stretch", "ImageIndex", "image_index", "read_shown",
           "display_limits", "to_pixels", "png_base64"]

#: Display intervals: a percentile interval of the pixels shown, or IRAF's zscale.
INTERVALS: tuple[str, ...] = ("percentile", "zscale")
#: Percentage of the pixels shown that the percentile interval keeps.
DEFAULT_PERCENTILE = 99.5


@dataclass(frozen=True)
class Stretch:
    """The display of every thumbnail of a page: asinh stretch of the pixels clipped to ``[vmin, vmax]``."""

    interval: str
    vmin: float
    vmax: float

    def describe(self) -> str:
        """One line for the page."""
        how = f"{DEFAULT_PERCENTILE:g}% percentile interval" if self.interval == "percentile" else "zscale interval"
        return (f"asinh stretch (astropy.visualization.AsinhStretch) of [{self.vmin:.6g}, {self.vmax:.6g}] "
                f"({how} of the pixels of all the images shown), the same for every thumbnail")


class ImageIndex:
    """The images of a gallery's table, by the ids prediction gives them, without one object per image of a stack.

    Parameters
    ----------
    sources : sequence of InputSource
        From :func:`gamornet.predict.inputs.list_sources`.
    refs : sequence of ImageRef
        Images listed one by one (the rows of a catalogue).
    """

    def __init__(self, sources=(), refs=()):
        singles = [image_ref(s, 0) for s in sources if id_prefix(s) is None] + list(refs)
        self._stacks = [(id_prefix(s), s) for s in sources if id_prefix(s) is not None]
        self._names = np.array([str(ref.id) for ref in singles]) if singles else np.zeros(0, "<U1")
        self._order = np.argsort(self._names, kind="stable")
        self._sorted = self._names[self._order]
        self._singles = singles
        self.n_images = len(singles) + sum(s.n_images for _, s in self._stacks)
        self.examples = [str(image_ref(s, i).id) for _, s in self._stacks for i in range(min(3, s.n_images))][:3] \
            or self._names[:3].tolist()

    def _single(self, ids: np.ndarray) -> np.ndarray:
        """Position in ``singles`` of each id, -1 for none."""
        if not len(self._sorted):
            return np.full(len(ids), -1)
        where = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[where] == ids, self._order[where], -1)

    def _stack(self, ids: np.ndarray, prefix: str, n_images: int) -> np.ndarray:
        """Index in the stack of ``prefix`` of each id (``prefix`` then the index, as text), -1 for none."""
        index = np.full(len(ids), -1, dtype=np.int64)
        starts = np.flatnonzero(np.strings.startswith(ids, prefix))
        digits = np.strings.slice(ids[starts], len(prefix), None)
        ok = np.strings.isdigit(digits) & (np.strings.str_len(digits) <= 18)
        starts, digits = starts[ok], digits[ok]
        values = digits.astype(np.int64)
        ok = (values < n_images) & (values.astype(str) == digits)  # "07" is not image 7
        index[starts[ok]] = values[ok]
        return index

    def find(self, ids) -> np.ndarray:
        """Whether each of ``ids`` (compared as text) names an image."""
        ids = np.asarray(ids).astype(str, copy=False)
        found = self._single(ids) >= 0
        for prefix, source in self._stacks:
            found |= self._stack(ids, prefix, source.n_images) >= 0
        return found

    def ref(self, image_id) -> ImageRef:
        """The image of ``image_id`` (one that :meth:`find` found)."""
        ids = np.array([str(image_id)])
        single = int(self._single(ids)[0])
        if single >= 0:
            return self._singles[single]
        for prefix, source in self._stacks:
            index = int(self._stack(ids, prefix, source.n_images)[0])
            if index >= 0:
                return image_ref(source, index)
        raise KeyError(image_id)

    def absent_error(self, absent: int, examples: Sequence[str], name: str) -> ValueError:
        """The error for ``absent`` ids of the table (``examples`` of them) that no image has."""
        return ValueError(f"`{name}`: {absent} id(s) of the table are not among the images (matched by the ids "
                          f"prediction gives them, e.g. {self.examples}): e.g. {list(examples)[:5]}. "
                          f"Received: {name} with {self.n_images} image(s)")


def image_index(images, catalog_images, meta: dict) -> ImageIndex:
    """Every image that prediction listed: from ``images`` (files, folders, patterns, an array) or a catalogue.

    ``catalog_images`` is ``(catalog, survey_images)``: the rows are cut on the
    grid recorded in the table's metadata (``pixel_scale``, ``size``), else the
    model's card, with the catalogue columns recorded there.
    """
    if catalog_images is None:
        return ImageIndex(sources=list_sources(images, skip_bad=True)[0])
    if images is not None:
        raise ValueError(f"give `images` or `catalog_images`, not both. Received: images={images!r}, "
                         f"catalog_images={catalog_images!r}")
    if not isinstance(catalog_images, (tuple, list)) or len(catalog_images) != 2:
        raise ValueError("`catalog_images` must be a pair (catalog, survey images). Received: "
                         f"catalog_images={catalog_images!r}")
    catalog, tiles = catalog_images
    grid = catalog_grid(meta.get("model"), str(meta.get("flavor", "keras")), None, None, meta.get("pixel_scale"),
                        meta.get("size"))
    columns = meta.get("columns") if isinstance(meta.get("columns"), dict) else {}
    source = open_catalog(catalog, tiles, grid, columns.get("ra"), columns.get("dec"), columns.get("id"))
    return ImageIndex(refs=source.refs())


def _raw_shape(ref: ImageRef) -> tuple:
    source = ref.source
    if source.kind == "fits" and source.image_shape is None:
        scan_fits(source, None)
    return tuple(source.image_shape)


def _display_shape(refs: Sequence[ImageRef], meta: dict) -> tuple[int, int, int]:
    """``(H, W, C)`` the images are read at: the model's (table metadata ``shape``), else the first image's."""
    recorded = str(meta.get("shape", ""))
    parts = recorded.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    for ref in refs:
        try:
            shape = _raw_shape(ref)
        except BadImageError:
            continue
        if len(shape) == 2:
            return (*shape, 1)
        if len(shape) == 3:
            return shape if shape[-1] <= 4 or shape[0] > 4 else (shape[1], shape[2], shape[0])
    return (1, 1, 1)


def read_shown(refs: Sequence[ImageRef], meta: dict, progress: bool) -> tuple[list, list]:
    """The images of ``refs`` as float32 ``(H, W)`` (channels averaged), or None and the reason for a bad one.

    Images of another size than the model's are centre-cropped / padded
    with NaN, as ``crop_pad`` would; NaN / inf pixels are kept (shown as the
    lowest level).
    """
    shape = _display_shape(refs, meta)
    reader = ImageReader(shape, crop_pad=np.nan, nan_fill=np.nan, skip_bad=True)
    images: list = [None] * len(refs)
    reasons: list = [""] * len(refs)
    bar = progress_bar(len(refs), progress, label="Reading")
    for i, ref in enumerate(refs):
        try:
            if ref.source.kind == "fits":
                _raw_shape(ref)
            batch = reader.read([ref])
        except BadImageError as exc:
            reasons[i] = exc.reason
        else:
            if batch.bad:
                reasons[i] = batch.bad[0][1]
            else:
                images[i] = batch.images[0].mean(axis=-1)
        bar.update(i + 1)
    bar.finish()
    return images, reasons


def display_limits(images: Sequence[np.ndarray | None], interval: str) -> Stretch:
    """One display interval for all ``images`` (their finite pixels together)."""
    from astropy.visualization import PercentileInterval, ZScaleInterval

    pixels = [im[np.isfinite(im)] for im in images if im is not None]
    values = np.concatenate(pixels) if pixels else np.zeros(0, np.float32)
    if values.size == 0:
        return Stretch(interval, 0.0, 1.0)
    rule = PercentileInterval(DEFAULT_PERCENTILE) if interval == "percentile" else ZScaleInterval()
    vmin, vmax = (float(v) for v in rule.get_limits(values))
    if not vmax > vmin:
        vmin, vmax = float(values.min()), float(values.max())
        if not vmax > vmin:
            vmax = vmin + 1.0
    return Stretch(interval, vmin, vmax)


def to_pixels(image: np.ndarray, stretch: Stretch) -> np.ndarray:
    """8-bit grey levels of ``image`` (first row at the bottom, as astronomical images are shown)."""
    from astropy.visualization import AsinhStretch, ImageNormalize

    norm = ImageNormalize(vmin=stretch.vmin, vmax=stretch.vmax, stretch=AsinhStretch(), clip=True)
    scaled = np.ma.filled(norm(np.nan_to_num(image, nan=stretch.vmin, posinf=stretch.vmax, neginf=stretch.vmin)),
                          0.0)
    return np.flipud(np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8))


def png_base64(pixels: np.ndarray) -> str:
    """``pixels`` (8-bit grey) as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
