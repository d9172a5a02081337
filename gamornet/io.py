"""Image sources for batch prediction: arrays, ``.npy`` stacks, FITS files, directories, globs.

The data path, top to bottom:

1. :func:`list_images` expands the inputs (paths, directories, glob patterns,
   lists of them, or one numpy array) into one :class:`ImageRef` per image,
   in sorted path order, each with its id.  Only ``.npy`` headers are read here
   (to count the images of a stack, and to refuse dtypes other than real ints
   and floats); FITS files hold one image each.  Broken symbolic links are bad
   files.
2. :func:`scan_images` validates those images before anything is predicted:
   readable file, image HDU, shape (from the FITS header or the ``.npy``
   header; no pixel data is read), FITS data not cut short (the file holds
   the bytes its header announces; not checkable inside gzip), optionally
   also the pixels (``check_data=True``: every image is read once and NaN /
   inf pixels are found up front).  Without ``check_data`` NaN / inf pixels
   are found when the image is read for prediction.
3. :class:`ImageReader` reads batches of validated images as float32
   ``(n, H, W, C)`` in a background thread pool with a bounded prefetch, so
   file reading overlaps with the model.

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
  pixels read with one ``numpy.fromfile``, over ten times faster than
  opening them with astropy; gzip, tile-compressed (``.fz``), ``BLANK`` and
  other files are read by astropy.
- Directories: their image files (the suffixes above, ``.npy``), not recursive.
- Glob patterns (``**`` recursive): the matching image files.

File ids are paths relative to the deepest directory common to all files
(the bare file name when all lie in one directory).  Files are sorted by
path and listed once, however often they are named.

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

import glob
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from gamornet.stack import read_rows

__all__ = [
    "FITS_SUFFIXES",
    "IMAGE_SUFFIXES",
    "BadImageError",
    "bad_images_error",
    "Source",
    "ImageRef",
    "Batch",
    "expand_paths",
    "list_images",
    "scan_images",
    "crop_or_pad",
    "ImageReader",
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
class Source:
    """One input: an array, a ``.npy`` file or a FITS file.

    Attributes
    ----------
    kind : {"array", "npy", "fits"}
    path : str or None
        File path (None for arrays).
    name : str
        The file's id stem (relative path), or ``"array"``.
    n_images : int
    data : numpy.ndarray, optional
        The array, or the ``.npy`` memory map.
    image_shape : tuple, optional
        Raw shape of one image, once known.
    pixels : PlainPixels, optional
        For a plain FITS file, where its pixels lie (found by the scan).
    """

    kind: str
    path: str | None
    name: str
    n_images: int = 1
    data: np.ndarray | None = field(default=None, repr=False)
    image_shape: tuple | None = None
    pixels: PlainPixels | None = None


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image: its id, its source and its position in the source."""

    id: str | int
    source: Source
    index: int | None = None


@dataclass
class Batch:
    """Images read for one batch.

    ``images[i]`` belongs to ``ids[i]``; ``bad`` lists ``(id, reason)`` of
    images dropped (only with ``skip_bad``).
    """

    ids: list
    images: np.ndarray
    bad: list[tuple] = field(default_factory=list)


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


def _npy_source(path: str, name: str) -> Source:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadImageError(name, f"unreadable .npy file ({exc})") from None
    if data.dtype.kind not in PIXEL_KINDS:
        raise BadImageError(name, f".npy pixels must be real int or float numbers, not {data.dtype}")
    if data.ndim == 2:
        return Source("npy", path, name, 1, data, tuple(data.shape))
    if data.ndim in (3, 4):
        return Source("npy", path, name, data.shape[0], data, tuple(data.shape[1:]))
    raise BadImageError(name, f"a .npy file must hold (N, H, W, C), (N, H, W) or (H, W) images, not shape "
                              f"{data.shape}")


def bad_images_error(bad: list[tuple]) -> BadImageError:
    """One error listing every bad image (up to 10)."""
    lines = "\n".join(f"  {image_id}: {reason}" for image_id, reason in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return BadImageError(None, f"{len(bad)} bad input image(s); nothing was predicted "
                               f"(pass skip_bad=True / --skip-bad to skip them):\n{lines}{more}", bad)


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
    bad : list of (id, reason)

    Raises
    ------
    BadImageError
        Naming every such bad file, unless ``skip_bad``.
    TypeError
        For an array of another dtype than real ints or floats (an argument
        error, never skipped), or ``inputs`` of another type.
    """
    if isinstance(inputs, np.ndarray):
        if inputs.ndim not in (3, 4) or inputs.shape[0] == 0:
            raise ValueError(_inputs_error("an array must be (N, H, W, C) or (N, H, W) with N >= 1", inputs))
        if inputs.dtype.kind not in PIXEL_KINDS:
            raise TypeError(_inputs_error(f"an array must hold real int or float pixels, not {inputs.dtype}", inputs))
        source = Source("array", None, "array", inputs.shape[0], inputs, tuple(inputs.shape[1:]))
        return [ImageRef(i, source, i) for i in range(inputs.shape[0])], []
    paths = expand_paths(inputs)
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    refs: list[ImageRef] = []
    bad: list[tuple] = []
    for path in paths:
        name = os.path.relpath(path, root)
        if _is_broken_link(path):
            bad.append((name, f"broken symbolic link (to {os.readlink(path)!r}, which does not exist)"))
            continue
        if _file_kind(path) == "fits":
            refs.append(ImageRef(name, Source("fits", path, name)))
            continue
        try:
            source = _npy_source(path, name)
        except BadImageError as exc:
            bad.append((name, exc.reason))
            continue
        if source.data.ndim == 2:
            refs.append(ImageRef(name, source, None))
        else:
            refs.extend(ImageRef(f"{name}:{i}", source, i) for i in range(source.n_images))
    if bad and not skip_bad:
        raise bad_images_error(bad)
    return refs, bad


# ---------------------------------------------------------------- validation


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


def _check_shape(image_id, shape: tuple, input_shape: tuple, crop_pad) -> None:
    layout = _image_layout(shape, input_shape[2])
    if layout is None:
        raise BadImageError(image_id, f"image shape {shape} cannot be read as the model's input shape {input_shape} "
                                      "(expected (H, W), (H, W, C) or (C, H, W))")
    spatial = shape[1:] if layout == "chw" else shape[:2]
    if tuple(spatial) != tuple(input_shape[:2]) and crop_pad is None:
        raise BadImageError(image_id, f"image shape {shape} does not match the model's input shape {input_shape}; "
                                      "pass crop_pad=VALUE (--crop-pad) to centre-crop / pad it")


def _fits_hdu(hdul, hdu, image_id):
    from astropy.io import fits

    image_types = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    if hdu is None:
        for candidate in hdul:
            if isinstance(candidate, image_types) and candidate.header.get("NAXIS", 0) > 0:
                return candidate
        raise BadImageError(image_id, "no HDU holds image data")
    try:
        chosen = hdul[hdu]
    except (KeyError, IndexError):
        raise BadImageError(image_id, f"has no HDU {hdu!r}") from None
    if not isinstance(chosen, image_types) or chosen.header.get("NAXIS", 0) == 0:
        raise BadImageError(image_id, f"HDU {hdu!r} holds no image data")
    return chosen


_BLOCK = 2880
_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: Keywords deciding which HDU is chosen and where its data lies (NAXISn too).
_LAYOUT_KEYS = frozenset(("SIMPLE", "XTENSION", "EXTNAME", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "ZIMAGE", "ZNAXIS",
                          "GROUPS"))


@dataclass(frozen=True)
class PlainPixels:
    """Where the pixels of a plain image HDU (uncompressed, no BLANK) lie in its file, and their scaling."""

    offset: int
    dtype: str
    shape: tuple
    bscale: float = 1
    bzero: float = 0


def _card_value(text: str):
    """Value of a FITS card's value field (string, bool, int or float)."""
    text = text.strip()
    if text.startswith("'"):
        end = 1
        while True:
            end = text.index("'", end)
            if text[end + 1 : end + 2] != "'":
                return text[1:end].replace("''", "'").rstrip()
            end += 2
    token = text.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        return float(token.replace("D", "E"))


def _read_header(f) -> tuple[dict[str, list[str]], int] | None:
    """Raw value fields of one header's keywords (every occurrence, in order) and its size in bytes.

    None if the header is cut short.
    """
    cards: dict[str, list[str]] = {}
    size = 0
    while True:
        block = f.read(_BLOCK)
        if len(block) < _BLOCK:
            return None
        size += _BLOCK
        text = block.decode("ascii")
        for i in range(0, _BLOCK, 80):
            key = text[i : i + 8].rstrip()
            if key == "END":
                return cards, size
            if text[i + 8 : i + 10] == "= ":
                cards.setdefault(key, []).append(text[i + 10 : i + 80])


def _locate_pixels(path: str, hdu, image_id) -> PlainPixels | None:
    """Walk the headers of a FITS file to the chosen HDU, without astropy.

    HDUs are chosen as :func:`_fits_hdu` chooses them.  Returns where the
    pixels lie for a plain image HDU, or None whenever astropy must read the
    file: gzip or tile-compressed data, BLANK values, random groups,
    a duplicated keyword that decides the layout or the scaling (astropy's
    precedence among duplicates differs between its header and its data
    scaling), a header that does not parse or is cut short.

    Raises
    ------
    BadImageError
        If the chosen HDU's data is cut short: the file ends before the
        ``|BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`` bytes its
        header announces (uncompressed files only; gzip hides the size).
    """
    try:
        size_on_disk = os.path.getsize(path)
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzip
                return None
            offset, index = 0, 0
            while True:
                f.seek(offset)
                found = _read_header(f)
                if found is None:
                    return None
                cards, size = found
                if any(len(values) > 1 for key, values in cards.items() if key in _LAYOUT_KEYS or
                       key.startswith("NAXIS")):
                    return None
                head = {key: _card_value(values[0]) for key, values in cards.items() if key in _LAYOUT_KEYS}
                if index == 0 and (head.get("SIMPLE") is not True or head.get("GROUPS")):
                    return None
                naxis, bitpix = head["NAXIS"], head["BITPIX"]
                axes = [_card_value(cards[f"NAXIS{i}"][0]) for i in range(1, naxis + 1)]
                nbytes = abs(bitpix) // 8 * head.get("GCOUNT", 1) * (head.get("PCOUNT", 0) + (math.prod(axes) if naxis
                                                                                               else 0))
                image = index == 0 or head.get("XTENSION") == "IMAGE"
                compressed = head.get("XTENSION") == "BINTABLE" and head.get("ZIMAGE") is True
                has_data = naxis > 0 if image else compressed and head.get("ZNAXIS", 0) > 0
                name = str(head.get("EXTNAME", "PRIMARY" if index == 0 else "")).upper()
                if (hdu is None and has_data) or hdu == index or (isinstance(hdu, str) and name == hdu.upper()):
                    break
                offset += size + -(-nbytes // _BLOCK) * _BLOCK
                index += 1
            scaling = {key: _card_value(cards[key][0]) for key in ("BSCALE", "BZERO") if key in cards}
            unusual = "BLANK" in cards or any(len(cards.get(key, ())) > 1 for key in ("BSCALE", "BZERO"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    start = offset + size
    if start + nbytes > size_on_disk:
        shape = ", ".join(f"NAXIS{i}={n}" for i, n in enumerate(axes, 1))
        raise BadImageError(image_id, f"FITS data cut short: HDU {index} (BITPIX={bitpix}, {shape}) needs {nbytes} "
                                      f"bytes from byte {start}, but the file ends at byte {size_on_disk}")
    if not image or naxis == 0 or bitpix not in _BITPIX_DTYPES or unusual:
        return None
    return PlainPixels(start, _BITPIX_DTYPES[bitpix], tuple(reversed(axes)), scaling.get("BSCALE", 1),
                       scaling.get("BZERO", 0))


def plain_fits_pixels(path: str, hdu=None) -> PlainPixels | None:
    """Locate the chosen image HDU's pixels by walking the headers, without astropy.

    Returns None whenever astropy must read the file instead: gzip or
    tile-compressed data, BLANK values, random groups, duplicated layout or
    scaling keywords, a header that does not parse, a file cut short.  HDUs
    are chosen as astropy's path chooses them (see :func:`scan_images`).
    """
    try:
        return _locate_pixels(path, hdu, path)
    except BadImageError:
        return None


def physical_values(raw: np.ndarray, bscale=1, bzero=0) -> np.ndarray:
    """``BZERO + BSCALE * raw`` computed as astropy computes it, in the same dtype.

    - ``BSCALE = 1``, ``BZERO = 0``: the stored values, unchanged.
    - ``BSCALE = 1`` with ``BZERO = -128`` on bytes, or ``2**(bits - 1)`` on
      16, 32 and 64-bit integers (the FITS conventions for signed bytes and
      unsigned integers): exact signed bytes / unsigned integers.
    - Otherwise 8 and 16-bit integers become float32, 32 and 64-bit integers
      float64, floats keep their width; in that precision the values are
      multiplied by ``BSCALE``, then ``BZERO`` is added.

    Parameters
    ----------
    raw : numpy.ndarray
        Stored values in the dtype of their BITPIX (unsigned bytes, signed
        16, 32 or 64-bit integers, floats), in either byte order.
    bscale, bzero : int or float
        The header's values, as parsed (an int stays an int).
    """
    if bscale == 1 and bzero == 0:
        return raw
    kind, bits = raw.dtype.kind, raw.dtype.itemsize * 8
    if bscale == 1 and ((kind == "u" and bits == 8 and bzero == -128) or (kind == "i" and bzero == 1 << (bits - 1))):
        unsigned = np.dtype(f"u{bits // 8}")
        stored = raw.view(unsigned.newbyteorder(raw.dtype.byteorder))
        flipped = stored ^ np.array(1 << (bits - 1), dtype=unsigned)  # adds the offset, exactly (native order)
        return flipped.view(np.int8 if bits == 8 else unsigned)
    if kind in "iu":
        data = raw.astype(np.float32 if bits <= 16 else np.float64)
    else:
        data = raw.astype(raw.dtype.newbyteorder("="))
    if bscale != 1:
        np.multiply(data, bscale, out=data)
    if bzero != 0:
        np.add(data, bzero, out=data)
    return data


def _read_plain_fits(path: str, pixels: PlainPixels, image_id) -> np.ndarray:
    count = math.prod(pixels.shape)
    try:
        raw = np.fromfile(path, dtype=pixels.dtype, count=count, offset=pixels.offset)
    except OSError as exc:
        raise BadImageError(image_id, f"unreadable FITS file ({exc})") from None
    if raw.size != count:
        raise BadImageError(image_id, "unreadable FITS file (data cut short)")
    return physical_values(raw.reshape(pixels.shape), pixels.bscale, pixels.bzero)


def _scan_fits(source: Source, hdu) -> None:
    """Find the shape of a FITS source's image (and where its pixels lie, for plain files)."""
    source.pixels = _locate_pixels(source.path, hdu, source.name)
    if source.pixels is not None:
        source.image_shape = source.pixels.shape
        return
    from astropy.io import fits

    try:
        with fits.open(source.path, memmap=True, lazy_load_hdus=True) as hdul:
            source.image_shape = tuple(_fits_hdu(hdul, hdu, source.name).shape)
    except BadImageError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError... for broken files
        raise BadImageError(source.name, f"unreadable FITS file ({type(exc).__name__}: {exc})") from None


def _read_fits(source: Source, image_id, hdu) -> np.ndarray:
    """Pixels of a FITS source: directly for plain files, else through astropy (which applies BSCALE / BZERO)."""
    if source.pixels is not None:
        return _read_plain_fits(source.path, source.pixels, image_id)
    from astropy.io import fits

    try:
        with fits.open(source.path, memmap=False) as hdul:
            return np.asarray(_fits_hdu(hdul, hdu, image_id).data)
    except BadImageError:
        raise
    except Exception as exc:
        raise BadImageError(image_id, f"unreadable FITS file ({type(exc).__name__}: {exc})") from None


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
        _check_shape("array", refs[0].source.image_shape, input_shape, crop_pad)
    sources = list({id(ref.source): ref.source for ref in refs}.values())

    def check_source(source: Source) -> str | None:
        try:
            if source.kind == "fits" and source.image_shape is None:
                _scan_fits(source, hdu)
            _check_shape(source.name, source.image_shape, input_shape, crop_pad)
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
            return self._conform(_read_fits(source, run[0].id, self.hdu), False, run[0].id)
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
            return Batch(ids, out, bad)
        return Batch([i for i, k in zip(ids, keep) if k], out[keep], bad)

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
