"""Tables by their ending: reading every format written, CSV metadata sidecars, atomic writes and file modes."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest
from astropy.table import Table

from gamornet.core.tables import META_SUFFIX, file_sha256, normalise_meta, read_table, write_table

META = {"model": "tiny.keras", "flavor": "keras", "policy": "keras_sdss", "shape": "32,32,1", "mc": 0,
        "engine": "openvino", "precision": "bfloat16", "version": "1.2.3", "ntotal": 3, "shard": "1/2",
        "nimages": 3, "nskipped": 1, "skipped": ["bad.fits: has NaN"], "run_sha256": "ab" * 32}


def _table(meta=None) -> Table:
    return Table({"id": ["a.fits", "b.fits", "c.fits"], "p_disk": [0.8, 0.1, 0.3], "p_indeterminate": [0.1, 0.1, 0.4],
                  "p_bulge": [0.1, 0.8, 0.3], "label": ["disk", "bulge", "indeterminate"]},
                 meta=dict(META if meta is None else meta))


@pytest.mark.parametrize("ending", [".ecsv", ".csv", ".fits", ".fits.gz", ".parquet"])
def test_every_written_format_reads_back_with_its_metadata(tmp_path, ending):
    if ending == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"t{ending}"
    write_table(_table(), path)
    back = read_table(path)
    assert back.colnames == ["id", "p_disk", "p_indeterminate", "p_bulge", "label"]
    assert back["id"].tolist() == ["a.fits", "b.fits", "c.fits"]  # str, also from FITS
    np.testing.assert_array_equal(np.asarray(back["p_bulge"]), [0.1, 0.8, 0.3])
    assert normalise_meta(back.meta) == META


def test_csv_metadata_live_in_a_sidecar_that_describes_this_very_file(tmp_path):
    path = tmp_path / "t.csv"
    write_table(_table(), path)
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.csv" + META_SUFFIX]
    assert Table.read(path, format="ascii.csv").colnames[0] == "id"  # a plain CSV for other readers
    sidecar = json.loads((tmp_path / ("t.csv" + META_SUFFIX)).read_text())
    assert sidecar["table"] == "t.csv" and sidecar["table_sha256"] == file_sha256(path) and sidecar["meta"] == META
    assert read_table(path).meta == META

    edited = path.read_text().replace("0.8", "0.7", 1)  # the table changed after it was written
    path.write_text(edited)
    with pytest.warns(UserWarning, match=r"t\.csv\.meta\.json describes another version of .*t\.csv"):
        assert normalise_meta(read_table(path).meta) == {}
    (tmp_path / ("t.csv" + META_SUFFIX)).write_text("{not json")
    with pytest.warns(UserWarning, match="is not a gamornet metadata file"):
        assert normalise_meta(read_table(path).meta) == {}
    os.remove(tmp_path / ("t.csv" + META_SUFFIX))
    assert normalise_meta(read_table(path).meta) == {}


def test_csv_metadata_that_json_cannot_hold_are_refused_before_anything_is_written(tmp_path):
    write_table(_table({"model": np.int64(3), "shape": np.array([32, 32, 1])}), tmp_path / "ok.csv")
    assert read_table(tmp_path / "ok.csv").meta == {"model": 3, "shape": [32, 32, 1]}
    with pytest.raises(TypeError, match=r"`table`: metadata of type object cannot be kept beside a \.csv table"):
        write_table(_table({"model": object()}), tmp_path / "bad.csv")
    assert sorted(os.listdir(tmp_path)) == ["ok.csv", "ok.csv" + META_SUFFIX]


@pytest.mark.parametrize("ending", [".ecsv", ".csv", ".fits"])
def test_a_failed_write_leaves_the_previous_table_and_no_partial_file(tmp_path, monkeypatch, ending):
    path = tmp_path / f"t{ending}"
    write_table(_table(), path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def half_written(self, target, **kwargs):
        with open(target, "w") as f:
            f.write("id,p_di")
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(Table, "write", half_written)
    with pytest.raises(OSError, match="No space left on device") as info:
        write_table(_table({"model": "other"}), path)
    assert info.value.filename == str(path)  # the output, not the temporary name
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


def test_a_csv_whose_sidecar_cannot_be_written_is_not_replaced(tmp_path):
    path = tmp_path / "t.csv"
    write_table(_table(), path)
    before = path.read_bytes()
    os.remove(tmp_path / ("t.csv" + META_SUFFIX))
    os.mkdir(tmp_path / ("t.csv" + META_SUFFIX))  # a directory in the way of the sidecar
    with pytest.raises(OSError) as info:
        write_table(_table({"model": "other"}), path)
    assert info.value.filename == str(path) + META_SUFFIX
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["t.csv", "t.csv" + META_SUFFIX]


@pytest.mark.parametrize("ending", [".csv", ".parquet", ".fits"])
def test_written_tables_get_the_mode_of_a_plain_open(tmp_path, ending):
    if ending == ".parquet":
        pytest.importorskip("pyarrow")
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        write_table(_table(), tmp_path / f"t{ending}")
    finally:
        os.umask(old)
    plain = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert plain == 0o640
    written = [name for name in os.listdir(tmp_path) if name != "plain"]
    assert written == [f"t{ending}"] or sorted(written) == ["t.csv", "t.csv" + META_SUFFIX]
    assert {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in written} == dict.fromkeys(written, plain)


def test_other_astropy_formats_and_plain_text_catalogues_are_read(tmp_path):
    Table({"id": [1, 2], "bt": [0.2, 0.8]}).write(tmp_path / "cat.vot", format="votable")
    (tmp_path / "cat.txt").write_text("id bt\n1 0.2\n2 0.8\n")
    for name in ("cat.vot", "cat.txt"):
        back = read_table(tmp_path / name, "CATALOG")
        assert back["id"].tolist() == [1, 2] and back["bt"].tolist() == [0.2, 0.8], name


def test_read_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`CATALOG`: no such table file\. Received: CATALOG='.*nope\.ecsv'"):
        read_table(tmp_path / "nope.ecsv", "CATALOG")
    with pytest.raises(ValueError, match=r"`PREDICTIONS` is a directory.*Received: PREDICTIONS="):
        read_table(tmp_path, "PREDICTIONS")
    with pytest.raises(TypeError, match=r"`PREDICTIONS` must be a table file path.*Received: PREDICTIONS=3"):
        read_table(3, "PREDICTIONS")
    for name in ("broken.parquet", "broken.fits"):
        (tmp_path / name).write_text("not a table")
        with pytest.raises(ValueError, match=rf"`PREDICTIONS` could not be read as a table .*{name}'"):
            read_table(tmp_path / name, "PREDICTIONS")
    with pytest.raises(ValueError, match=r"`path` must end in one of .*Received: path='.*t\.xlsx'"):
        write_table(_table(), tmp_path / "t.xlsx")
    with pytest.raises(TypeError, match=r"`table` must be an astropy Table\. Received: table of type dict"):
        write_table({"id": [1]}, tmp_path / "t.ecsv")
