"""Survey images given as URLs: a real HTTP server on 127.0.0.1 serving byte ranges, a 3000 x 3000 mosaic.

The cutouts, flags and tables cut through a URL equal those cut from the local file, and the server sends the
header and the cutouts' rows only: a small part of the file.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from astropy.table import Table

from gamornet.cutouts import make_cutouts
from gamornet.cutouts import tiles as tiles_module
from gamornet.cutouts.tiles import remote_options
from gamornet.predict.files import predict_files
from gamornet.predict.tables import read_table, write_table

from helpers import NARROW_WIDTHS, field, saved_keras_model, sky_offsets, tan_wcs, write_tile
from servers import dead_url, range_http_server

RA0, DEC0 = 150.0, 2.0
MOSAIC_SHAPE, MOSAIC_SCALE = (3000, 3000), 0.25  # 750" on a side, float32: 36 MB
SIZE, SCALE = 41, 0.25  # the grid of the cutout tests: the mosaic's, so its pixels are copied
#: Offsets (arcsec) from the mosaic's centre: five inside, one on its edge, one on the small tile alone, one off both.
OFFSETS = [(-300.3, -200.1), (120.7, 250.2), (0.3, 0.4), (250.5, -330.9), (-150.2, 100.8), (372.0, 10.0),
           (520.0, 5.0), (0.0, 900.0)]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """The float32 mosaic, a small rotated int16 tile (BSCALE, BZERO, BLANK) beside it, the catalogue, a text file."""
    d = tmp_path_factory.mktemp("remote")
    offsets = np.array(OFFSETS)
    coords = sky_offsets(offsets, RA0, DEC0)
    wcs = tan_wcs(RA0, DEC0, MOSAIC_SCALE, MOSAIC_SHAPE)
    image = np.random.default_rng(3).normal(0, 0.05, MOSAIC_SHAPE).astype(np.float32)
    image += field(wcs, MOSAIC_SHAPE, coords[:6], MOSAIC_SCALE).astype(np.float32)
    mosaic = write_tile(d / "mosaic.fits", wcs, image)
    small_wcs = tan_wcs(coords[6].ra.deg, coords[6].dec.deg, 0.4, (160, 160), rotation=20.0)
    counts = np.round(field(small_wcs, (160, 160), coords[6:7], 0.4) / 0.01).astype(np.int16)
    counts[70:72] = -32768  # BLANK, across the source's cutout
    small = d / "small.fits"
    from astropy.io import fits

    header = small_wcs.to_header()
    header.update(BSCALE=0.01, BZERO=0.5, BLANK=-32768)
    fits.PrimaryHDU(counts, header=header).writeto(small)
    (d / "notes.txt").write_text("not a FITS file\n" * 300)
    table = Table({"objid": [f"s{i}" for i in range(len(coords))], "RA": coords.ra.deg, "DEC": coords.dec.deg,
                   "mag": np.linspace(18, 20, len(coords))})
    table.write(d / "cat.ecsv")
    with range_http_server(d) as server:
        yield {"dir": d, "mosaic": mosaic, "small": str(small), "catalog": str(d / "cat.ecsv"), "server": server,
               "size": os.path.getsize(mosaic)}


def _values(column) -> tuple[np.ndarray, np.ndarray]:
    """Mask and values (masked entries as 0 or '') of a column."""
    if np.ma.isMaskedArray(column):
        return np.ma.getmaskarray(column), np.ma.filled(column, "" if column.dtype.kind in "US" else 0)
    return np.zeros(len(column), dtype=bool), np.asarray(column)


def _assert_same_but_tiles(remote: Table, local: Table, names: dict) -> None:
    """Equal tables (values and masks), but for the ``tile`` column, which records ``names[local name]`` (the URL)."""
    assert remote.colnames == local.colnames
    for name in local.colnames:
        (mask, got), (expected_mask, expected) = _values(remote[name]), _values(local[name])
        assert np.array_equal(mask, expected_mask), name
        if name == "tile":
            expected = np.array([names.get(t, t) for t in expected.tolist()])
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_url_cutouts_equal_the_local_files_and_read_a_small_part(survey, tmp_path):
    server, grid = survey["server"], dict(pixel_scale=SCALE, size=SIZE, progress=False)
    local, local_stack = make_cutouts(survey["catalog"], [survey["mosaic"], survey["small"]], **grid)
    assert {"ok", "partial", "off_image"} <= set(local["cutout_flag"])
    url = server.url + "mosaic.fits?version=1"  # a query string, as signed URLs have: passed on as it is
    server.reset()
    remote, stack = make_cutouts(survey["catalog"], [url, survey["small"]], tmp_path / "out", **grid)
    np.testing.assert_array_equal(np.asarray(stack), local_stack)
    _assert_same_but_tiles(remote, local, {"mosaic.fits": url})
    assert remote.meta["tiles"] == [url, os.path.abspath(survey["small"])]

    block = remote_options(url)["block_size"]
    on_mosaic = int(np.sum(remote["tile"] == url))
    served = server.served["mosaic.fits"]
    assert served < 0.1 * survey["size"]
    # the header (read once) and, per cutout, its rows whole in one request, each request reading ahead one block
    assert [start for _, start, _ in server.ranges].count(0) == 1
    assert len(server.ranges) == 1 + on_mosaic
    assert served <= (6 + block) + on_mosaic * (SIZE * MOSAIC_SHAPE[1] * 4 + block)

    again, _ = make_cutouts(survey["catalog"], [url, survey["small"]], tmp_path / "out", resume=True, **grid)
    assert again.meta["run_sha256"] == remote.meta["run_sha256"]  # the URL's size and date are the tile's version


def test_rows_of_wide_images_read_one_by_one(survey, monkeypatch):
    """Rows wider than WHOLE_ROW_BYTES are read one cutout row at a time: the same pixels (int16 scaled too)."""
    server, grid = survey["server"], dict(pixel_scale=SCALE, size=SIZE, progress=False)
    local, local_stack = make_cutouts(survey["catalog"], [survey["mosaic"], survey["small"]], **grid)
    monkeypatch.setattr(tiles_module, "WHOLE_ROW_BYTES", 0)
    urls = [server.url + "mosaic.fits", server.url + "small.fits"]
    server.reset()
    remote, stack = make_cutouts(survey["catalog"], urls, **grid)
    np.testing.assert_array_equal(np.asarray(stack), local_stack)
    assert np.isnan(stack[6]).any() and np.isfinite(stack[6]).any()  # the small tile's BLANK pixels as NaN
    _assert_same_but_tiles(remote, local, {"mosaic.fits": urls[0], "small.fits": urls[1]})
    block = remote_options(urls[0])["block_size"]
    pixel_reads = [length for name, start, length in server.ranges if name == "mosaic.fits" and start > 0]
    assert pixel_reads and max(pixel_reads) <= SIZE * 4 + block


def test_unreachable_or_not_fits_url_is_one_error_before_any_cut(survey, tmp_path, capsys):
    from gamornet.cli import main

    server, grid = survey["server"], dict(pixel_scale=SCALE, size=SIZE, progress=False)
    missing = server.url + "missing.fits"
    server.reset()
    with pytest.raises(ValueError, match=r"^`images`: \S+missing\.fits could not be reached \(HTTP 404 Not Found\)\. "
                                         r"Received: 'http://127\.0\.0\.1:\d+/missing\.fits'$"):
        make_cutouts(survey["catalog"], [server.url + "mosaic.fits", missing], **grid)
    assert [start for _, start, _ in server.ranges] == [0]  # the first tile's header alone: no pixel read
    with pytest.raises(ValueError, match=r"^`images`: \S+notes\.txt could not be read as FITS .*Received: 'http"):
        make_cutouts(survey["catalog"], server.url + "notes.txt", **grid)
    refused = dead_url() + "mosaic.fits"
    with pytest.raises(ValueError, match=r"could not be reached \(.*Received: 'http://127"):
        make_cutouts(survey["catalog"], refused, **grid)

    out = tmp_path / "cli"
    assert main(["cutout", survey["catalog"], survey["mosaic"], missing, "--output", str(out), "--pixel-scale",
                 str(SCALE), "--size", str(SIZE), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IMAGE" not in err and "`images`" in err and f"Received: {missing!r}" in err
    assert not out.exists()


def test_predict_catalog_route_through_urls_equals_local_files(survey, tmp_path):
    """`gamornet predict --catalog --images URL URL` gives the table of the local files (cutouts resampled)."""
    from gamornet.cli import main

    server = survey["server"]
    model = saved_keras_model(tmp_path, shape=(31, 31, 1), widths=NARROW_WIDTHS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "[0-9]+ catalogue row", UserWarning)
        local = predict_files(catalog=survey["catalog"], images=[survey["mosaic"], survey["small"]], model=model,
                              pixel_scale=0.4, size=31, batch_size=4, chunk_size=3, nan_fill=0.0, progress=False)
    assert set(local["cutout_method"]) == {"resample", ""} and "ok" in set(local["cutout_flag"])
    urls = [server.url + "mosaic.fits", server.url + "small.fits"]
    server.reset()
    out = tmp_path / "remote.ecsv"
    assert main(["predict", "--catalog", survey["catalog"], "--images", *urls, "--model", model, "--pixel-scale",
                 "0.4", "--size", "31", "--batch-size", "4", "--chunk-size", "3", "--nan-fill", "0", "-o", str(out),
                 "--quiet"]) == 0
    write_table(local, str(tmp_path / "local.ecsv"))
    _assert_same_but_tiles(read_table(out), read_table(tmp_path / "local.ecsv"),
                           {"mosaic.fits": urls[0], "small.fits": urls[1]})
    # each cutout's footprint (12.4" and the resampling margin: under 60 rows of 0.25") read once, in one request
    on_mosaic, block = int(np.sum(local["tile"] == "mosaic.fits")), remote_options(urls[0])["block_size"]
    assert len([name for name, start, _ in server.ranges if name == "mosaic.fits" and start > 0]) == on_mosaic
    assert server.served["mosaic.fits"] <= (6 + block) + on_mosaic * (60 * MOSAIC_SHAPE[1] * 4 + block)


def test_remote_tile_headers_are_checked_against_the_card_without_reading_them_again(survey, tmp_path):
    """A URL tile at another pixel scale than the model's card gets the resampling warning; its header is read once."""
    from gamornet.predict.headers import InputMismatchWarning
    from gamornet.published.cards import ModelCard, write_card_entry

    model = saved_keras_model(tmp_path, shape=(31, 31, 1), widths=NARROW_WIDTHS)
    write_card_entry(model, ModelCard("carded", band=None, pixel_scale_arcsec=0.4, shape=(31, 31, 1)))
    server = survey["server"]
    server.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_files(catalog=survey["catalog"], images=[server.url + "mosaic.fits"], model=model, batch_size=4,
                      nan_fill=0.0, progress=False)
    mismatches = [str(w.message) for w in caught if issubclass(w.category, InputMismatchWarning)]
    assert len(mismatches) == 1, mismatches
    assert f'pixel scale {MOSAIC_SCALE:g}"/px' in mismatches[0] and "0.4\"/px" in mismatches[0]
    assert "mosaic.fits" in mismatches[0] and "resampled" in mismatches[0]
    assert [start for name, start, _ in server.ranges if name == "mosaic.fits"].count(0) == 1  # the header, once
