"""gamornet.cutouts on the headers of real surveys and on one real survey image (astropy's test data).

- Images with the real headers of a Palomar Transient Factory R-band chip (P48, TAN-SIP; and the same field with a
  TPV distortion), a Spitzer IRAC frame (TAN-SIP) and an HST ACS/WFC chip (TAN-SIP) hold round Gaussian galaxies
  at known RA / Dec.  Each image is a corner of the detector (the header with a smaller NAXIS1 / NAXIS2 and its
  own CRPIX, so its WCS is the survey's), or the whole IRAC frame.  Cut onto the SDSS grid (0.396"/px) or the
  CANDELS grid (0.06"/px), every source is resampled, centred within 0.1 px and keeps its flux within 1%; at every
  source the distortion moves the position by more than that tolerance (checked), so a cutter that ignored it
  would fail.  The scale and orientation the cutter takes for an image are those at the image, distortion included.
- ``predict_files`` on the PTF image with a model whose card says SDSS g at 0.396"/px: one warning naming both
  pixel scales and the bands; ``strict=True`` raises before anything is written.
- The real pixels of a Digitized Sky Survey image (UK 48-inch Schmidt, 1.7"/px): its plate solution turns it by
  1.5 degrees, so it is resampled even at its own scale; cut from two overlapping tiles, it gives the cutouts of
  the whole image (resampled: to one float32 unit in the last place; copied, with a north-up header on the same
  pixels: exactly).
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.utils.data import get_pkg_data_filename
from astropy.wcs import WCS

from gamornet.cutouts import make_cutouts, model_grid
from gamornet.cutouts.grid import grid_wcs
from gamornet.cutouts.tiles import open_tile

from helpers import centroid, field

# The real headers carry deprecated keywords (RADECSYS) and DSS dates that astropy fixes as it reads them.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

#: Total flux of each galaxy.
FLUX = 1000.0
#: Aperture radius of the flux test, in sigmas: the same sky aperture in the image and the cutout, so that only the
#: pixels along its edge differ, where the Gaussian holds exp(-8) ~ 3e-4 of its peak.
APERTURE = 4.0
#: Tolerance of the centring (cutout pixels) and of the flux ratio.
CENTRING, FLUX_TOLERANCE = 0.1, 0.01


def _data(name: str) -> str:
    return get_pkg_data_filename(f"data/{name}", package="astropy.wcs.tests")


def _real_header(name: str) -> fits.Header:
    """The header of astropy's test file ``name``: a ``.hdr`` text file of 80-character cards, or a FITS file's SCI."""
    if name.endswith(".hdr"):
        with open(_data(name)) as f:
            return fits.Header.fromstring(f.read())
    with fits.open(_data(name)) as hdul:
        return hdul["SCI", 1].header.copy()


def _local(wcs: WCS, x: float, y: float) -> tuple[float, float]:
    """Pixel scale (arcsec, mean of both axes) and angle of +y east of north (degrees) at pixel ``(x, y)``."""
    here = wcs.pixel_to_world(x, y)
    steps = [here.spherical_offsets_to(wcs.pixel_to_world(x + dx, y + dy)) for dx, dy in ((0.5, 0), (0, 0.5))]
    (ex, nx), (ey, ny) = [(2 * east.arcsec, 2 * north.arcsec) for east, north in steps]
    return (np.hypot(ex, nx) + np.hypot(ey, ny)) / 2, float(np.degrees(np.arctan2(ey, ny)))


@dataclass
class RealField:
    """An image with a real survey header and galaxies at known positions, and the grid it is cut onto."""

    name: str
    path: str
    wcs: WCS
    undistorted: WCS
    coords: SkyCoord
    scale: float  # arcsec / px at the image's centre
    sigma: float  # arcsec
    grid: dict


def _real_field(directory, name: str, header: fits.Header, size: int, pixels, sigma: float, grid: dict,
                undistorted: WCS | None = None) -> RealField:
    """An image of ``size`` x ``size`` pixels (the detector's corner) with ``header``, galaxies at pixels ``pixels``."""
    header = header.copy()
    header["NAXIS1"] = header["NAXIS2"] = size
    wcs = WCS(header, naxis=2)
    if undistorted is None:
        undistorted = wcs.deepcopy()
        undistorted.sip = None
    pixels = np.asarray(pixels, dtype=float)
    coords = wcs.pixel_to_world(pixels[:, 0], pixels[:, 1])
    scale = _local(wcs, (size - 1) / 2, (size - 1) / 2)[0]
    image = field(wcs, (size, size), coords, scale, flux=FLUX, sigma=sigma)
    path = str(directory / f"{name}.fits")
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(path)
    return RealField(name, path, wcs, undistorted, coords, scale, sigma, grid)


@pytest.fixture(scope="module")
def ptf_sip(tmp_path_factory) -> RealField:
    """PTF R band, CCD 5 (reference pixel off the chip, far from this corner), TAN-SIP: 800 x 800 onto SDSS."""
    pixels = [(200.3, 250.7), (560.2, 180.9), (380.6, 600.4), (650.1, 640.8)]
    return _real_field(tmp_path_factory.mktemp("ptf_sip"), "ptf_sip", _real_header("siponly.hdr"), 800, pixels,
                       sigma=2.5, grid={"survey": "SDSS"})


@pytest.fixture(scope="module")
def ptf_tpv(tmp_path_factory) -> RealField:
    """The same PTF field with a TPV distortion (TAN with PV terms): 800 x 800 onto SDSS."""
    header = _real_header("tpvonly.hdr")
    plain = header.copy()  # the TAN of the same CRPIX, CRVAL and CD, without the PV polynomial
    for key in [k for k in plain if k.startswith("PV")]:
        del plain[key]
    plain["CTYPE1"], plain["CTYPE2"] = "RA---TAN", "DEC--TAN"
    pixels = [(210.7, 240.2), (570.4, 190.3), (390.9, 610.5), (640.2, 650.6)]
    return _real_field(tmp_path_factory.mktemp("ptf_tpv"), "ptf_tpv", header, 800, pixels, sigma=2.5,
                       grid={"survey": "SDSS"}, undistorted=WCS(plain, naxis=2))


@pytest.fixture(scope="module")
def irac(tmp_path_factory) -> RealField:
    """Spitzer IRAC channel 1 (rotated 64 degrees), TAN-SIP, the whole 256 x 256 frame onto SDSS; the sources near
    the corners where the SIP terms are largest."""
    pixels = [(204.6, 43.3), (43.8, 205.2), (190.2, 60.7), (60.5, 190.4)]
    return _real_field(tmp_path_factory.mktemp("irac"), "irac", _real_header("irac_sip.hdr"), 256, pixels,
                       sigma=3.0, grid={"survey": "SDSS"})


@pytest.fixture(scope="module")
def acs(tmp_path_factory) -> RealField:
    """HST ACS/WFC F606W chip 1 (rotated 155 degrees), TAN-SIP: 800 x 800 of its 4096 x 2048 onto CANDELS."""
    pixels = [(150.3, 160.8), (620.6, 140.1), (420.2, 450.5), (660.9, 650.3)]
    return _real_field(tmp_path_factory.mktemp("acs"), "acs", _real_header("j94f05bgq_flt.fits"), 800, pixels,
                       sigma=0.25, grid={"survey": "CANDELS"})


def _aperture_sum(image: np.ndarray, wcs: WCS, centre: SkyCoord, radius: float, x: float, y: float) -> float:
    """Sum of the pixels of ``image`` whose centres lie within ``radius`` arcsec of ``centre`` (near pixel x, y)."""
    reach = int(np.ceil(1.2 * radius / _local(wcs, x, y)[0])) + 2  # pixels: beyond the aperture, whatever the shear
    rows, columns = (slice(max(0, round(v) - reach), min(n, round(v) + reach + 1)) for v, n in zip((y, x), image.shape))
    yy, xx = np.mgrid[rows, columns]
    inside = wcs.pixel_to_world(xx, yy).separation(centre).arcsec < radius
    return float(np.sum(image[yy[inside], xx[inside]], dtype=np.float64))


@pytest.mark.parametrize("name", ["ptf_sip", "ptf_tpv", "irac", "acs"])
def test_real_headers_resampled_centred_and_flux_kept(request, name):
    real: RealField = request.getfixturevalue(name)
    grid = model_grid(**real.grid)
    # the distortion moves every source by more than the centring tolerance, in the image's and the grid's pixels
    distorted = np.array(real.wcs.world_to_pixel(real.coords))
    plain = np.array(real.undistorted.world_to_pixel(real.coords))
    shift = np.hypot(*(distorted - plain))
    assert shift.min() > 0.1 and (shift * real.scale / grid.pixel_scale).min() > 2 * CENTRING, shift
    # the scale and orientation the cutter takes for the image are those on the sky at its centre, not those of the
    # reference pixel (4000 px off the PTF chip, where the SIP and TPV terms make the scale 1% larger)
    tile, (scale, angle) = open_tile(real.path), _local(real.wcs, *(np.array(real.wcs.pixel_shape) - 1) / 2)
    assert abs(tile.scale / scale - 1) < 1e-4 and abs((tile.angle - angle + 180) % 360 - 180) < 0.01
    catalog = Table({"ra": real.coords.ra.deg, "dec": real.coords.dec.deg})
    table, stack = make_cutouts(catalog, real.path, progress=False, **real.grid)
    assert set(table["cutout_flag"]) == {"ok"} and set(table["cutout_method"]) == {"resample"}
    with fits.open(real.path) as hdul:
        image = hdul[0].data.astype(np.float64)
    radius = APERTURE * real.sigma
    for k, coord in enumerate(real.coords):
        cut = np.asarray(stack[k, :, :, 0], dtype=np.float64)
        cx, cy = centroid(cut, radius=radius / grid.pixel_scale)
        expected = _aperture_sum(image, real.wcs, coord, radius, *distorted[:, k])
        ratio = _aperture_sum(cut, grid_wcs(coord.ra.deg, coord.dec.deg, grid), coord, radius, grid.centre,
                              grid.centre) / expected
        print(f"{name} source {k}: distortion {shift[k]:.3g} px; centroid offset ({cx - grid.centre:+.4f}, "
              f"{cy - grid.centre:+.4f}) px; aperture flux ratio {ratio:.5f}")
        assert abs(cx - grid.centre) < CENTRING and abs(cy - grid.centre) < CENTRING, (k, cx, cy)
        assert abs(ratio - 1) < FLUX_TOLERANCE, (k, ratio)
        assert expected > (1 - 2 * np.exp(-APERTURE**2 / 2)) * FLUX  # the aperture holds the galaxy


# ---------------------------------------------------------------- predict_files: the headers against the model card

MODEL_SIZE = 31  # the carded model's input: 31 x 31 at SDSS's 0.396"/px


@pytest.fixture(scope="module")
def carded_model(tmp_path_factory) -> str:
    """A narrow model of 31 x 31 whose card says SDSS g at 0.396"/px."""
    from gamornet.published.cards import ModelCard, write_card_entry

    from helpers import NARROW_WIDTHS, saved_keras_model

    directory = tmp_path_factory.mktemp("carded")
    shape = (MODEL_SIZE, MODEL_SIZE, 1)
    carded = str(directory / "carded.keras")
    shutil.copy(saved_keras_model(directory, shape, seed=1, widths=NARROW_WIDTHS), carded)
    write_card_entry(carded, ModelCard("carded", band="SDSS g", pixel_scale_arcsec=0.396, shape=shape))
    return carded


def test_predict_files_on_the_ptf_image_warns_once_of_scale_and_band(ptf_sip, carded_model, tmp_path):
    from gamornet.predict import predict_files
    from gamornet.predict.headers import InputMismatchError, InputMismatchWarning

    catalog = str(tmp_path / "ptf.ecsv")
    Table({"ra": ptf_sip.coords.ra.deg, "dec": ptf_sip.coords.dec.deg}).write(catalog)
    options = dict(catalog=catalog, images=[ptf_sip.path], model=carded_model, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = predict_files(**options)
    assert len(table) == len(ptf_sip.coords) and set(table["cutout_method"]) == {"resample"}
    mismatches = [w for w in caught if issubclass(w.category, InputMismatchWarning)]
    assert len(mismatches) == 1
    text = str(mismatches[0].message)
    scale = open_tile(ptf_sip.path).scale  # the PTF's ~1.01"/px at this corner of the chip
    assert 1.0 < scale < 1.04
    assert f'pixel scale {scale:.4g}"/px (survey image ptf_sip.fits) differs from the model\'s 0.396"/px' in text
    assert 'resampled from it to 0.396"/px' in text
    assert "band 'R' (survey image ptf_sip.fits) differs from the model's SDSS g" in text
    output = tmp_path / "strict.ecsv"
    with pytest.raises(InputMismatchError, match="(?s)pixel scale.*band 'R'.*Received: strict=True"):
        predict_files(output=str(output), strict=True, **options)
    assert sorted(os.listdir(tmp_path)) == ["ptf.ecsv"]  # nothing written


# ---------------------------------------------------------------- a real DSS image cut from two overlapping tiles

DSS = "dss.14.29.56-62.41.05.fits.gz"
#: Columns of the two tiles (the image is 100 x 100): they overlap on columns 34 to 65.
TILE_COLUMNS = ((0, 66), (34, 100))
#: Pixel positions (0-based) of the cuts: two in the overlap (each nearer the middle of another tile), four elsewhere;
#: all at least 13 px inside the tile they are cut from, so that even the 1.7"/px resampling (its footprint and
#: margin reach 13 px) reads the same pixels from the tile as from the whole image.
DSS_POSITIONS = [(48.7, 33.7), (50.6, 61.2), (14.3, 20.4), (30.8, 70.2), (85.2, 47.5), (70.9, 80.6)]
DSS_SIZE = 15


def _write_dss(path, header: fits.Header, pixels: np.ndarray) -> str:
    fits.PrimaryHDU(pixels, header=header).writeto(path, output_verify="silentfix")  # the SKEW card fixed
    return str(path)


@pytest.fixture(scope="module")
def dss(tmp_path_factory) -> dict:
    """The DSS image (its int16 pixels, its plate solution), two overlapping tiles of it, and the same pixels with a
    north-up TAN header (and its tiles)."""
    directory = tmp_path_factory.mktemp("dss")
    with warnings.catch_warnings(), fits.open(_data(DSS)) as hdul:
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # its SKEW card, fixed as it is read
        header, pixels = hdul[0].header.copy(), hdul[0].data.copy()
    wcs = WCS(header, naxis=2)
    north_up = fits.Header()
    ny, nx = pixels.shape
    centre = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    scale = _local(wcs, (nx - 1) / 2, (ny - 1) / 2)[0] / 3600
    north_up.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=(nx + 1) / 2, CRPIX2=(ny + 1) / 2,
                    CRVAL1=centre.ra.deg, CRVAL2=centre.dec.deg, CD1_1=-scale, CD1_2=0.0, CD2_1=0.0, CD2_2=scale)
    out = {"plate": {"whole": _data(DSS), "tiles": [], "wcs": wcs},
           "north_up": {"whole": _write_dss(directory / "north.fits", north_up, pixels), "tiles": []}}
    for x0, x1 in TILE_COLUMNS:
        plate = header.copy()
        # astropy reads the plate solution (PLTRAH..., AMDX, AMDY), whose sub-image origin is CNPIX1 / CNPIX2;
        # CRPIX1 (of the approximate CD matrix the header also has) is shifted too, for readers of that one
        plate["CNPIX1"], plate["CRPIX1"] = header["CNPIX1"] + x0, header["CRPIX1"] - x0
        out["plate"]["tiles"].append(_write_dss(directory / f"plate_{x0}.fits", plate, pixels[:, x0:x1]))
        plain = north_up.copy()
        plain["CRPIX1"] = north_up["CRPIX1"] - x0
        out["north_up"]["tiles"].append(_write_dss(directory / f"north_{x0}.fits", plain, pixels[:, x0:x1]))
    position = wcs.pixel_to_world(57.3, 41.9)  # a tile's WCS is the whole image's, shifted by its columns
    for path, (x0, _) in zip(out["plate"]["tiles"], TILE_COLUMNS):
        x, y = WCS(fits.getheader(path), naxis=2).world_to_pixel(position)
        assert abs(x + x0 - 57.3) < 1e-6 and abs(y - 41.9) < 1e-6
    positions = np.array(DSS_POSITIONS)
    for key, frame in (("plate", wcs), ("north_up", WCS(north_up))):
        coords = frame.pixel_to_world(positions[:, 0], positions[:, 1])
        out[key]["catalog"] = Table({"ra": coords.ra.deg, "dec": coords.dec.deg})
    return out


# The DSS file's SKEW card is not FITS standard: astropy fixes it (with a warning) as it reads the header.
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_dss_plate_is_turned_beyond_the_copy_tolerance(dss):
    """At this image the DSS plate solution turns +y by 1.5 degrees from north (the header's approximate CD matrix
    agrees: CROTA2 = -1.54), though its linear part at the plate's centre, far off the image, is turned by 0.2
    degree only: the cutter must measure it at the image, and not copy these pixels onto a north-up grid."""
    from gamornet.cutouts.grid import ANGLE_TOLERANCE, SCALE_TOLERANCE

    wcs = dss["plate"]["wcs"]
    scale, angle = _local(wcs, 49.5, 49.5)
    reference = np.degrees(np.arctan2(wcs.pixel_scale_matrix[0, 1], wcs.pixel_scale_matrix[1, 1]))
    assert abs(reference) < ANGLE_TOLERANCE and 1.0 < angle < 2.0
    assert abs(scale / 1.7 - 1) < SCALE_TOLERANCE  # the scale alone would let the pixels be copied
    tile = open_tile(dss["plate"]["whole"])
    assert abs(tile.angle - angle) < 0.01 and abs(tile.scale / scale - 1) < 1e-4 and tile.east_left
    assert not tile.matches(model_grid(pixel_scale=1.7, size=DSS_SIZE))


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")  # the SKEW card, as above
@pytest.mark.parametrize("case, pixel_scale, method", [("plate", 1.7, "resample"), ("plate", 1.0, "resample"),
                                                       ("north_up", 1.7, "copy")])
def test_dss_tiles_give_the_cutouts_of_the_whole_image(dss, case, pixel_scale, method):
    # plate, 1.7"/px: the DSS pixel scale, but the plate solution turns the image by 1.5 degrees here, beyond the
    # 0.5 degree of the copy path: resampled.  plate, 1.0"/px: resampled.  north_up: the same pixels with a
    # north-up TAN header at their scale: copied.
    catalog, whole, tiles = dss[case]["catalog"], dss[case]["whole"], dss[case]["tiles"]
    grid = dict(pixel_scale=pixel_scale, size=DSS_SIZE, progress=False)
    expected_table, expected = make_cutouts(catalog, whole, **grid)
    table, stack = make_cutouts(catalog, tiles, **grid)
    assert set(table["cutout_flag"]) == {"ok"} and set(expected_table["cutout_flag"]) == {"ok"}
    assert set(table["cutout_method"]) == {method} and set(expected_table["cutout_method"]) == {method}
    names = [os.path.basename(t) for t in tiles]
    assert list(table["tile"]) == [names[0], names[1], names[0], names[0], names[1], names[1]]
    expected, stack = np.asarray(expected), np.asarray(stack)
    assert np.isfinite(stack).all() and np.ptp(stack) > 100  # real sky: stars and plate grain
    if method == "copy":
        np.testing.assert_array_equal(stack, expected)
        np.testing.assert_allclose(table["cutout_x"], expected_table["cutout_x"], rtol=0, atol=1e-9)
    else:
        # The tile and the whole image hand the resampling the same pixels (int16, exact in float64) with WCSs that
        # differ only by the tile's whole-pixel offset: in exact arithmetic the results are equal.  In float64 the
        # pixel positions then differ by rounding alone, ~1e-16 of coordinates of ~5e3 px (the plate's reference
        # pixel lies off the image), ~1e-12 px, which changes the sums by ~1e-12 relative; the one rounding to
        # float32 at the end then gives the same value, or the next float32 where a sum lies that close to the
        # midpoint between two: at most one unit in the last place.
        np.testing.assert_array_max_ulp(stack, expected, maxulp=1)
