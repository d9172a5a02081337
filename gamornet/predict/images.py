"""Checking and reading the images of batch prediction, ahead of the model.

1. :func:`scan_images` validates the images listed by
   :func:`gamornet.predict.inputs.list_images` before anything is predicted:
   readable file, image HDU, shape (from the FITS header or the ``.npy``
   header; no pixel data is read), FITS data not cut short, optionally also
   the pixels (``check_data=True``: every image is read once and NaN / inf
   pixels are found up front).  Without ``check_data`` NaN / inf pixels are
   found when the image is read for prediction.
2. :class:`ImageReader` reads batches of validated images as float32
   ``(n, H, W, C)`` in a background thread pool with a bounded prefetch, so
   file reading overlaps with the model.

Shapes and pixels
-----------------
An image of the model's ``(H, W, C)`` passes untouched (only cast to
float32).  Any other height or width is an error naming the file and both
shapes, unless ``crop_pad=VALUE``: each axis is then centre-cropped or padded
with ``VALUE`` (an odd difference takes the extra pixel from / adds it at the
end).  Images are never resized.  NaN / inf pixels are an error naming the
file unless ``nan_fill=VALUE`` replaces them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gamornet.core.stack import read_rows
from gamornet.cutouts import DEFAULT_MAX_NAN_FRACTION, cutout_flags
from gamornet.predict.fits import read_fits, scan_fits
from gamornet.predict.inputs import PIXEL_KINDS, BadImageError, Batch, ImageRef, InputSource, bad_images_error

__all__ = ["scan_images", "crop_or_pad", "ImageReader"]


def _image_layout(shape: tuple, channels: int) -> str | None:
    """How a raw image shape maps onto ``(H, W, C)``: ``hw``, ``hwc``, ``chw`` or None (cannot)."""
    if len(shape) == 2:
        return "hw" if channels == 1 else None
    if len(shape) == 3:
        if shape[-1] == channels:
            return "hwc"
        if shape[0] == channels:
            return "chw"
    return None


def _check_layout(image_id, shape: tuple, input_shape: tuple, crop_pad) -> None:
    layout = _image_layout(shape, input_shape[2])
    if layout is None:
        raise BadImageError(image_id, f"image shape {shape} cannot be read as the model's input shape {input_shape} "
                                      "(expected (H, W), (H, W, C) or (C, H, W))")
    spatial = shape[1:] if layout == "chw" else shape[:2]
    if tuple(spatial) != tuple(input_shape[:2]) and crop_pad is None:
        raise BadImageError(image_id, f"image shape {shape} does not match the model's input shape {input_shape}; "
                                      "pass crop_pad=VALUE (--crop-pad) to centre-crop / pad it")


def scan_images(refs: Sequence[ImageRef], input_shape: tuple, *, hdu=None, crop_pad=None, nan_fill=None,
                skip_bad: bool = False, check_data: bool = False, workers: int = 4) -> tuple[list[ImageRef], list]:
    """Validate images before prediction; return the usable ones and the bad ones.

    Parameters
    ----------
    refs : sequence of ImageRef
        From :func:`list_images` (possibly one shard of it).
    input_shape : tuple of int
        The model's ``(H, W, C)``.
    hdu : int or str, optional
        FITS HDU number or EXTNAME (default: primary, or the first with data).
    crop_pad : float, optional
        Accept other heights and widths (they will be centre-cropped / padded).
    nan_fill : float, optional
        With ``check_data``, NaN / inf pixels are accepted (they will be replaced).
    skip_bad : bool
        Return the bad images instead of raising.  A file whose shape is
        wrong is listed once, under its file name.
    check_data : bool
        Also read every image and check its pixels (NaN / inf, dtype).
        Otherwise only headers are read and pixels are checked when read for
        prediction.
    workers : int
        Threads reading FITS headers in parallel.

    Returns
    -------
    good : list of ImageRef
    bad : list of (id, reason)

    Raises
    ------
    BadImageError
        Naming every bad image (up to 10), unless ``skip_bad``.
    """
    if refs and refs[0].source.kind == "array":  # a wrong array is an argument error, never skipped
        _check_layout("array", refs[0].source.image_shape, input_shape, crop_pad)
    sources = list({id(ref.source): ref.source for ref in refs}.values())

    def check_source(source: InputSource) -> str | None:
        try:
            if source.kind == "fits" and source.image_shape is None:
                scan_fits(source, hdu)
            _check_layout(source.name, source.image_shape, input_shape, crop_pad)
        except BadImageError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = dict(zip(map(id, sources), pool.map(check_source, sources)))
        bad = [(s.name, reasons[id(s)]) for s in sources if reasons[id(s)] is not None]
        good = [ref for ref in refs if reasons[id(ref.source)] is None]
        if check_data:
            reader = ImageReader(input_shape, hdu=hdu, crop_pad=crop_pad, nan_fill=nan_fill, skip_bad=True)
            pieces = [good[i : i + 256] for i in range(0, len(good), 256)]
            data_bad = [item for found in pool.map(lambda piece: reader.read(piece).bad, pieces) for item in found]
            bad_ids = {image_id for image_id, _ in data_bad}
            bad.extend(data_bad)
            good = [ref for ref in good if ref.id not in bad_ids]
    if bad and not skip_bad:
        raise bad_images_error(bad)
    return good, bad


# ---------------------------------------------------------------- reading


def crop_or_pad(images: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """Centre-crop or pad ``(n, h, w, c)`` images to ``size`` = (H, W), padding with ``value``."""
    for axis, target in ((1, size[0]), (2, size[1])):
        current = images.shape[axis]
        if current > target:
            start = (current - target) // 2
            images = np.take(images, np.arange(start, start + target), axis=axis)
        elif current < target:
            before = (target - current) // 2
            widths = [(0, 0)] * images.ndim
            widths[axis] = (before, target - current - before)
            images = np.pad(images, widths, mode="constant", constant_values=value)
    return images


class ImageReader:
    """Read validated images as float32 ``(n, H, W, C)`` batches.

    Parameters
    ----------
    input_shape : tuple of int
        The model's ``(H, W, C)``.
    hdu : int or str, optional
        FITS HDU (see :func:`scan_images`).
    crop_pad : float, optional
        Centre-crop / pad other sizes, padding with this value.
    nan_fill : float, optional
        Replace NaN / inf pixels with this value (else they are bad).
    skip_bad : bool
        Drop bad images from a batch (listing them in ``Batch.bad``) instead
        of raising :class:`BadImageError`.
    """

    def __init__(self, input_shape: tuple, *, hdu=None, crop_pad=None, nan_fill=None, skip_bad: bool = False):
        self.input_shape = tuple(input_shape)
        self.hdu, self.crop_pad, self.nan_fill, self.skip_bad = hdu, crop_pad, nan_fill, skip_bad

    def _conform(self, raw: np.ndarray, stacked: bool, image_id) -> np.ndarray:
        """Raw image(s) to float32 ``(n, H, W, C)``; untouched when already of the model's shape."""
        images = raw if stacked else raw[np.newaxis]
        if images.dtype.kind not in PIXEL_KINDS:
            raise BadImageError(image_id, f"pixels must be real numbers, not {images.dtype}")
        layout = _image_layout(tuple(images.shape[1:]), self.input_shape[2])
        if layout is None:
            raise BadImageError(image_id, f"image shape {tuple(images.shape[1:])} cannot be read as the model's "
                                          f"input shape {self.input_shape}")
        if layout == "hw":
            images = images[..., np.newaxis]
        elif layout == "chw":
            images = np.moveaxis(images, 1, -1)
        if images.shape[1:3] != self.input_shape[:2]:
            if self.crop_pad is None:
                raise BadImageError(image_id, f"image shape {tuple(raw.shape[int(stacked):])} does not match the "
                                              f"model's input shape {self.input_shape}")
            images = crop_or_pad(images, self.input_shape[:2], self.crop_pad)
        return np.ascontiguousarray(images, dtype=np.float32)

    def _load_run(self, run: list[ImageRef]) -> np.ndarray:
        """Images of consecutive refs of one source (one slice for stacks and arrays)."""
        source = run[0].source
        if source.kind == "fits":
            return self._conform(read_fits(source, run[0].id, self.hdu), False, run[0].id)
        if run[0].index is None:  # a single 2-D .npy image
            return self._conform(np.asarray(source.data), False, run[0].id)
        start = run[0].index
        label = source.name if len(run) > 1 else run[0].id
        try:
            raw = read_rows(source.data, start, start + len(run))
        except (OSError, ValueError) as exc:
            raise BadImageError(label, f"unreadable ({exc})") from None
        return self._conform(raw, True, label)

    def _runs(self, refs: Sequence[ImageRef]) -> Iterator[list[ImageRef]]:
        run: list[ImageRef] = []
        for ref in refs:
            if run and (ref.source is not run[-1].source or ref.index is None or ref.index != run[-1].index + 1):
                yield run
                run = []
            run.append(ref)
        if run:
            yield run

    def read(self, refs: Sequence[ImageRef]) -> Batch:
        """Read ``refs`` into one batch; bad images raise or (``skip_bad``) are dropped and listed."""
        if refs and refs[0].source.kind == "cutout":
            return self._read_cutouts(refs)
        out = np.empty((len(refs), *self.input_shape), dtype=np.float32)
        keep = np.ones(len(refs), dtype=bool)
        bad: list[tuple] = []
        position = 0
        for run in self._runs(refs):
            span = slice(position, position + len(run))
            position += len(run)
            try:
                out[span] = self._load_run(run)
            except BadImageError as exc:
                if not self.skip_bad:
                    raise
                keep[span] = False
                bad.extend((ref.id, exc.reason) for ref in run)
        return self._finish(refs, out, keep, bad)

    def _read_cutouts(self, refs: Sequence[ImageRef]) -> Batch:
        """Cut catalogue rows (one source's); rows whose cutout is not usable (``cutout_flag`` not ``ok``) are
        dropped and listed, whatever ``skip_bad``."""
        plan = refs[0].source.cutting
        out = np.empty((len(refs), *self.input_shape), dtype=np.float32)
        keep = np.ones(len(refs), dtype=bool)
        bad: list[tuple] = []
        cuts: list[tuple] = []
        for i, ref in enumerate(refs):
            image, _, result = plan.cut(ref.index)
            cuts.append((ref.id, result))
            flag = cutout_flags([plan.tile_index[ref.index]], [result[0]], [result[1]], DEFAULT_MAX_NAN_FRACTION)[0]
            if flag != "ok":
                keep[i] = False
                bad.append((ref.id, f"cutout_flag {flag}"))
            else:
                out[i] = self._conform(image, False, ref.id)[0]
        return self._finish(refs, out, keep, bad, cuts)

    def _finish(self, refs: Sequence[ImageRef], out: np.ndarray, keep: np.ndarray, bad: list[tuple],
                cuts: list[tuple] | None = None) -> Batch:
        """The batch of the images kept, NaN / inf pixels filled, dropped (``skip_bad``) or raised."""
        finite = np.isfinite(out.reshape(len(refs), -1)).all(axis=1) | ~keep
        if not finite.all():
            rows = np.flatnonzero(~finite)
            if self.nan_fill is not None:
                out[rows] = np.where(np.isfinite(out[rows]), out[rows], np.float32(self.nan_fill))
            elif not self.skip_bad:
                raise BadImageError(refs[rows[0]].id, "has NaN or inf pixels; pass nan_fill=VALUE (--nan-fill) "
                                                      "to replace them, or skip_bad=True (--skip-bad) to skip it")
            else:
                keep[rows] = False
                bad.extend((refs[i].id, "has NaN or inf pixels") for i in rows)
        ids = [ref.id for ref in refs]
        if keep.all():
            return Batch(ids, out, bad, cuts or [])
        return Batch([i for i, k in zip(ids, keep) if k], out[keep], bad, cuts or [])

    def batches(self, refs: Sequence[ImageRef], spans: Sequence[tuple[int, int]], prefetch: int = 2,
                workers: int = 2) -> Iterator[Batch]:
        """Read ``refs[start:stop]`` for each ``(start, stop)`` of ``spans``, in order, ahead of the consumer.

        Up to ``prefetch`` batches are read ahead by ``workers`` threads while
        the caller works on the current one, so at most ``prefetch + 1``
        batches are in memory.  An error reading a batch is raised when that
        batch is reached.
        """
        pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="gamornet-read")
        pending: deque = deque()
        try:
            for start, stop in spans:
                pending.append(pool.submit(self.read, refs[start:stop]))
                if len(pending) > prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
