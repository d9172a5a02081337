"""gamornet.cutouts: catalogue formats and columns, integer and multi-extension tiles, other projections, mosaics
cut into tiles, and where the source lies in its cutout."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from gamornet.cutouts import make_cutouts
from gamornet.cutouts.catalog import DEC_NAMES, ID_NAMES, RA_NAMES, catalog_positions, load_catalog

import helpers
from helpers import field, sky_offsets, tan_wcs, write_tile

RA0, DEC0 = 150.0, 2.0
SIZE, SCALE = 31, 0.4  # the grid: 31 x 31 at 0.4"/px
GRID = dict(pixel_scale=SCALE, size=SIZE, progress=False)
#: Offsets (arcsec) of the sources of the plain field: at least 16" apart, at arbitrary sub-pixel positions.
OFFSETS = [(-12.3, -11.1), (11.7, -12.4), (-11.2, 12.6), (12.9, 11.3), (0.23, 0.41)]


def _coords(offsets, ra0=RA0, dec0=DEC0) -> SkyCoord:
    return sky_offsets(offsets, ra0, dec0)


def centroid(image, x0=None, y0=None, radius=8):
    """Centroid of the round source near ``(x0, y0)`` (default the centre), in an aperture of 8 px."""
    return helpers.centroid(image, x0, y0, radius)


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """A field at the grid's scale (copy path), its catalogue as a Table, and the cutouts of that Table."""
    d = tmp_path_factory.mktemp("sky")
    coords = _coords(OFFSETS)
    shape = (120, 120)
    wcs = tan_wcs(RA0, DEC0, SCALE, shape, crpix=[60.3, 59.6])
    tile = write_tile(d / "tile.fits", wcs, field(wcs, shape, coords, SCALE))
    table = Table({"objid": [f"g{i}" for i in range(len(coords))], "RA": coords.ra.deg, "DEC": coords.dec.deg,
                   "mag": np.linspace(18, 20, len(coords))})
    reference, stack = make_cutouts(table, tile, **GRID)
    assert set(reference["cutout_flag"]) == {"ok"} and set(reference["cutout_method"]) == {"copy"}
    return {"dir": d, "tile": tile, "wcs": wcs, "shape": shape, "coords": coords, "table": table,
            "reference": reference, "stack": np.asarray(stack)}


# ---------------------------------------------------------------- catalogues


def _write(table: Table, path) -> str:
    table.write(path, format="votable" if str(path).endswith(".xml") else None, overwrite=True)
    return str(path)


@pytest.mark.parametrize("ending", ["ecsv", "csv", "fits", "xml", "parquet"])
def test_every_catalogue_format_gives_the_same_cutouts_and_rows(sky, ending):
    path = _write(sky["table"], sky["dir"] / f"catalog.{ending}")
    table, stack = make_cutouts(path, sky["tile"], **GRID)
    np.testing.assert_array_equal(np.asarray(stack), sky["stack"])
    reference = sky["reference"]
    assert table.colnames == reference.colnames
    assert [str(i) for i in table["cutout_id"]] == [str(i) for i in reference["cutout_id"]]
    for name in ("cutout_ra", "cutout_dec", "tile_x", "tile_y", "cutout_x", "cutout_y", "mag"):
        np.testing.assert_allclose(np.asarray(table[name], float), np.asarray(reference[name], float), rtol=0,
                                   atol=1e-12, err_msg=name)
    assert list(table["cutout_flag"]) == list(reference["cutout_flag"])
    assert table.meta["columns"] == {"ra": "RA", "dec": "DEC", "id": "objid"}


def _case(name: str, k: int) -> str:
    return (name.upper(), name.lower(), name.title())[k % 3]


def test_every_documented_column_name_is_found_in_any_case():
    ra, dec = np.array([150.1, 150.2]), np.array([2.1, -2.2])
    for k, name in enumerate(RA_NAMES):
        coords, _, used = catalog_positions(Table({"other": [0, 1], _case(name, k): ra, "dec": dec}))
        assert used["ra"] == _case(name, k) and used["dec"] == "dec"
        np.testing.assert_allclose(coords.ra.deg, ra, rtol=0, atol=1e-12)
    for k, name in enumerate(DEC_NAMES):
        coords, _, used = catalog_positions(Table({"RA": ra, _case(name, k + 1): dec}))
        assert used["dec"] == _case(name, k + 1)
        np.testing.assert_allclose(coords.dec.deg, dec, rtol=0, atol=1e-12)
    for k, name in enumerate(ID_NAMES):
        _, ids, used = catalog_positions(Table({"ra": ra, "dec": dec, _case(name, k): ["a", "b"]}))
        assert used["id"] == _case(name, k) and list(ids) == ["a", "b"]
    # the first name of the list wins; a given column wins over every name
    table = Table({"RAJ2000": ra + 1, "ra": ra, "DEJ2000": dec + 1, "Dec": dec, "number": [5, 6], "ID": [7, 8]})
    coords, ids, used = catalog_positions(table)
    assert used == {"ra": "ra", "dec": "Dec", "id": "ID"} and list(ids) == [7, 8]
    coords, ids, used = catalog_positions(table, "RAJ2000", "DEJ2000", "number")
    np.testing.assert_allclose(coords.ra.deg, ra + 1) and np.testing.assert_allclose(coords.dec.deg, dec + 1)
    assert list(ids) == [5, 6]
    assert catalog_positions(table, "raj2000", "dej2000")[2]["ra"] == "RAJ2000"  # unique up to case: taken


def test_units_and_sexagesimal_strings_in_files(sky):
    coords = sky["coords"]
    expected = sky["reference"]
    hours = Table({"objid": sky["table"]["objid"], "ra_h": coords.ra.hourangle * u.hourangle,
                   "dec_m": coords.dec.arcmin * u.arcmin})
    radians = Table({"objid": sky["table"]["objid"], "ra_h": coords.ra.rad * u.rad,
                     "dec_m": coords.dec.arcmin * u.arcmin})
    strings = Table({"objid": sky["table"]["objid"],
                     "ra_h": coords.ra.to_string(u.hourangle, sep=":", precision=6, pad=True),
                     "dec_m": coords.dec.to_string(u.deg, sep=":", precision=6, alwayssign=True, pad=True)})
    assert strings["dec_m"][0].startswith("+01:59:") and strings["ra_h"][0].startswith("09:59:")
    cases = [(hours, e) for e in ("ecsv", "xml", "parquet")] + [(radians, "fits")]  # FITS has no hourangle unit
    cases += [(strings, e) for e in ("ecsv", "csv", "fits", "xml", "parquet")]
    for k, (table, ending) in enumerate(cases):
        path = _write(table, sky["dir"] / f"units{k}.{ending}")
        result, stack = make_cutouts(path, sky["tile"], ra_column="ra_h", dec_column="dec_m", **GRID)
        # sexagesimal strings of 1e-6 s and 1e-6 arcsec: positions within 2e-5 arcsec
        np.testing.assert_allclose(result["cutout_ra"], expected["cutout_ra"], rtol=0, atol=1e-8, err_msg=path)
        np.testing.assert_allclose(result["cutout_dec"], expected["cutout_dec"], rtol=0, atol=1e-8, err_msg=path)
        np.testing.assert_array_equal(np.asarray(stack), sky["stack"], err_msg=path)
    assert load_catalog(str(sky["dir"] / "units2.parquet"))["ra_h"].unit == u.hourangle
    table = Table({"ra": ["10:00:00.5", "10:00:01.5"], "dec": ["+02:12:00", "-00:30:00.0"]})
    positions, ids, _ = catalog_positions(load_catalog(_write(table, sky["dir"] / "plain.csv")))
    np.testing.assert_allclose(positions.ra.deg, [150 + 0.5 * 15 / 3600, 150 + 1.5 * 15 / 3600], rtol=0, atol=1e-10)
    np.testing.assert_allclose(positions.dec.deg, [2.2, -0.5], rtol=0, atol=1e-10)
    assert list(ids) == [0, 1]  # no id column: row numbers


def test_cli_columns_given_and_bad_column_names(sky, tmp_path, capsys):
    from gamornet.cli import main

    table = Table({"name_x": sky["table"]["objid"], "x_pos": sky["coords"].ra.deg, "y_pos": sky["coords"].dec.deg})
    path = _write(table, tmp_path / "odd.fits")
    grid = ["--pixel-scale", str(SCALE), "--size", str(SIZE), "--quiet"]
    assert main(["cutout", path, sky["tile"], "-o", str(tmp_path / "out"), "--ra-column", "x_pos", "--dec-column",
                 "y_pos", "--id-column", "name_x", *grid]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "images.npy"), sky["stack"])
    written = Table.read(tmp_path / "out" / "catalog.ecsv")
    assert list(written["cutout_id"]) == list(sky["table"]["objid"])
    assert main(["cutout", path, sky["tile"], "-o", str(tmp_path / "rows"), "--ra-column", "x_pos", "--dec-column",
                 "y_pos", *grid]) == 0
    assert list(Table.read(tmp_path / "rows" / "catalog.ecsv")["cutout_id"]) == list(range(len(table)))
    for option, argument in (("--ra-column", "ra_column"), ("--dec-column", "dec_column"),
                             ("--id-column", "id_column")):
        capsys.readouterr()
        assert main(["cutout", path, sky["tile"], "-o", str(tmp_path / "bad"), "--ra-column", "x_pos",
                     "--dec-column", "y_pos", option, "nope", *grid]) == 2
        err = capsys.readouterr().err
        assert f"`{argument}`: no such column" in err and f"Received: {argument}='nope'" in err
        assert "x_pos" in err  # the columns there are
    assert main(["cutout", path, sky["tile"], "-o", str(tmp_path / "bad"), *grid]) == 2
    assert "`ra_column`" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "catalog.ecsv").exists()


# ---------------------------------------------------------------- tiles


def _int_tile(path, values: np.ndarray, wcs: WCS, dtype, bscale: float, bzero: float, blank=None) -> np.ndarray:
    """``values`` stored as integers ``dtype`` with BSCALE / BZERO (and BLANK pixels); returns the raw integers."""
    raw = np.round((values - bzero) / bscale).astype(dtype)
    keys = {"BSCALE": bscale, "BZERO": bzero}
    if blank is not None:
        raw[blank[0]] = blank[1]
        keys["BLANK"] = blank[1]
    fits.PrimaryHDU(raw, header=wcs.to_header()).writeto(path)
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:  # the raw integers kept
        hdul[0].header.update(keys)
    return raw


def test_integer_tiles_give_the_scaled_values(sky, tmp_path):
    values = field(sky["wcs"], sky["shape"], sky["coords"], SCALE) * 10 + 100.0  # 100 to ~280: within int16
    rows = sky["reference"]
    y, x = int(round(rows["tile_y"][4])), int(round(rows["tile_x"][4]))
    raw = _int_tile(tmp_path / "i16.fits", values, sky["wcs"], np.int16, 0.01, 150.0, ((y + 2, x - 3), -32768))
    with fits.open(tmp_path / "i16.fits", do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["BITPIX"] == 16 and hdul[0].data.dtype.kind == "i"
    scaled = np.where(raw == -32768, np.nan, raw.astype(np.float64) * 0.01 + 150.0).astype(np.float32)
    np.testing.assert_allclose(fits.getdata(tmp_path / "i16.fits"), scaled, rtol=1e-6)  # astropy agrees
    table, stack = make_cutouts(sky["table"], str(tmp_path / "i16.fits"), **GRID)
    assert set(table["cutout_method"]) == {"copy"}
    for k in range(len(table)):
        x0 = int(round(rows["tile_x"][k] - rows["cutout_x"][k]))
        y0 = int(round(rows["tile_y"][k] - rows["cutout_y"][k]))
        np.testing.assert_array_equal(stack[k, :, :, 0], scaled[y0:y0 + SIZE, x0:x0 + SIZE])
    assert np.isnan(stack[4, :, :, 0]).sum() == 1 and np.isnan(stack[4, 17, 12, 0])
    # unsigned 16-bit (BZERO = 32768), resampled: the same as a float tile of the same values
    raw = _int_tile(tmp_path / "u16.fits", values * 100 + 20000, sky["wcs"], np.int16, 1.0, 32768.0)
    unsigned = (raw.astype(np.float64) + 32768).astype(np.float32)
    assert fits.getdata(tmp_path / "u16.fits").dtype == np.uint16
    write_tile(tmp_path / "float.fits", sky["wcs"], unsigned)
    options = dict(pixel_scale=0.5, size=25, progress=False)
    from_int, a = make_cutouts(sky["table"], str(tmp_path / "u16.fits"), **options)
    from_float, b = make_cutouts(sky["table"], str(tmp_path / "float.fits"), **options)
    assert set(from_int["cutout_method"]) == {"resample"}
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.nanmax(a) > 32768


def test_image_in_a_later_hdu(sky, tmp_path):
    values = field(sky["wcs"], sky["shape"], sky["coords"], SCALE).astype(np.float32)
    noise = np.ones((7, 9), np.float32)
    header = sky["wcs"].to_header()
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(noise, name="MASK"),
                         fits.ImageHDU(values, header=header, name="SCI"),
                         fits.ImageHDU(values * 0 + 5, header=header, name="WHT")])
    hdus.writeto(tmp_path / "mef.fits")
    found, stack = make_cutouts(sky["table"], str(tmp_path / "mef.fits"), **GRID)  # the first 2-D one with a WCS
    np.testing.assert_array_equal(np.asarray(stack), sky["stack"])
    _, by_index = make_cutouts(sky["table"], str(tmp_path / "mef.fits"), hdu=2, **GRID)
    np.testing.assert_array_equal(np.asarray(by_index), sky["stack"])
    _, weights = make_cutouts(sky["table"], str(tmp_path / "mef.fits"), hdu="WHT", **GRID)
    assert np.all(np.asarray(weights) == 5)
    from gamornet.cli import main

    assert main(["cutout", _write(sky["table"], tmp_path / "c.ecsv"), str(tmp_path / "mef.fits"), "-o",
                 str(tmp_path / "o"), "--hdu", "SCI", "--pixel-scale", str(SCALE), "--size", str(SIZE), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "images.npy"), sky["stack"])
    with pytest.raises(ValueError, match="hdu"):
        make_cutouts(sky["table"], str(tmp_path / "mef.fits"), hdu="NOPE", **GRID)
    with pytest.raises(ValueError, match="no 2-D image with a celestial WCS"):
        make_cutouts(sky["table"], str(tmp_path / "mef.fits"), hdu=1, **GRID)


# ---------------------------------------------------------------- projections


def _projected_wcs(projection: str, scale: float, rotation: float, crpix) -> WCS:
    wcs = tan_wcs(RA0 - 8.0, DEC0 + 6.0, scale, (1, 1), rotation=rotation, crpix=crpix)
    wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.set()
    return wcs


@pytest.mark.parametrize("projection, rotation", [("SIN", 27.0), ("ZEA", -61.0), ("TAN", 0.0)])
def test_other_projections_centred_and_flux_kept(tmp_path, projection, rotation):
    """A tile of a projection centred 10 degrees away (so its pixels are sheared there), rotated, at 0.3"/px."""
    shape, scale = (170, 170), 0.3
    coords = _coords([(-9.3, -8.2), (8.6, -9.7), (-7.9, 9.1), (9.4, 8.8), (0.37, -0.71)])
    probe = _projected_wcs(projection, scale, rotation, [0, 0])
    x, y = probe.world_to_pixel(SkyCoord(RA0, DEC0, unit="deg"))
    wcs = _projected_wcs(projection, scale, rotation, [-float(x) + 85.4, -float(y) + 84.7])
    assert wcs.wcs.ctype[0].endswith(projection)
    images = [field(wcs, shape, coords[k], scale) for k in range(len(coords))]
    tile = write_tile(tmp_path / "tile.fits", wcs, np.sum(images, axis=0))
    table, stack = make_cutouts(Table({"ra": coords.ra.deg, "dec": coords.dec.deg}), tile, **GRID)
    assert set(table["cutout_method"]) == {"resample"} and set(table["cutout_flag"]) == {"ok"}
    x, y = wcs.world_to_pixel(coords[4])
    steps = [wcs.pixel_to_world(x + dx, y + dy).separation(coords[4]).arcsec for dx, dy in ((1, 0), (0, 1))]
    assert max(abs(s / scale - 1) for s in steps) > 0.003  # the grid there is not the reference pixel's
    for k in range(len(coords)):
        cx, cy = centroid(stack[k, :, :, 0])
        assert abs(cx - (SIZE - 1) / 2) < 0.1 and abs(cy - (SIZE - 1) / 2) < 0.1, (k, cx, cy)
        assert abs(stack[k, :, :, 0].sum() / images[k].sum() - 1) < 0.01


# ---------------------------------------------------------------- mosaics


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 240 x 240 mosaic at 0.4"/px and its 4 tiles of 150 x 150 overlapping by 60 pixels, each with its WCS."""
    d = tmp_path_factory.mktemp("mosaic")
    shape = (240, 240)
    wcs = tan_wcs(RA0, DEC0, SCALE, shape, crpix=[120.3, 119.8])
    positions = [(30.2, 31.7), (205.6, 40.1), (44.4, 210.3), (211.9, 207.2), (120.6, 60.3), (60.8, 121.2),
                 (113.3, 127.6), (131.7, 118.4), (97.4, 101.9), (142.2, 140.6), (180.3, 125.5), (125.1, 185.9)]
    coords = wcs.pixel_to_world(*np.array(positions).T)
    image = field(wcs, shape, coords, SCALE, flux=500.0) + np.random.default_rng(3).normal(0, 0.01, shape)
    paths = {"mosaic": write_tile(d / "mosaic.fits", wcs, image)}
    corners = [(0, 0), (90, 0), (0, 90), (90, 90)]
    for k, (x0, y0) in enumerate(corners):
        part = wcs.deepcopy()
        part.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0])
        paths[f"t{k}"] = write_tile(d / f"t{k}.fits", part, image[y0:y0 + 150, x0:x0 + 150])
    catalog = Table({"id": np.arange(len(positions)), "ra": coords.ra.deg, "dec": coords.dec.deg})
    return {"paths": paths, "catalog": catalog, "positions": np.array(positions), "corners": corners}


def _farthest_tile(x: float, y: float, corners) -> int:
    margins = [min(x - x0 + 0.5, x0 + 149.5 - x, y - y0 + 0.5, y0 + 149.5 - y) for x0, y0 in corners]
    return int(np.argmax(margins))


@pytest.mark.parametrize("grid", [dict(pixel_scale=SCALE, size=SIZE), dict(pixel_scale=0.5, size=25)],
                         ids=["copy", "resample"])
def test_tiles_of_a_mosaic_give_its_cutouts(mosaic, grid):
    tiles = [mosaic["paths"][f"t{k}"] for k in (3, 1, 0, 2)]  # not in the order of the corners
    whole, expected = make_cutouts(mosaic["catalog"], mosaic["paths"]["mosaic"], progress=False, **grid)
    table, stack = make_cutouts(mosaic["catalog"], tiles, progress=False, **grid)
    assert set(table["cutout_flag"]) == {"ok"} and set(whole["cutout_flag"]) == {"ok"}
    method = "copy" if grid["pixel_scale"] == SCALE else "resample"
    assert set(table["cutout_method"]) == {method}
    for k, (x, y) in enumerate(mosaic["positions"]):
        corner = _farthest_tile(x, y, mosaic["corners"])
        assert table["tile"][k] == f"t{corner}.fits", k
        x0, y0 = mosaic["corners"][corner]
        assert abs(table["tile_x"][k] - (x - x0)) < 1e-6 and abs(table["tile_y"][k] - (y - y0)) < 1e-6
    in_four = [k for k, (x, y) in enumerate(mosaic["positions"]) if 90 <= x < 150 and 90 <= y < 150]
    assert len({table["tile"][k] for k in in_four}) == 4  # in the overlap of all four: each tile chosen once
    if method == "copy":
        np.testing.assert_array_equal(np.asarray(stack), np.asarray(expected))
        np.testing.assert_allclose(table["cutout_x"], whole["cutout_x"], rtol=0, atol=1e-9)
    else:
        peak = float(np.max(expected))
        np.testing.assert_allclose(np.asarray(stack), np.asarray(expected), rtol=1e-5, atol=1e-6 * peak)


# ---------------------------------------------------------------- centring


@pytest.mark.parametrize("size", [31, 30])
def test_copy_path_records_the_exact_position(sky, tmp_path, size):
    near_edge = _coords([(-20.4, 3.3), (2.2, 21.7)])  # cutouts running off the tile
    coords = SkyCoord([*sky["coords"], *near_edge])
    image = field(sky["wcs"], sky["shape"], coords, SCALE)
    tile = write_tile(tmp_path / "tile.fits", sky["wcs"], image)
    catalog = Table({"ra": coords.ra.deg, "dec": coords.dec.deg})
    table, stack = make_cutouts(catalog, tile, tmp_path / "out", pixel_scale=SCALE, size=size, fits=True,
                                progress=False)
    assert set(table["cutout_method"]) == {"copy"} and list(table["cutout_flag"][-2:]) == ["partial"] * 2
    centre = (size - 1) / 2
    x_tile, y_tile = sky["wcs"].world_to_pixel(coords)
    for k in range(len(coords)):
        cut_x, cut_y = table["cutout_x"][k], table["cutout_y"][k]
        assert abs(cut_x - centre) <= 0.5 and abs(cut_y - centre) <= 0.5
        # the cutout's pixels are the tile's: the offset is whole pixels, the remainder is recorded
        offset = (x_tile[k] - cut_x, y_tile[k] - cut_y)
        assert np.allclose(offset, np.round(offset), rtol=0, atol=1e-9)
        if k < len(sky["coords"]):
            cx, cy = centroid(stack[k, :, :, 0], cut_x, cut_y)
            assert abs(cx - cut_x) < 0.1 and abs(cy - cut_y) < 0.1, (k, cx, cy, cut_x, cut_y)
        with fits.open(tmp_path / "out" / "fits" / f"cutout_{k:06d}.fits") as hdul:
            px, py = WCS(hdul[0].header).world_to_pixel(coords[k])
        assert abs(px - cut_x) < 1e-6 and abs(py - cut_y) < 1e-6
    offsets = np.hypot(table["cutout_x"] - centre, table["cutout_y"] - centre)
    assert offsets.max() > 0.1  # sub-pixel positions differ from the centre: the recorded ones are not the centre


def test_resample_path_centres_an_even_grid(sky):
    table, stack = make_cutouts(sky["table"], sky["tile"], pixel_scale=0.3, size=40, progress=False)
    assert set(table["cutout_method"]) == {"resample"}
    assert np.all(table["cutout_x"] == 19.5) and np.all(table["cutout_y"] == 19.5)
    for k in range(len(table)):
        cx, cy = centroid(stack[k, :, :, 0], radius=10)
        assert abs(cx - 19.5) < 0.1 and abs(cy - 19.5) < 0.1
