"""Merging shard tables: only shards of one run, CSV shards checked through their metadata sidecar."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.table import Table

from gamornet.core.tables import META_SUFFIX, read_table, write_table
from gamornet.predict import predict_files
from gamornet.predict.tables import merge_tables

from helpers import saved_keras_model

SHAPE = (32, 32, 1)
OPTS = {"input_shape": SHAPE, "progress": False, "engine": "keras"}
DIGEST = "5e" * 32


def _shard(i: int, n: int = 2, **meta) -> Table:
    """Shard ``i`` of ``n`` of a four-image catalogue, with the metadata predict_files writes."""
    ids = [f"g{k}.fits" for k in range(4)][(i - 1) * 4 // n:i * 4 // n]
    recorded = {"model": "tiny.keras", "flavor": "keras", "policy": "keras_sdss", "shape": "32,32,1", "mc": 0,
                "engine": "keras", "precision": "float32", "version": "1.2.3", "ntotal": 4, "shard": f"{i}/{n}",
                "nimages": len(ids), "nskipped": 0, "run_sha256": DIGEST, **meta}
    return Table({"id": ids, "p_disk": np.full(len(ids), 0.8), "p_indeterminate": np.full(len(ids), 0.1),
                  "p_bulge": np.full(len(ids), 0.1), "label": ["disk"] * len(ids)}, meta=recorded)


@pytest.mark.parametrize("endings", [(".csv", ".csv"), (".ecsv", ".csv"), (".fits", ".parquet")])
def test_merged_table_keeps_the_common_run_digest(tmp_path, endings):
    if ".parquet" in endings:
        pytest.importorskip("pyarrow")
    paths = [str(tmp_path / f"part{i}{ending}") for i, ending in enumerate(endings, 1)]
    for i, path in enumerate(paths, 1):
        write_table(_shard(i), path)
    merged = merge_tables(paths[::-1], str(tmp_path / "all.csv"))
    assert merged["id"].tolist() == ["g0.fits", "g1.fits", "g2.fits", "g3.fits"]
    assert merged.meta["run_sha256"] == DIGEST and merged.meta["shard"] == "1/1" and merged.meta["nimages"] == 4
    assert read_table(tmp_path / "all.csv").meta == merged.meta  # the merged CSV has its sidecar too


@pytest.mark.parametrize("ending", [".ecsv", ".csv"])
def test_shards_of_different_runs_are_not_merged(tmp_path, ending):
    paths = [str(tmp_path / f"part{i}{ending}") for i in (1, 2)]
    write_table(_shard(1), paths[0])
    write_table(_shard(2, run_sha256="77" * 32), paths[1])
    with pytest.raises(ValueError, match=rf"Cannot merge: .*part1\{ending} and .*part2\{ending} are tables of "
                                         rf"different runs \(run_sha256 {DIGEST} and {'77' * 32}\)"):
        merge_tables(paths, str(tmp_path / "all.ecsv"))
    assert not os.path.exists(tmp_path / "all.ecsv")


@pytest.mark.parametrize("other", [{"engine": "openvino", "precision": "bfloat16"}, {"precision": "bfloat16"}])
def test_csv_shards_of_different_engines_or_precisions_are_not_merged(tmp_path, other):
    write_table(_shard(1), tmp_path / "keras.csv")
    write_table(_shard(2, **other), tmp_path / "other.csv")
    key = next(iter(other))
    with pytest.raises(ValueError, match=rf"Cannot merge: {key} is '{_shard(1).meta[key]}' in .*keras\.csv but "
                                         rf"'{other[key]}' in .*other\.csv"):
        merge_tables([str(tmp_path / "keras.csv"), str(tmp_path / "other.csv")])


def test_a_csv_shard_without_its_sidecar_is_refused_naming_the_formats_that_merge(tmp_path):
    write_table(_shard(1), tmp_path / "part1.csv")
    _shard(2).write(tmp_path / "part2.csv", format="ascii.csv")  # no sidecar: its metadata are lost
    with pytest.raises(ValueError, match=r"`paths`: '.*part2\.csv' is a \.csv table without its metadata sidecar "
                                         r"'.*part2\.csv\.meta\.json'.*Tables that merge safely: \.ecsv, \.fits, "
                                         r"\.fits\.gz, \.parquet, or \.csv with its \.meta\.json sidecar"):
        merge_tables([str(tmp_path / "part1.csv"), str(tmp_path / "part2.csv")])
    write_table(_shard(2), tmp_path / "part2.csv")
    os.remove(tmp_path / ("part2.csv" + META_SUFFIX))
    with pytest.raises(ValueError, match=r"part2\.csv' is a \.csv table without its metadata sidecar"):
        merge_tables([str(tmp_path / "part1.csv"), str(tmp_path / "part2.csv")])
    Table(_shard(2), meta={}).write(tmp_path / "bare.ecsv")
    with pytest.raises(ValueError, match=r"'.*bare\.ecsv' is a table without metadata.*merge safely"):
        merge_tables([str(tmp_path / "part1.csv"), str(tmp_path / "bare.ecsv")])


def test_shards_predicted_before_and_after_the_model_file_changed_are_not_merged(tmp_path):
    """End to end: CSV shards merge with their run digest, resume their finished table, refuse another model file."""
    images = np.random.default_rng(5).normal(10.0, 3.0, size=(4, *SHAPE)).astype(np.float32)
    os.mkdir(tmp_path / "model")
    model = saved_keras_model(tmp_path / "model", SHAPE, seed=3)
    parts = [str(tmp_path / f"part{i}.csv") for i in (1, 2)]
    first = predict_files(images, model, shard="1/2", output=parts[0], **OPTS)
    second = predict_files(images, model, shard="2/2", output=parts[1], **OPTS)
    merged = merge_tables(parts, str(tmp_path / "all.csv"))
    assert merged.meta["run_sha256"] == first.meta["run_sha256"] == second.meta["run_sha256"]
    assert merged["id"].tolist() == [0, 1, 2, 3] and merged.meta["shard"] == "1/1"

    assert saved_keras_model(tmp_path / "model", SHAPE, seed=4) == model  # the model file replaced
    again = predict_files(images, model, shard="2/2", output=parts[1], overwrite=True, **OPTS)
    assert again.meta["run_sha256"] != first.meta["run_sha256"] and again.meta["model"] == first.meta["model"]
    resumed = predict_files(images, model, shard="2/2", output=parts[1], resume=True, **OPTS)  # its own run
    assert resumed.meta["run_sha256"] == again.meta["run_sha256"]
    with pytest.raises(ValueError, match=rf"part1\.csv and .*part2\.csv are tables of different runs \(run_sha256 "
                                         rf"{first.meta['run_sha256']} and {again.meta['run_sha256']}\)"):
        merge_tables(parts, str(tmp_path / "all.csv"), overwrite=True)
    assert read_table(tmp_path / "all.csv").meta["run_sha256"] == first.meta["run_sha256"]  # left as it was
