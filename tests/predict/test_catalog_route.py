"""predict_files(catalog=..., images=...) and `gamornet predict --catalog`: cut on the fly, one table per catalogue.

A field with a real TAN WCS at 0.25"/px, a model taking 31 x 31 cutouts at 0.4"/px (so every cutout is resampled),
and a catalogue with extra columns and sources off the image and near its edges.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from gamornet.core.network import CLASS_NAMES
from gamornet.cutouts import make_cutouts
from gamornet.predict.files import predict_files
from gamornet.predict.tables import merge_tables, read_table

from helpers import NARROW_WIDTHS, field, saved_keras_model, sky_offsets, tan_wcs, write_tile

RA0, DEC0 = 150.0, 2.0
SIZE, SCALE = 31, 0.4  # the model's grid
TILE_SCALE, TILE_SHAPE = 0.25, (200, 200)  # 50" x 50"
#: Offsets (arcsec) from the field's centre: inside, near the edges (partial), off the image.
OFFSETS = [(-12.3, -11.1), (11.7, -12.4), (-11.2, 12.6), (12.9, 11.3), (0.23, 0.41), (22.8, 0.5), (-3.1, -23.9),
           (60.0, 0.0), (5.5, 6.1), (-6.6, 2.2), (0.0, 80.0)]
ARGS = dict(pixel_scale=SCALE, size=SIZE, batch_size=4, chunk_size=3, progress=False)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """The tile, the catalogue (with extra columns) and a small model of the grid's shape."""
    d = tmp_path_factory.mktemp("survey")
    offsets = np.array(OFFSETS)
    coords = sky_offsets(offsets, RA0, DEC0)
    wcs = tan_wcs(RA0, DEC0, TILE_SCALE, TILE_SHAPE)
    rng = np.random.default_rng(1)
    image = field(wcs, TILE_SHAPE, coords, TILE_SCALE) + rng.normal(0, 0.05, TILE_SHAPE)
    tile = write_tile(d / "tile.fits", wcs, image)
    n = len(coords)
    table = Table({"objid": [f"g{i:02d}" for i in range(n)], "RA": coords.ra.deg, "DEC": coords.dec.deg,
                   "mag": np.linspace(18, 20, n), "z": np.linspace(0.01, 0.1, n)})
    table.write(d / "cat.ecsv")
    model = saved_keras_model(d, shape=(SIZE, SIZE, 1), widths=NARROW_WIDTHS)
    return {"tile": tile, "catalog": str(d / "cat.ecsv"), "model": model, "n": n}


@pytest.fixture(scope="module")
def reference(survey):
    """make_cutouts' table and the stack's predictions (unusable rows skipped: their NaN pixels)."""
    cutouts, stack = make_cutouts(survey["catalog"], survey["tile"], pixel_scale=SCALE, size=SIZE, progress=False)
    with pytest.warns(UserWarning, match="bad image"):
        predicted = predict_files(np.asarray(stack), survey["model"], input_shape=(SIZE, SIZE, 1), skip_bad=True,
                                  batch_size=4, chunk_size=3, progress=False)
    return cutouts, predicted


def _predict(survey, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "[0-9]+ catalogue row", UserWarning)
        return predict_files(catalog=survey["catalog"], images=survey["tile"], model=survey["model"], **ARGS,
                             **kwargs)


def _assert_same(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for name in a.colnames:
        assert np.array_equal(np.ma.getmaskarray(a[name]), np.ma.getmaskarray(b[name])), name
        np.testing.assert_array_equal(np.ma.filled(a[name], 0) if np.ma.isMaskedArray(a[name]) else a[name],
                                      np.ma.filled(b[name], 0) if np.ma.isMaskedArray(b[name]) else b[name],
                                      err_msg=name)


def test_every_row_kept_with_flags_columns_and_the_stack_probabilities(survey, reference):
    cutouts, predicted = reference
    with pytest.warns(UserWarning, match="catalogue row.*not predicted"):
        table = predict_files(catalog=survey["catalog"], images=survey["tile"], model=survey["model"], **ARGS)
    flags = list(cutouts["cutout_flag"])
    assert {"ok", "partial", "off_image"} <= set(flags)
    assert len(table) == survey["n"]
    assert list(table["id"]) == [f"g{i:02d}" for i in range(survey["n"])]
    for name in cutouts.colnames:  # the cutout columns and the catalogue's, in catalogue order
        np.testing.assert_array_equal(np.asarray(table[name]), np.asarray(cutouts[name]), err_msg=name)
    ok = np.array(flags) == "ok"
    usable = np.flatnonzero(ok)
    assert list(predicted["id"]) == usable.tolist()  # the stack's usable rows: the same rows, at the same places
    for name in CLASS_NAMES:
        column = table[f"p_{name}"]
        assert np.array_equal(np.ma.getmaskarray(column), ~ok)
        # the same cutouts at the same rows of the same batches: bit-identical
        np.testing.assert_array_equal(np.asarray(column)[usable], np.asarray(predicted[f"p_{name}"]))
    assert np.array_equal(np.ma.getmaskarray(table["label"]), ~ok)
    assert list(np.asarray(table["label"])[usable]) == list(predicted["label"])
    assert table.meta["nskipped"] == int((~ok).sum())
    assert table.meta["skipped"][0].endswith(f"cutout_flag {flags[int(np.flatnonzero(~ok)[0])]}")


def test_resume_and_shards_equal_the_whole(survey, tmp_path):
    whole = _predict(survey, output=str(tmp_path / "whole.ecsv"))
    calls = {"n": 0}

    def interrupt(done, total):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    out = str(tmp_path / "resumed.ecsv")
    with pytest.raises(KeyboardInterrupt):
        predict_files(catalog=survey["catalog"], images=survey["tile"], model=survey["model"], output=out,
                      on_chunk=interrupt, **ARGS)
    assert os.path.isdir(out + ".chunks") and not os.path.exists(out)
    resumed = _predict(survey, output=out, resume=True)
    _assert_same(resumed, whole)
    _assert_same(read_table(out), read_table(tmp_path / "whole.ecsv"))
    parts = []
    for i in (1, 2):
        parts.append(str(tmp_path / f"part{i}.ecsv"))
        _predict(survey, output=parts[-1], shard=f"{i}/2")
    merged = merge_tables(parts, str(tmp_path / "merged.ecsv"))
    _assert_same(merged, read_table(tmp_path / "whole.ecsv"))


def test_resume_refuses_another_catalogue(survey, tmp_path):
    out = str(tmp_path / "t.ecsv")
    _predict(survey, output=out)
    other = Table.read(survey["catalog"])
    other["RA"][0] += 1 / 3600
    other.write(tmp_path / "other.ecsv")
    with pytest.raises(ValueError, match="Cannot resume"):
        predict_files(catalog=str(tmp_path / "other.ecsv"), images=survey["tile"], model=survey["model"], output=out,
                      resume=True, **ARGS)


def test_grid_and_argument_errors(survey):
    with pytest.raises(ValueError, match="grid of the cutouts is unknown.*Received: model="):
        predict_files(catalog=survey["catalog"], images=survey["tile"], model=survey["model"], progress=False)
    with pytest.raises(ValueError, match="either `inputs`.*Received: inputs="):
        predict_files(survey["tile"], catalog=survey["catalog"], images=survey["tile"], model=survey["model"], **ARGS)
    with pytest.raises(ValueError, match="input_shape.*Received: input_shape"):
        predict_files(catalog=survey["catalog"], images=survey["tile"], model=survey["model"],
                      input_shape=(SIZE + 2, SIZE + 2, 1), **ARGS)


def test_cli_end_to_end(survey, reference, tmp_path, capsys):
    from gamornet.cli import main

    out = str(tmp_path / "cli.ecsv")
    code = main(["predict", "--catalog", survey["catalog"], "--images", survey["tile"], "--model", survey["model"],
                 "--pixel-scale", str(SCALE), "--size", str(SIZE), "--id-column", "objid", "--batch-size", "4",
                 "--chunk-size", "3", "-o", out, "--quiet"])
    assert code == 0
    table = read_table(out)
    assert len(table) == survey["n"]
    _assert_same(table, read_table(_write(_predict(survey), tmp_path / "api.ecsv")))


def _write(table: Table, path) -> str:
    from gamornet.predict.tables import write_table

    write_table(table, str(path))
    return str(path)


@pytest.mark.slow
def test_local_cluster_equals_one_process(survey, tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    whole = _predict(survey)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        clustered = _predict(survey, output=str(tmp_path / "cluster.ecsv"), client=client)
    assert clustered.colnames == whole.colnames
    for name in whole.colnames:
        if name.startswith("p_"):
            np.testing.assert_allclose(np.ma.filled(clustered[name], 0), np.ma.filled(whole[name], 0), atol=1e-6)
            assert np.array_equal(np.ma.getmaskarray(clustered[name]), np.ma.getmaskarray(whole[name]))
        elif name != "label":
            np.testing.assert_array_equal(np.asarray(clustered[name]), np.asarray(whole[name]), err_msg=name)


def test_a_chunk_task_carries_only_its_own_rows(survey):
    """What a cluster worker receives for one chunk: that chunk's catalogue rows, cut as from the whole catalogue."""
    from gamornet.cutouts import model_grid
    from gamornet.cutouts.plan import CutoutPlan

    plan = CutoutPlan(Table.read(survey["catalog"]), survey["tile"], model_grid(pixel_scale=SCALE, size=SIZE), {})
    part = plan.subset([4, 0, 8])
    assert len(part.ra) == 3 and list(part.ids) == [plan.ids[4], plan.ids[0], plan.ids[8]]
    for i, row in enumerate([4, 0, 8]):
        whole, _, whole_result = plan.cut(row)
        image, _, result = part.cut(i)
        np.testing.assert_array_equal(image, whole)
        assert np.array_equal(np.asarray(result), np.asarray(whole_result), equal_nan=True)


@pytest.fixture(scope="module")
def carded(survey, tmp_path_factory):
    """The survey's model with a card (SDSS g at the grid's 0.4"/px), and a tile at that scale in that band."""
    import shutil

    from gamornet.published.cards import ModelCard, write_card_entry

    d = tmp_path_factory.mktemp("carded")
    model = str(d / "carded.keras")
    shutil.copy(survey["model"], model)
    write_card_entry(model, ModelCard("carded", band="SDSS g", pixel_scale_arcsec=SCALE, shape=(SIZE, SIZE, 1)))
    table = Table.read(survey["catalog"])
    coords = SkyCoord(table["RA"], table["DEC"], unit="deg")
    wcs = tan_wcs(RA0, DEC0, SCALE, (125, 125))
    tile = write_tile(d / "native.fits", wcs, field(wcs, (125, 125), coords, SCALE), FILTER="g")
    return {"model": model, "native": tile}


def _mismatch_warnings(**kwargs) -> tuple[Table, list]:
    from gamornet.predict.headers import InputMismatchWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = predict_files(batch_size=4, chunk_size=3, progress=False, **kwargs)
    return table, [w for w in caught if issubclass(w.category, InputMismatchWarning)]


def test_survey_image_headers_checked_against_the_card(survey, carded, tmp_path, capsys):
    from gamornet.cli import main
    from gamornet.predict.headers import InputMismatchError

    # the grid is the card's (0.4"/px, 31 x 31); the tile is at 0.25"/px: resampled, said once
    table, caught = _mismatch_warnings(catalog=survey["catalog"], images=survey["tile"], model=carded["model"])
    assert len(table) == survey["n"] and set(table["cutout_method"][table["cutout_flag"] == "ok"]) == {"resample"}
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'pixel scale 0.25"/px (survey image tile.fits) differs from the model\'s 0.4"/px' in text
    assert 'the cutouts were resampled from it to 0.4"/px' in text
    table, caught = _mismatch_warnings(catalog=survey["catalog"], images=carded["native"], model=carded["model"])
    assert caught == [] and "copy" in set(table["cutout_method"])
    output = str(tmp_path / "strict.ecsv")
    with pytest.raises(InputMismatchError, match="Received: strict=True"):
        predict_files(catalog=survey["catalog"], images=survey["tile"], model=carded["model"], output=output,
                      strict=True, progress=False)
    assert not os.path.exists(output) and not os.path.exists(output + ".chunks")
    capsys.readouterr()
    assert main(["predict", "--catalog", survey["catalog"], "--images", survey["tile"], "--model", carded["model"],
                 "-o", output, "--strict", "--quiet"]) == 2
    assert "resampled from it" in capsys.readouterr().err and not os.path.exists(output)
