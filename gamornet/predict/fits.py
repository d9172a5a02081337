"""Reading FITS cutouts: the chosen image HDU, physical values exactly as astropy computes them.

By default the primary HDU is read, or the first HDU holding image data when
the primary is empty (as in ``.fz`` files); ``hdu`` picks another by number or
EXTNAME.  Physical values ``BZERO + BSCALE * raw`` are computed as astropy
computes them (:func:`physical_values`: 8 and 16-bit integers scale in
float32, 32 and 64-bit integers in float64, floats in their own width;
signed-byte and unsigned-integer conventions exactly), so a file gives the
same pixels whichever way it is read.  Plain files (uncompressed, no
``BLANK``, no duplicated layout or scaling keyword) are read directly: their
headers are walked here and the pixels read with one ``numpy.fromfile``, much
faster than opening them with astropy (figures on the performance page); gzip, tile-compressed
(``.fz``), ``BLANK`` and other files are read by astropy.  Before anything is
predicted, :func:`scan_fits` checks that a file holds the bytes its header
announces (not checkable inside gzip).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from gamornet.predict.inputs import BadImageError, InputSource

__all__ = ["PlainPixels", "plain_fits_pixels", "physical_values", "scan_fits", "read_fits", "read_image_header"]


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


def scan_fits(source: InputSource, hdu) -> None:
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


def read_fits(source: InputSource, image_id, hdu) -> np.ndarray:
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


def read_image_header(path: str, hdu=None):
    """The header of the image HDU a prediction reads (chosen as :func:`read_fits` chooses it), without its data.

    Returns an ``astropy.io.fits.Header`` (for a tile-compressed HDU, the
    header of its image).

    Raises
    ------
    BadImageError
        If the file has no such image HDU or cannot be read.
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            return _fits_hdu(hdul, hdu, path).header.copy()
    except BadImageError:
        raise
    except Exception as exc:
        raise BadImageError(path, f"unreadable FITS file ({type(exc).__name__}: {exc})") from None
