"""What to predict: the inputs of batch prediction, listed as one reference per image.

:func:`list_images` expands the inputs (paths, directories, glob patterns,
lists of them, or one numpy array) into one :class:`ImageRef` per image, in
sorted path order, each with its id; :func:`list_sources` gives the sources
alone (a ``.npy`` stack is one) and :func:`image_ref` the reference of one
image of a source, by the same ids (:func:`id_prefix`).  Only ``.npy``
headers are read here (to count the images of a stack, and to refuse dtypes
other than real ints and floats); FITS files hold one image each (see
:mod:`gamornet.predict.fits`).
Broken symbolic links are bad files.

Accepted layouts
----------------
- numpy array: ``(N, H, W, C)``, or ``(N, H, W)`` for one-channel models.
  Ids are the integer indices ``0 .. N-1``.
- ``.npy`` file, memory-mapped (never read whole): ``(N, H, W, C)`` or
  ``(N, H, W)`` stacks (id ``file:index``) or one 2-D ``(H, W)`` image (id
  ``file``).  A 3-D ``.npy`` is always a stack.
- FITS file (``.fits``, ``.fit``, ``.fts``, optionally ``.gz``, or ``.fz``):
  one image, ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` (numpy axis order,
  e.g. ``(1, H, W)``).  By default the primary HDU, or the first HDU holding
  image data when the primary is empty (as in ``.fz`` files); ``hdu`` picks
  another by number or EXTNAME.  Physical values ``BZERO + BSCALE * raw``
  are used, computed as astropy computes them (:func:`physical_values`:
  8 and 16-bit integers scale in float32, 32 and 64-bit integers in
  float64, floats in their own width; signed-byte and unsigned-integer
  conventions exactly), so a file gives the same pixels whichever way it is
  read.  Plain files (uncompressed, no ``BLANK``, no duplicated layout or
  scaling keyword) are read directly: their headers are walked here and the
  pixels read with one ``numpy.fromfile``, much faster than opening
  them with astropy (figures on the performance page); gzip, tile-compressed (``.fz``), ``BLANK`` and
  other files are read by astropy.
- Directories: their image files (the suffixes above, ``.npy``), not recursive.
- Glob patterns (``**`` recursive): the matching image files.

File ids are paths relative to the deepest directory common to all files
(the bare file name when all lie in one directory).  Files are sorted by
path and listed once, however often they are named.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FITS_SUFFIXES",
    "IMAGE_SUFFIXES",
    "PIXEL_KINDS",
    "BadImageError",
    "bad_images_error",
    "InputSource",
    "ImageRef",
    "Batch",
    "expand_paths",
    "list_images",
    "list_sources",
    "id_prefix",
    "image_ref",
]

FITS_SUFFIXES: tuple[str, ...] = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz")
IMAGE_SUFFIXES: tuple[str, ...] = (*FITS_SUFFIXES, ".npy")


class BadImageError(ValueError):
    """An input image that cannot be used: unreadable, wrong shape, NaN pixels.

    Attributes
    ----------
    image_id : str or int or None
        Id of the image (file name, ``file:index`` or array index); None
        for a report on several images.
    reason : str
        What is wrong with it.
    bad : list of (id, reason)
        Every bad image the error is about.
    """

    def __init__(self, image_id, reason: str, bad: list[tuple] | None = None):
        super().__init__(reason if image_id is None else f"{image_id}: {reason}")
        self.image_id, self.reason = image_id, reason
        self.bad = [(image_id, reason)] if bad is None else bad


@dataclass(eq=False)
class InputSource:
    """One input: an array, a ``.npy`` file or a FITS file.

    Attributes
    ----------
    kind : {"array", "npy", "fits", "cutout"}
    path : str or None
        File path (None for arrays).
    name : str
        The file's id stem (relative path), or ``"array"``.
    n_images : int
    data : numpy.ndarray, optional
        The array, or the ``.npy`` memory map.
    image_shape : tuple, optional
        Raw shape of one image, once known.
    pixels : gamornet.predict.fits.PlainPixels, optional
        For a plain FITS file, where its pixels lie (found by the scan).
    cutting : gamornet.cutouts.CutoutPlan, optional
        For kind ``"cutout"`` (the rows of a catalogue, cut from survey
        images when read; see :mod:`gamornet.predict.catalog`): what cuts
        them (positions, tile paths, grid; no pixels).
    """

    kind: str
    path: str | None
    name: str
    n_images: int = 1
    data: np.ndarray | None = field(default=None, repr=False)
    image_shape: tuple | None = None
    pixels: object | None = None
    cutting: object | None = None


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image: its id, its source and its position in the source."""

    id: str | int
    source: InputSource
    index: int | None = None


@dataclass
class Batch:
    """Images read for one batch.

    ``images[i]`` belongs to ``ids[i]``; ``bad`` lists ``(id, reason)`` of
    images dropped (only with ``skip_bad``, or catalogue rows whose cutout
    is not usable); ``cuts`` lists ``(id, results)`` of every catalogue row
    cut (kind ``"cutout"``; results as in
    :data:`gamornet.cutouts.plan.ROW_DTYPE`).
    """

    ids: list
    images: np.ndarray
    bad: list[tuple] = field(default_factory=list)
    cuts: list[tuple] = field(default_factory=list)


def _inputs_error(message: str, inputs) -> str:
    shown = inputs if not isinstance(inputs, np.ndarray) else f"array of shape {inputs.shape}"
    return f"`inputs`: {message}. Received: inputs={shown!r}"


def _is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def _is_broken_link(path: str) -> bool:
    return os.path.islink(path) and not os.path.exists(path)


def expand_paths(inputs) -> list[str]:
    """Absolute paths of the image files named by ``inputs``, sorted, each once.

    Symbolic links are kept as named (not resolved); broken ones are listed
    too, so that :func:`list_images` reports them as bad files.

    Parameters
    ----------
    inputs : str, os.PathLike or sequence of them
        Files (any name), directories (their image files) and glob patterns
        (their matching image files).

    Raises
    ------
    FileNotFoundError
        If a path does not exist, or a directory or pattern holds no image file.
    TypeError
        If ``inputs`` or an item of it is not a path.
    """
    if isinstance(inputs, (str, os.PathLike)):
        items = [inputs]
    elif isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, dict)):
        items = list(inputs)
    else:
        raise TypeError(_inputs_error("must be a path, a directory, a glob pattern, a sequence of them, or a numpy "
                                      "array", inputs))
    if not items:
        raise ValueError(_inputs_error("no input given", inputs))
    files: set[str] = set()
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(_inputs_error(f"each item must be a path, directory or glob pattern, not {type(item)}",
                                          inputs))
        path = os.fspath(item)
        if os.path.isdir(path):
            found = [os.path.join(path, f) for f in os.listdir(path) if _is_image_file(f)]
            found = [f for f in found if os.path.isfile(f) or _is_broken_link(f)]
            what = "directory holds no image file (" + ", ".join(IMAGE_SUFFIXES) + ")"
        elif os.path.isfile(path) or _is_broken_link(path):
            found, what = [path], ""
        elif glob.has_magic(path):
            found = [f for f in glob.glob(path, recursive=True)
                     if (os.path.isfile(f) or _is_broken_link(f)) and _is_image_file(f)]
            what = "pattern matches no image file"
        else:
            raise FileNotFoundError(_inputs_error(f"{path!r} does not exist", inputs))
        if not found:
            raise FileNotFoundError(_inputs_error(f"{path!r}: {what}", inputs))
        files.update(os.path.abspath(f) for f in found)
    return sorted(files)


def _file_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".npy"):
        return "npy"
    if lower.endswith(FITS_SUFFIXES):
        return "fits"
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError:
        return "fits"  # reported as unreadable by the scan
    return "npy" if magic == b"\x93NUMPY" else "fits"


#: Kinds of numpy dtypes that images may hold: signed and unsigned integers, floats.
PIXEL_KINDS = "iuf"


def _npy_source(path: str, name: str) -> InputSource:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadImageError(name, f"unreadable .npy file ({exc})") from None
    if data.dtype.kind not in PIXEL_KINDS:
        raise BadImageError(name, f".npy pixels must be real int or float numbers, not {data.dtype}")
    if data.ndim == 2:
        return InputSource("npy", path, name, 1, data, tuple(data.shape))
    if data.ndim in (3, 4):
        return InputSource("npy", path, name, data.shape[0], data, tuple(data.shape[1:]))
    raise BadImageError(name, f"a .npy file must hold (N, H, W, C), (N, H, W) or (H, W) images, not shape "
                              f"{data.shape}")


def bad_images_error(bad: list[tuple]) -> BadImageError:
    """One error listing every bad image (up to 10)."""
    lines = "\n".join(f"  {image_id}: {reason}" for image_id, reason in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return BadImageError(None, f"{len(bad)} bad input image(s); nothing was predicted "
                               f"(pass skip_bad=True / --skip-bad to skip them):\n{lines}{more}", bad)


def id_prefix(source: InputSource) -> str | None:
    """The text before the index in the ids of a stack's images; None for a one-image source.

    Image ``i`` of an array has id ``i`` (prefix ``""``, ids compared as
    text), image ``i`` of a ``(N, H, W[, C])`` ``.npy`` stack ``name:i``
    (prefix ``"name:"``); a FITS file or a 2-D ``.npy`` holds one image, whose
    id is the source's name.  With :func:`image_ref`, this is how prediction
    names images: ``str(image_ref(source, i).id) == id_prefix(source) + str(i)``.
    """
    if source.kind == "array":
        return ""
    if source.kind == "npy" and source.data is not None and source.data.ndim in (3, 4):
        return f"{source.name}:"
    return None


def image_ref(source: InputSource, index: int) -> ImageRef:
    """The :class:`ImageRef` of image ``index`` (``0 <= index < source.n_images``) of a source of :func:`list_sources`.

    Its id is the one :func:`list_images` gives (see :func:`id_prefix`), found
    without listing the source's other images.
    """
    prefix = id_prefix(source)
    if prefix is None:
        return ImageRef(source.name, source, None)
    return ImageRef(index if source.kind == "array" else f"{prefix}{index}", source, index)


def list_sources(inputs, skip_bad: bool = False) -> tuple[list[InputSource], list[tuple]]:
    """The sources of ``inputs`` (the array, or one per file), in the order of :func:`list_images`.

    Only ``.npy`` headers are read: a stack of millions of images is one
    source, whose images :func:`image_ref` names one at a time.  Arguments,
    errors and ``bad`` as for :func:`list_images`.
    """
    if isinstance(inputs, np.ndarray):
        if inputs.ndim not in (3, 4) or inputs.shape[0] == 0:
            raise ValueError(_inputs_error("an array must be (N, H, W, C) or (N, H, W) with N >= 1", inputs))
        if inputs.dtype.kind not in PIXEL_KINDS:
            raise TypeError(_inputs_error(f"an array must hold real int or float pixels, not {inputs.dtype}", inputs))
        return [InputSource("array", None, "array", inputs.shape[0], inputs, tuple(inputs.shape[1:]))], []
    paths = expand_paths(inputs)
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    sources: list[InputSource] = []
    bad: list[tuple] = []
    for path in paths:
        name = os.path.relpath(path, root)
        if _is_broken_link(path):
            bad.append((name, f"broken symbolic link (to {os.readlink(path)!r}, which does not exist)"))
            continue
        if _file_kind(path) == "fits":
            sources.append(InputSource("fits", path, name))
            continue
        try:
            sources.append(_npy_source(path, name))
        except BadImageError as exc:
            bad.append((name, exc.reason))
    if bad and not skip_bad:
        raise bad_images_error(bad)
    return sources, bad


def list_images(inputs, skip_bad: bool = False) -> tuple[list[ImageRef], list[tuple]]:
    """One :class:`ImageRef` per image of ``inputs``, in sorted order.

    Parameters
    ----------
    inputs : numpy.ndarray, str, os.PathLike or sequence of paths
        See the module documentation.
    skip_bad : bool
        Record bad files found while listing (broken symbolic links; ``.npy``
        files that cannot be read, whose images cannot be counted, or whose
        dtype is not a real int or float) instead of raising.

    Returns
    -------
    refs : list of ImageRef
        :func:`image_ref` of every image of every source of :func:`list_sources`.
    bad : list of (id, reason)

    Raises
    ------
    BadImageError
        Naming every such bad file, unless ``skip_bad``.
    TypeError
        For an array of another dtype than real ints or floats (an argument
        error, never skipped), or ``inputs`` of another type.
    """
    sources, bad = list_sources(inputs, skip_bad)
    return [image_ref(source, i) for source in sources for i in range(source.n_images)], bad
