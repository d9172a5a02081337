"""gamornet.cutouts: fields with real TAN WCSs (rotated too), Gaussian galaxies at known RA / Dec, several tiles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from gamornet.cutouts import make_cutouts, model_grid
from gamornet.cutouts.catalog import catalog_positions

from helpers import centroid, field, sky_offsets, tan_wcs, write_tile

RA0, DEC0 = 150.0, 2.0
SIZE = 31  # grid of the tests: 31 x 31 at 0.4"/px
SCALE = 0.4


def sources() -> SkyCoord:
    """Six sources at least 16" apart, at arbitrary sub-pixel positions."""
    offsets = np.array([(-12.3, -11.1), (11.7, -12.4), (-11.2, 12.6), (12.9, 11.3), (0.23, 0.41), (0.61, -23.5)])
    return sky_offsets(offsets, RA0, DEC0)


@pytest.fixture(scope="module")
def coords():
    return sources()


@pytest.fixture(scope="module")
def fields(tmp_path_factory, coords):
    """Two overlapping tiles at the grid's scale, north up; a rotated tile at 0.25"/px; a catalogue."""
    d = tmp_path_factory.mktemp("fields")
    shape = (160, 160)
    west = tan_wcs(RA0, DEC0, SCALE, shape, crpix=[60.3, 80.7])  # covers the sources, overlapping `east`
    east = tan_wcs(RA0, DEC0, SCALE, shape, crpix=[100.3, 80.7])  # same pixel grid, shifted by 40 columns
    rot = tan_wcs(RA0, DEC0, 0.25, (400, 400), rotation=33.0)
    paths = {
        "west": write_tile(d / "west.fits", west, field(west, shape, coords, SCALE)),
        "east": write_tile(d / "east.fits", east, field(east, shape, coords, SCALE)),
        "rot": write_tile(d / "rot.fits", rot, field(rot, (400, 400), coords, 0.25)),
    }
    table = Table({"ID": np.arange(100, 100 + len(coords)), "RA": coords.ra.deg, "DEC": coords.dec.deg,
                   "mag": np.linspace(18, 20, len(coords))})
    table.write(d / "cat.ecsv")
    paths["catalog"] = str(d / "cat.ecsv")
    return paths


def test_copy_path_centred_and_identical_from_two_tiles(fields, coords):
    grid = dict(pixel_scale=SCALE, size=SIZE, progress=False)
    t_west, west = make_cutouts(fields["catalog"], [fields["west"]], **grid)
    t_east, east = make_cutouts(fields["catalog"], [fields["east"]], **grid)
    assert list(t_west["cutout_method"]) == ["copy"] * len(coords) and set(t_west["cutout_flag"]) == {"ok"}
    np.testing.assert_array_equal(west, east)  # the same pixels from either tile
    np.testing.assert_allclose(t_east["tile_x"], t_west["tile_x"] + 40, atol=1e-6)
    for k in range(len(coords)):
        cx, cy = centroid(west[k, :, :, 0], t_west["cutout_x"][k], t_west["cutout_y"][k])
        assert abs(cx - t_west["cutout_x"][k]) < 0.05 and abs(cy - t_west["cutout_y"][k]) < 0.05
        assert abs(t_west["cutout_x"][k] - (SIZE - 1) / 2) <= 0.5
    assert list(t_west["cutout_id"]) == list(range(100, 100 + len(coords))) and "mag" in t_west.colnames


def test_resampled_cutouts_centred_and_flux_conserved(fields, coords):
    table, stack = make_cutouts(fields["catalog"], fields["rot"], pixel_scale=SCALE, size=SIZE, progress=False)
    assert set(table["cutout_method"]) == {"resample"} and set(table["cutout_flag"]) == {"ok"}
    for k in range(len(coords)):
        cx, cy = centroid(stack[k, :, :, 0])
        assert abs(cx - (SIZE - 1) / 2) < 0.1 and abs(cy - (SIZE - 1) / 2) < 0.1
    with fits.open(fields["rot"]) as hdul:
        original, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
    yy, xx = np.mgrid[:400, :400]
    for k in range(len(coords)):
        x, y = wcs.world_to_pixel(coords[k])
        # aperture of radius 4" well inside the cutout (6"): same sky region in both grids
        inside = np.hypot(xx - x, yy - y) * 0.25 < 4
        cut = stack[k, :, :, 0]
        gy, gx = np.mgrid[:SIZE, :SIZE]
        inside_cut = np.hypot(gx - 15, gy - 15) * SCALE < 4
        assert abs(cut[inside_cut].sum() / original[inside].sum() - 1) < 0.01


def test_best_tile_and_flags(tmp_path, coords):
    shape = (80, 80)
    far = SkyCoord(RA0 + 0.5, DEC0, unit="deg")
    near_edge = SkyCoord(RA0 - 14 / 3600, DEC0, unit="deg")
    wcs = tan_wcs(RA0, DEC0, SCALE, shape)
    image = field(wcs, shape, SkyCoord([RA0], [DEC0], unit="deg"), SCALE)
    image[:, :27] = np.nan  # a NaN region along the east edge (x small = east)
    nan_tile = write_tile(tmp_path / "nan.fits", wcs, image)
    catalog = Table({"ra": [RA0, far.ra.deg, near_edge.ra.deg, RA0 + 6 / 3600],
                     "dec": [DEC0, DEC0, DEC0, DEC0]})
    table, stack = make_cutouts(catalog, [nan_tile], pixel_scale=SCALE, size=SIZE, progress=False)
    assert list(table["cutout_flag"]) == ["ok", "off_image", "partial", "too_many_nan"]
    assert table["cutout_coverage"][0] == 1 and 0.5 < table["cutout_coverage"][2] < 1
    assert np.isnan(stack[1]).all() and table["tile"][1] == "" and table["cutout_method"][1] == ""
    assert table["cutout_nan_fraction"][3] > 0.25 and table["cutout_coverage"][3] == 1
    assert 0 < table["cutout_nan_fraction"][0] < 0.25  # a few NaN pixels: ok, recorded


def test_catalog_columns():
    ra, dec = [150.1, 150.2], [2.1, 2.2]
    for names in (("RA", "DEC"), ("RAJ2000", "DEJ2000"), ("ALPHA_J2000", "DELTA_J2000"), ("RA_deg", "Dec_deg"),
                  ("ra_icrs", "de_icrs")):
        coords, ids, used = catalog_positions(Table({names[0]: ra, names[1]: dec, "objid": [7, 8]}))
        np.testing.assert_allclose(coords.ra.deg, ra) and np.testing.assert_allclose(coords.dec.deg, dec)
        assert used == {"ra": names[0], "dec": names[1], "id": "objid"} and list(ids) == [7, 8]
    table = Table({"ra": ["10:00:00", "10h00m36s"], "dec": ["+02:00:00", "-02d30m00s"]})
    coords, ids, _ = catalog_positions(table)
    np.testing.assert_allclose(coords.ra.deg, [150.0, 150.15]) and np.testing.assert_allclose(coords.dec.deg, [2, -2.5])
    assert list(ids) == [0, 1]
    table = Table({"ra": [np.pi / 2] * 2 * u.rad, "dec": [0.5, 1.0] * u.deg})
    np.testing.assert_allclose(catalog_positions(table)[0].ra.deg, [90, 90])
    with pytest.raises(ValueError, match="ra_column.*Received: columns x, y"):
        catalog_positions(Table({"x": [1.0], "y": [2.0]}))
    with pytest.raises(ValueError, match="Received: dec_column='nope'"):
        catalog_positions(Table({"ra": [1.0], "dec": [2.0]}), dec_column="nope")
    with pytest.raises(ValueError, match="survey"):
        model_grid("HST")


def test_write_dir_resume_and_atomicity(fields, tmp_path, monkeypatch):
    from gamornet.cutouts import run

    options = dict(pixel_scale=SCALE, size=SIZE, progress=False, chunk_size=2)
    images = [fields["west"], fields["rot"]]
    full, stack = make_cutouts(fields["catalog"], images, tmp_path / "full", fits=True, **options)
    assert sorted(os.listdir(tmp_path / "full")) == ["catalog.ecsv", "fits", "images.npy"]
    assert len(os.listdir(tmp_path / "full" / "fits")) == len(full)
    calls = {"n": 0}
    original = run._cut_rows

    def failing(*args):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(run, "_cut_rows", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_cutouts(fields["catalog"], images, tmp_path / "part", fits=True, workers=1, **options)
    assert [n for n in os.listdir(tmp_path / "part") if not n.startswith(".")] == []  # nothing visible
    record = json.loads((tmp_path / "part" / ".cutouts.part" / "progress.json").read_text())
    assert record["done"] == 2
    monkeypatch.setattr(run, "_cut_rows", original)
    resumed, again = make_cutouts(fields["catalog"], images, tmp_path / "part", fits=True, resume=True, **options)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(stack))
    assert resumed.meta["run_sha256"] == full.meta["run_sha256"]
    assert sorted(os.listdir(tmp_path / "part")) == ["catalog.ecsv", "fits", "images.npy"]
    with pytest.raises(FileExistsError, match="overwrite"):
        make_cutouts(fields["catalog"], images, tmp_path / "part", **options)


def test_cli_writes_a_folder_predict_reads(fields, tmp_path, capsys):
    from gamornet.cli import main

    from helpers import saved_keras_model

    out = tmp_path / "cutouts"
    args = ["cutout", fields["catalog"], fields["west"], fields["rot"], "--output", str(out), "--pixel-scale",
            str(SCALE), "--size", str(SIZE), "--quiet", "--keep-columns", "mag"]
    assert main(args) == 0
    table = Table.read(out / "catalog.ecsv")
    assert table.colnames[-1] == "mag" and "RA" not in table.colnames
    assert main(args) == 2 and "overwrite" in capsys.readouterr().err
    model = saved_keras_model(tmp_path, shape=(SIZE, SIZE, 1))
    preds = tmp_path / "preds.ecsv"
    assert main(["predict", str(out), "--model", model, "--input-shape", f"{SIZE},{SIZE},1", "--output", str(preds),
                 "--quiet"]) == 0
    predicted = Table.read(preds)
    assert len(predicted) == len(table)
    assert [str(i).rsplit(":", 1)[-1] for i in predicted["id"]] == [str(i) for i in table["cutout_index"]]
