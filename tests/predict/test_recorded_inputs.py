"""What a prediction table records of its inputs: absolute paths as given, in every format, kept by merges.

``inputs`` (files, folders, patterns), or ``source_catalog`` and ``source_images`` for the catalogue route; none for
an array or for more than 1000 items.  They are not part of the run digest: a run given the same files by other
paths resumes.
"""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gamornet.core.tables import normalise_meta
from gamornet.predict import predict_files
from gamornet.predict.files import MAX_RECORDED_INPUTS
from gamornet.predict.tables import merge_tables, read_table, write_table

from helpers import NARROW_WIDTHS, SMALL_SHAPE, saved_keras_model, sky_offsets, tan_wcs, write_tile

OPTS = {"input_shape": SMALL_SHAPE, "progress": False, "engine": "keras", "batch_size": 4}
ENDINGS = [".ecsv", ".csv", ".fits", ".parquet"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return saved_keras_model(tmp_path_factory.mktemp("model"), SMALL_SHAPE, seed=3, widths=NARROW_WIDTHS)


@pytest.fixture
def inputs(tmp_path):
    """A folder (whose name holds glob characters and a non-ASCII letter) with a .npy stack and two FITS files."""
    folder = tmp_path / "run [1] é"
    folder.mkdir()
    images = np.random.default_rng(1).normal(10.0, 3.0, size=(5, *SMALL_SHAPE)).astype(np.float32)
    np.save(folder / "stack.npy", images[:3])
    (folder / "fits").mkdir()
    for i in (3, 4):
        fits.writeto(folder / "fits" / f"g{i}.fits", images[i, :, :, 0])
    return folder


def _recorded(path) -> dict:
    return {k: v for k, v in normalise_meta(read_table(path).meta).items()
            if k in ("inputs", "source_catalog", "source_images")}


def test_inputs_are_recorded_absolute_as_given_in_every_format(model_path, inputs, monkeypatch):
    monkeypatch.chdir(inputs)  # relative paths and a relative pattern, from a folder with glob characters
    given = ["stack.npy", "fits/*.fits"]
    expected = [str(inputs / "stack.npy"), glob.escape(str(inputs)) + "/fits/*.fits"]
    for ending in ENDINGS:
        out = inputs.parent / f"table{ending}"
        table = predict_files(given, model_path, output=str(out), **OPTS)
        assert table.meta["inputs"] == expected
        assert len(table) == 5
        assert _recorded(out) == {"inputs": expected}, ending
    assert sorted(glob.glob(expected[1])) == [str(inputs / "fits" / f"g{i}.fits") for i in (3, 4)]
    # one item (a FITS header would give a lone string back), and an os.PathLike
    out = inputs.parent / "one.fits"
    predict_files(inputs / "fits", model_path, output=str(out), **OPTS)
    assert _recorded(out) == {"inputs": [str(inputs / "fits")]}


def test_nothing_is_recorded_for_an_array_or_too_many_inputs(model_path, inputs, tmp_path):
    array = np.load(inputs / "stack.npy")
    out = tmp_path / "array.fits"
    table = predict_files(array, model_path, output=str(out), **OPTS)
    assert "inputs" not in table.meta and _recorded(out) == {}
    many = [str(inputs / "stack.npy")] * (MAX_RECORDED_INPUTS + 1)  # the same file, listed once
    table = predict_files(many, model_path, **OPTS)
    assert len(table) == 3 and "inputs" not in table.meta
    table = predict_files(many[:MAX_RECORDED_INPUTS], model_path, **OPTS)
    assert table.meta["inputs"] == many[:MAX_RECORDED_INPUTS]


def test_resume_accepts_the_same_files_given_by_another_path(model_path, inputs, tmp_path, monkeypatch):
    out = tmp_path / "t.ecsv"
    monkeypatch.chdir(inputs)
    whole = predict_files("stack.npy", model_path, output=str(out), chunk_size=2, **OPTS)
    monkeypatch.chdir(tmp_path)
    again = predict_files(os.path.join(".", inputs.name, "stack.npy"), model_path, output=str(out), resume=True,
                          chunk_size=2, **OPTS)  # a finished table of the same run: kept as it is
    assert again.meta["run_sha256"] == whole.meta["run_sha256"]
    assert normalise_meta(again.meta)["inputs"] == [str(inputs / "stack.npy")]
    with pytest.raises(ValueError, match="Cannot resume"):  # another run is still refused
        predict_files(str(inputs / "fits"), model_path, output=str(out), resume=True, chunk_size=2, **OPTS)

    def stop(done, total):
        raise KeyboardInterrupt  # after the first of two chunks

    interrupted = tmp_path / "interrupted.ecsv"
    with pytest.raises(KeyboardInterrupt):
        predict_files(os.path.join(".", inputs.name, "stack.npy"), model_path, output=str(interrupted), chunk_size=2,
                      on_chunk=stop, **OPTS)
    calls = []
    monkeypatch.chdir(inputs)
    resumed = predict_files("stack.npy", model_path, output=str(interrupted), resume=True, chunk_size=2,
                            on_chunk=lambda done, total: calls.append(done), **OPTS)
    assert calls == [2]  # only the missing chunk predicted
    assert resumed.meta["run_sha256"] == whole.meta["run_sha256"]
    assert resumed.meta["inputs"] == [str(inputs / "stack.npy")]


def test_merge_keeps_the_inputs_the_shards_agree_on_and_drops_others(model_path, inputs, tmp_path):
    folder = str(inputs / "fits")
    files = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    for ending in (".fits", ".csv"):
        same = [tmp_path / f"s{i}{ending}" for i in (1, 2)]
        for i, path in enumerate(same, 1):
            predict_files(folder, model_path, output=str(path), shard=f"{i}/2", **OPTS)
        merged = merge_tables([str(p) for p in same], output=str(tmp_path / f"merged{ending}"))
        assert merged.meta["inputs"] == [folder] and _recorded(tmp_path / f"merged{ending}") == {"inputs": [folder]}
    # the same files, named otherwise by the second shard: the same run, merged, no inputs recorded
    other = tmp_path / "other2.ecsv"
    predict_files(files, model_path, output=str(other), shard="2/2", **OPTS)
    merged = merge_tables([str(tmp_path / "s1.fits"), str(other)], output=str(tmp_path / "mixed.parquet"))
    assert len(merged) == 2 and "inputs" not in merged.meta and merged.meta["shard"] == "1/1"
    assert _recorded(tmp_path / "mixed.parquet") == {}


def test_recorded_inputs_written_by_hand_survive_every_format(tmp_path):
    """Lists of one item, non-ASCII letters, quotes, trailing blanks and long paths come back as they were."""
    meta = {"inputs": ["/data/é/x'y.npy"], "source_catalog": "/c/" + "a" * 150 + ".ecsv",
            "source_images": ["https://example.org/t.fits", "/t/tile 2.fits  "]}
    for ending in (*ENDINGS, ".fits.gz"):
        write_table(Table({"id": ["a"]}, meta=dict(meta)), tmp_path / f"t{ending}")
        assert _recorded(tmp_path / f"t{ending}") == meta, ending


SIZE, SCALE = 32, 0.4


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A tile with a celestial WCS and a catalogue of three galaxies on it."""
    d = tmp_path_factory.mktemp("survey")
    coords = sky_offsets(np.array([(-5.0, 3.0), (4.0, -2.0), (0.5, 0.5)]), 150.0, 2.0)
    wcs = tan_wcs(150.0, 2.0, 0.25, (120, 120))
    tile = write_tile(d / "tile.fits", wcs, np.random.default_rng(0).normal(0, 1, (120, 120)))
    Table({"objid": ["a", "b", "c"], "RA": coords.ra.deg, "DEC": coords.dec.deg}).write(d / "cat.ecsv")
    return d, tile


def test_catalogue_route_records_the_catalogue_and_the_survey_images(model_path, survey, tmp_path, monkeypatch):
    d, tile = survey
    monkeypatch.chdir(d)
    args = {"model": model_path, "pixel_scale": SCALE, "size": SIZE, "progress": False, "engine": "keras"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # header checks of a tile without FILTER / BUNIT
        for ending in ENDINGS:
            table = predict_files(catalog="cat.ecsv", images=["tile.fits"], output=str(tmp_path / f"c{ending}"),
                                  **args)
            expected = {"source_catalog": str(d / "cat.ecsv"), "source_images": [tile]}
            assert {k: table.meta[k] for k in expected} == expected
            assert _recorded(tmp_path / f"c{ending}") == expected, ending
        catalog = Table.read(d / "cat.ecsv")
        table = predict_files(catalog=catalog, images=tile, **args)  # a Table: no catalogue file to record
    assert "source_catalog" not in table.meta and table.meta["source_images"] == [tile]
