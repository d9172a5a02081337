"""Survey images: their image HDU and WCS, their pixels read memory-mapped, and which tile holds a source.

A tile is a FITS file whose image HDU (the first with 2-D data and a
celestial WCS, or the one ``hdu`` names) is opened memory-mapped and never
read whole: integer images are read raw (``do_not_scale_image_data``) and
scaled (``BSCALE``, ``BZERO``, ``BLANK`` as NaN) cutout by cutout.

A tile may also be a URL (:data:`URL_SCHEMES`: ``http://``, ``https://``,
``s3://``), read through fsspec (:func:`astropy.io.fits.open` with
``use_fsspec=True``): its headers are read once, when it is opened, and each
cutout reads only its own rows (:attr:`astropy.io.fits.ImageHDU.section`):
the rows of the cutout whole, in one request, where an image row holds at
most :data:`WHOLE_ROW_BYTES`, else the cutout's part of each row.  The file
is never read whole.

Tile pixel coordinates are 0-based, pixel ``(x, y)`` covering
``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]`` (``x`` the column).
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from gamornet.cutouts.grid import ANGLE_TOLERANCE, SCALE_TOLERANCE, ModelGrid

__all__ = ["Tile", "open_tile", "locate_sources", "is_url", "tile_location", "tile_name", "remote_options",
           "URL_SCHEMES", "WHOLE_ROW_BYTES"]

#: URL schemes of remote tiles (``s3://`` needs s3fs: ``pip install gamornet[cloud]``).
URL_SCHEMES = ("http", "https", "s3")
#: Image rows of at most this many bytes are read whole over the network (a cutout's rows in one request): one
#: request more costs about as long as this many bytes.  Wider rows are read one cutout row per request.
WHOLE_ROW_BYTES = 256 * 1024
#: Bytes each remote read fetches beyond what it asks for (ten FITS blocks: most headers in one request).
_READ_AHEAD = 10 * 2880
#: fsspec's name of the read-ahead setting, by URL scheme.
_BLOCK_SIZE_OPTION = {"http": "block_size", "https": "block_size", "s3": "default_block_size"}
_CACHE_TYPE_OPTION = {"http": "cache_type", "https": "cache_type", "s3": "default_cache_type"}


def is_url(path) -> bool:
    """Whether ``path`` is a URL of a remote tile (one of :data:`URL_SCHEMES`)."""
    return isinstance(path, str) and urllib.parse.urlsplit(path).scheme.lower() in URL_SCHEMES and "://" in path


def tile_location(path) -> str:
    """A URL as it is; a local path made absolute."""
    return path if is_url(path) else os.path.abspath(os.fspath(path))


def tile_name(location: str) -> str:
    """The name a table records for a tile: the whole URL, or the local file's name without its folder."""
    return location if is_url(location) else os.path.basename(location)


def remote_options(url: str, fsspec_kwargs: dict | None = None) -> dict:
    """fsspec's options for ``url``: a small read-ahead (ten FITS blocks per request), then ``fsspec_kwargs``.

    Settings of fsspec's own configuration (``fsspec.config.conf``, the
    ``FSSPEC_<SCHEME>_<OPTION>`` environment variables) replace the read-ahead
    defaults; ``fsspec_kwargs`` replace both.
    """
    import fsspec.config

    scheme = urllib.parse.urlsplit(url).scheme.lower()
    configured = fsspec.config.conf.get(scheme, {})
    options = {}
    for name, value in ((_BLOCK_SIZE_OPTION.get(scheme), _READ_AHEAD), (_CACHE_TYPE_OPTION.get(scheme), "readahead")):
        if name is not None and name not in configured:
            options[name] = value
    options.update(fsspec_kwargs or {})
    return options


@dataclass
class Tile:
    """One survey image.

    Attributes
    ----------
    path : str
        The FITS file, or its URL.
    hdu : int
        Index of its image HDU.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    shape : tuple of int
        ``(ny, nx)``.
    scale : float
        Pixel scale (arcsec / px) at the centre of the image (the mean of both axes).
    angle : float
        Angle (degrees, east of north) of the tile's +y axis at the centre of the image; 0 for north up.
    east_left : bool
        Whether east is towards -x (the sky as seen, the usual orientation).
    version : tuple
        For a URL, ``(size in bytes, ETag or modification time)`` as the server gave them; empty for a local file.
    fsspec_kwargs : dict or None
        For a URL, the options given to fsspec (see :func:`remote_options`).
    """

    path: str
    hdu: int
    wcs: WCS
    shape: tuple[int, int]
    scale: float
    angle: float
    east_left: bool
    _scaling: tuple[float, float, float | None] = (1.0, 0.0, None)
    _hdul: fits.HDUList | None = field(default=None, repr=False)
    _data: np.ndarray | fits.Section | None = field(default=None, repr=False)
    version: tuple = ()
    fsspec_kwargs: dict | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        """File name, without its folder; the whole URL of a remote tile."""
        return tile_name(self.path)

    @property
    def remote(self) -> bool:
        """Whether the tile is read over the network."""
        return is_url(self.path)

    def matches(self, grid: ModelGrid) -> bool:
        """Whether pixels are copied: scale within 1%, north up and east left within 0.5 degree."""
        return (abs(self.scale / grid.pixel_scale - 1) <= SCALE_TOLERANCE and abs(self.angle) <= ANGLE_TOLERANCE
                and self.east_left)

    @property
    def header(self) -> fits.Header:
        """The header of the image HDU: kept from when the tile was opened (a remote tile's is not read again)."""
        self.open()
        return self._hdul[self.hdu].header

    def open(self) -> None:
        """Map the pixels into memory, or keep a remote tile's file open (nothing is read); done before threads
        read them."""
        with self._lock:
            if self._data is not None:
                return
            if self.remote:
                if self._hdul is None:  # closed after a run: the headers are read again
                    self._hdul, _ = _open_remote(self.path, self.fsspec_kwargs)
                self._data = self._hdul[self.hdu].section
            else:
                self._hdul = fits.open(self.path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)
                self._data = self._hdul[self.hdu].data

    def _raw(self, rows: slice, cols: slice) -> np.ndarray:
        if not self.remote:
            return np.asarray(self._data[rows, cols])
        with self._lock:  # one file object: one read at a time
            if self.shape[1] * self._data.dtype.itemsize <= WHOLE_ROW_BYTES:
                return np.asarray(self._data[rows, :])[:, cols]  # the rows whole: one request
            return np.asarray(self._data[rows, cols])  # one request per row

    def pixels(self, rows: slice, cols: slice) -> np.ndarray:
        """The pixels ``[rows, cols]`` as float32 (scaled, ``BLANK`` as NaN), read from the memory map (or the
        network)."""
        self.open()
        raw = self._raw(rows, cols)
        bscale, bzero, blank = self._scaling
        values = raw.astype(np.float64) * bscale + bzero if (bscale, bzero) != (1.0, 0.0) else raw
        values = np.asarray(values, dtype=np.float32)
        if blank is not None and raw.dtype.kind in "iu":
            values[raw == blank] = np.nan
        return values

    def close(self) -> None:
        """Close the memory map (or the remote file)."""
        with self._lock:
            if self._hdul is not None:
                self._hdul.close()
            self._hdul = self._data = None


def _celestial_wcs(header: fits.Header) -> WCS | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # astropy raises many kinds for broken headers
            return None
    return wcs if wcs.has_celestial and wcs.naxis == 2 else None


def _orientation(wcs: WCS, shape: tuple[int, int]) -> tuple[float, float, bool]:
    """``(scale arcsec/px, angle of +y from north in degrees, east left)`` at the centre of the image.

    Measured on the sky with the whole WCS, distortions (SIP, TPV, plate solutions) included: where the reference
    pixel lies far off the image (a mosaic's, a photographic plate's), the image's own pixels can be turned and
    stretched from those of the reference pixel.  The reference pixel's, where the centre has no sky position.
    """
    y, x = (np.asarray(shape, dtype=float) - 1) / 2
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore")  # a centre off the projection gives NaN
        centre = wcs.pixel_to_world(x, y)
        steps = [centre.spherical_offsets_to(wcs.pixel_to_world(x + dx, y + dy)) for dx, dy in ((0.5, 0), (0, 0.5))]
    # arcsec per pixel: rows (east, north), columns (x, y)
    matrix = np.array([[2 * east.arcsec, 2 * north.arcsec] for east, north in steps]).T
    if not np.isfinite(matrix).all():
        matrix = wcs.pixel_scale_matrix * 3600  # degrees per pixel: rows (lon, lat), columns (x, y)
    scale = float(np.mean(np.hypot(matrix[0], matrix[1])))
    angle = float(np.degrees(np.arctan2(matrix[0, 1], matrix[1, 1])))
    return scale, angle, bool(np.linalg.det(matrix) < 0)


def _image_hdu(hdul: fits.HDUList, hdu, path: str) -> tuple[int, WCS]:
    """Index and WCS of the image HDU: ``hdu`` (index or EXTNAME), else the first 2-D one with a celestial WCS."""
    candidates = range(len(hdul)) if hdu is None else [hdu if isinstance(hdu, int) else hdul.index_of(hdu)]
    for index in candidates:
        if not 0 <= index < len(hdul):
            raise ValueError(f"`hdu`: {path} has {len(hdul)} HDUs. Received: hdu={hdu!r}")
        header = hdul[index].header
        if header.get("NAXIS") == 2 and isinstance(hdul[index], (fits.PrimaryHDU, fits.ImageHDU)):
            wcs = _celestial_wcs(header)
            if wcs is not None:
                return index, wcs
    what = "has no" if hdu is None else f"HDU {hdu!r} is no"
    what += " 2-D image with a celestial WCS"
    raise ValueError(f"`images`: {path} {what}. Received: images=[..., {path!r}, ...]")


def _one_line(exc: BaseException) -> str:
    """What went wrong, on one line: fsspec raises FileNotFoundError from the HTTP error or the failed connection."""
    if isinstance(exc, FileNotFoundError):
        exc = exc.__cause__ or exc
    if getattr(exc, "status", None) is not None:
        return f"HTTP {exc.status} {getattr(exc, 'message', '')}".strip()
    if isinstance(exc, FileNotFoundError):
        return "not found"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _open_remote(url: str, fsspec_kwargs: dict | None) -> tuple[fits.HDUList, tuple]:
    """The HDUList of a remote FITS file (its first header read) and its ``(size, ETag or modification time)``."""
    options = remote_options(url, fsspec_kwargs)
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **options)
        info = fs.info(path)
    except ImportError as exc:
        raise ValueError(f"`images`: {url} needs a package that is not installed ({_one_line(exc)}; s3:// URLs need "
                         f"`pip install gamornet[cloud]`). Received: {url!r}") from None
    except Exception as exc:  # fsspec and its back-ends raise many kinds (aiohttp, botocore, OSError)
        raise ValueError(f"`images`: {url} could not be reached ({_one_line(exc)}). Received: {url!r}") from None
    if info.get("type", "file") != "file" or not info.get("size") or info.get("partial") is False:
        raise ValueError(f"`images`: {url} is not a file the server sends in parts (byte ranges with a known size). "
                         f"Received: {url!r}")
    version = (int(info["size"]), str(info.get("ETag") or info.get("LastModified") or info.get("Last-Modified") or ""))
    try:
        hdul = fits.open(url, use_fsspec=True, fsspec_kwargs=options, lazy_load_hdus=True,
                         do_not_scale_image_data=True)
    except Exception as exc:  # not FITS (OSError, ValueError) or a network failure while reading the header
        raise ValueError(f"`images`: {url} could not be read as FITS ({_one_line(exc)}). Received: {url!r}") from None
    return hdul, version


def _open_hdul(path: str, fsspec_kwargs: dict | None) -> tuple[fits.HDUList, tuple]:
    if is_url(path):
        return _open_remote(path, fsspec_kwargs)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`images`: no such file. Received: {path!r}")
    try:
        return fits.open(path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True), ()
    except (OSError, ValueError) as exc:
        raise ValueError(f"`images`: {path} could not be read as FITS ({exc}). Received: {path!r}") from None


def _read_tile(hdul: fits.HDUList, hdu, path: str) -> tuple[int, WCS, tuple[int, int], tuple]:
    """Index, celestial WCS, shape and scaling of the image HDU."""
    try:
        index, wcs = _image_hdu(hdul, hdu, path)
    except KeyError:
        raise ValueError(f"`hdu`: {path} has no HDU named {hdu!r}. Received: hdu={hdu!r}") from None
    header = hdul[index].header
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    blank = header.get("BLANK") if header.get("BITPIX", -32) > 0 else None
    scaling = (float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)), blank)
    return index, wcs.celestial, shape, scaling


def open_tile(path: str | os.PathLike, hdu: int | str | None = None, fsspec_kwargs: dict | None = None) -> Tile:
    """Open one survey image (its header now, its pixels memory-mapped when first cut).

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file, or the URL of one (:data:`URL_SCHEMES`).  A remote
        file stays open, so that its headers are read only once; only the
        rows of its cutouts are read, when they are cut.
    hdu : int or str, optional
        Image HDU (index or EXTNAME); by default the first 2-D one with a celestial WCS.
    fsspec_kwargs : dict, optional
        For a URL, options of its fsspec file system (``{"anon": True}`` for
        public S3 buckets), replacing :func:`remote_options`' defaults.

    Raises
    ------
    FileNotFoundError
        If there is no such local file.
    ValueError
        If it is not FITS, has no 2-D image with a celestial WCS (in ``hdu``), or
        its URL cannot be reached.
    """
    path = path if is_url(path) else os.fspath(path)
    hdul, version = _open_hdul(path, fsspec_kwargs)
    remote = is_url(path)
    try:
        index, wcs, shape, scaling = _read_tile(hdul, hdu, path)
    except ValueError:
        hdul.close()
        raise
    except Exception as exc:  # a network failure while reading further headers
        hdul.close()
        if not remote:
            raise
        raise ValueError(f"`images`: {path} could not be read as FITS ({_one_line(exc)}). Received: {path!r}") \
            from None
    if not remote:
        hdul.close()
    return Tile(path, index, wcs, shape, *_orientation(wcs, shape), _scaling=scaling, _hdul=hdul if remote else None,
                version=version, fsspec_kwargs=fsspec_kwargs if remote else None)


def _half_extent(tile: Tile, grid: ModelGrid) -> tuple[float, float]:
    """Half width of the model grid's footprint along the tile's x and y, in tile pixels."""
    half = grid.size * grid.pixel_scale / 3600 / 2  # degrees
    to_pixels = np.linalg.inv(tile.wcs.pixel_scale_matrix)
    corners = np.array([[-half, -half], [-half, half], [half, -half], [half, half]])
    offsets = corners @ to_pixels.T
    return float(np.abs(offsets[:, 0]).max()), float(np.abs(offsets[:, 1]).max())


def locate_sources(coords: SkyCoord, tiles: list[Tile], grid: ModelGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """For each source, the tile to cut it from, its pixel position there, and whether the cutout fits whole.

    A source is held by the tiles whose area contains its position; among
    them, those that hold its whole cutout come first, then the one where it
    lies farthest from an edge.

    Returns
    -------
    tile_index : numpy.ndarray of int
        Index in ``tiles``; -1 where no tile holds the source.
    x, y : numpy.ndarray of float
        0-based pixel position in that tile (NaN for -1).
    whole : numpy.ndarray of bool
        Whether the whole cutout lies inside that tile.
    """
    n = len(coords)
    best = np.full(n, -np.inf)
    index = np.full(n, -1)
    x_out, y_out = np.full(n, np.nan), np.full(n, np.nan)
    whole = np.zeros(n, dtype=bool)
    for k, tile in enumerate(tiles):
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore")  # positions far from the projection's centre give NaN
            x, y = (np.asarray(v, dtype=float) for v in tile.wcs.world_to_pixel(coords))
        ny, nx = tile.shape
        inside = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        hx, hy = _half_extent(tile, grid)
        slack = np.minimum.reduce([x + 0.5 - hx, nx - 0.5 - x - hx, y + 0.5 - hy, ny - 0.5 - y - hy])
        better = inside & (slack > best)
        index[better], best[better], x_out[better], y_out[better] = k, slack[better], x[better], y[better]
        whole[better] = slack[better] >= -1e-9
    return index, x_out, y_out, whole
