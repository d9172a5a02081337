"""File prediction: image sources, validation, chunked / resumable / sharded tables, MC dropout, the CLI."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gamornet.core.network import CLASS_NAMES
from gamornet.core.thresholds import classify_probabilities
from gamornet.predict import fits as fits_reader
from gamornet.predict import images as reading
from gamornet.predict import inputs as listing
from gamornet.predict import predict_files
from gamornet.predict.tables import CHUNKS_SUFFIX, merge_tables, read_table, write_table

from helpers import NARROW_WIDTHS, ORDER_ATOL, REPO, saved_keras_model

SHAPE = (32, 32, 1)
# The Keras engine: file prediction on every Keras backend (the OpenVINO engine: test_files_engines.py).
OPTS = {"input_shape": SHAPE, "progress": False, "engine": "keras"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return saved_keras_model(tmp_path_factory.mktemp("model"), SHAPE, seed=3, widths=NARROW_WIDTHS)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).normal(10.0, 3.0, size=(7, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(images, model_path) -> np.ndarray:
    from gamornet.keras_module import gamornet_predict_keras

    return gamornet_predict_keras(images, model_path, SHAPE)


def _probs(table: Table, suffix: str = "") -> np.ndarray:
    return np.stack([np.asarray(table[f"p_{c}{suffix}"]) for c in CLASS_NAMES], axis=1)


def _fits_dir(directory, images, shape=None) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(directory, f"g{i:02d}.fits")
        fits.writeto(path, image[:, :, 0] if shape is None else image.reshape(shape), overwrite=True)
        paths.append(path)
    return paths


def _assert_same_table(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for name in a.colnames:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


# ---------------------------------------------------------------- input kinds


@pytest.mark.backends
def test_array_input_equals_predict_keras(images, expected, model_path):
    table = predict_files(images, model_path, **OPTS)
    assert table["id"].tolist() == list(range(len(images)))
    np.testing.assert_allclose(_probs(table), expected, rtol=0, atol=ORDER_ATOL)
    assert table["label"].tolist() == classify_probabilities(expected, "keras_sdss").tolist()
    assert table.meta["model"] == model_path and table.meta["flavor"] == "keras"
    assert table.meta["policy"] == "keras_sdss" and table.meta["shape"] == "32,32,1" and table.meta["version"]
    three_d = predict_files(images[..., 0], model_path, **OPTS)  # (N, H, W) for a one-channel model
    np.testing.assert_allclose(_probs(three_d), expected, rtol=0, atol=ORDER_ATOL)


def test_npy_stacks_are_memory_mapped(images, expected, model_path, tmp_path):
    np.save(tmp_path / "a.npy", images[:4])
    np.save(tmp_path / "b.npy", images[4:, :, :, 0])  # (N, H, W)
    refs, _ = listing.list_images(str(tmp_path / "a.npy"))
    assert isinstance(refs[0].source.data, np.memmap)
    table = predict_files(str(tmp_path), model_path, batch_size=3, **OPTS)
    assert table["id"].tolist() == ["a.npy:0", "a.npy:1", "a.npy:2", "a.npy:3", "b.npy:0", "b.npy:1", "b.npy:2"]
    np.testing.assert_allclose(_probs(table), expected, rtol=0, atol=ORDER_ATOL)


def test_fits_layouts_2d_hw1_1hw(images, expected, model_path, tmp_path):
    fits.writeto(tmp_path / "a.fits", images[0, :, :, 0])
    fits.writeto(tmp_path / "b.fits", images[1])  # (H, W, 1)
    fits.writeto(tmp_path / "c.fits", images[2].reshape(1, 32, 32))  # (1, H, W)
    fits.writeto(tmp_path / "d.fits", images[3, :, :, 0].astype(np.float64))
    table = predict_files(str(tmp_path), model_path, **OPTS)
    assert table["id"].tolist() == ["a.fits", "b.fits", "c.fits", "d.fits"]
    np.testing.assert_allclose(_probs(table), expected[:4], rtol=0, atol=ORDER_ATOL)


def test_fits_named_and_numbered_hdu(images, expected, model_path, tmp_path):
    path = tmp_path / "multi.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(images[5, :, :, 0], name="ERR"),
                  fits.ImageHDU(images[6, :, :, 0], name="SCI")]).writeto(path)
    default = predict_files(str(path), model_path, **OPTS)  # empty primary: the first HDU with data
    np.testing.assert_allclose(_probs(default), expected[5:6], rtol=0, atol=ORDER_ATOL)
    for hdu in ("SCI", 2):
        np.testing.assert_allclose(_probs(predict_files(str(path), model_path, hdu=hdu, **OPTS)), expected[6:7],
                                   rtol=0, atol=ORDER_ATOL)
    with pytest.raises(ValueError, match=r"multi\.fits.*no HDU 'NOPE'"):
        predict_files(str(path), model_path, hdu="NOPE", **OPTS)


def test_fits_integer_with_bscale_bzero(model_path, tmp_path):
    from gamornet.keras_module import gamornet_predict_keras

    raw = np.random.default_rng(2).integers(-300, 300, size=(32, 32)).astype(np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.05, 10.0
    hdu.writeto(tmp_path / "int.fits")
    with fits.open(tmp_path / "int.fits", do_not_scale_image_data=True) as hdul:
        assert hdul[0].data.dtype.kind == "i"  # stored as integers
    physical = (raw.astype(np.float64) * 0.05 + 10.0).astype(np.float32)[None, :, :, None]
    table = predict_files(str(tmp_path / "int.fits"), model_path, **OPTS)
    np.testing.assert_allclose(_probs(table), gamornet_predict_keras(physical, model_path, SHAPE), rtol=0,
                               atol=ORDER_ATOL)


@pytest.mark.parametrize(
    "dtype, scale",
    [("float32", None), ("float64", None), ("int16", (0.05, 10.0)), ("int32", (2.0, -3.0)), ("uint8", None),
     ("uint16", None), ("int16", None)],
)
def test_plain_fits_reader_equals_astropy(tmp_path, dtype, scale):
    rng = np.random.default_rng(5)
    data = (rng.normal(size=(32, 32)) * 100).clip(0 if dtype.startswith("u") else -500, 250).astype(dtype)
    hdu = fits.ImageHDU(data, name="SCI")
    if scale is not None:
        hdu.header["BSCALE"], hdu.header["BZERO"] = scale
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3), np.float32), name="OTHER"), hdu]).writeto(
        tmp_path / "x.fits")
    for hdu_choice in ("SCI", 2):
        pixels = fits_reader.plain_fits_pixels(str(tmp_path / "x.fits"), hdu_choice)
        assert pixels is not None and pixels.shape == (32, 32)  # the direct path is taken
        refs, _ = listing.list_images(str(tmp_path / "x.fits"))
        good, _ = reading.scan_images(refs, SHAPE, hdu=hdu_choice)
        ours = reading.ImageReader(SHAPE, hdu=hdu_choice).read(good).images[0, :, :, 0]
        theirs = fits.getdata(tmp_path / "x.fits", ext=2).astype(np.float32)
        np.testing.assert_array_equal(ours, theirs)  # the same physical values as astropy, cast to float32


def test_gzip_compressed_and_blank_fits_go_through_astropy(images, expected, model_path, tmp_path):
    ints = np.round(images[0, :, :, 0] * 100).astype(np.int32)
    fits.writeto(tmp_path / "a.fits.gz", images[0, :, :, 0])
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(ints)]).writeto(tmp_path / "b.fits.fz")
    blank = fits.PrimaryHDU(ints)
    blank.header["BLANK"] = -999999
    blank.writeto(tmp_path / "c.fits")
    for name in ("a.fits.gz", "b.fits.fz", "c.fits"):
        assert fits_reader.plain_fits_pixels(str(tmp_path / name)) is None
    table = predict_files(str(tmp_path), model_path, **OPTS)
    assert table["id"].tolist() == ["a.fits.gz", "b.fits.fz", "c.fits"]
    np.testing.assert_allclose(_probs(table)[0], expected[0], rtol=0, atol=ORDER_ATOL)
    np.testing.assert_array_equal(_probs(table)[1], _probs(table)[2])  # same integers, two astropy paths


def test_glob_and_list_of_paths(images, expected, model_path, tmp_path):
    _fits_dir(tmp_path / "one", images[:3])
    _fits_dir(tmp_path / "two", images[3:5])
    table = predict_files(str(tmp_path / "*" / "g0[01].fits"), model_path, **OPTS)
    assert table["id"].tolist() == ["one/g00.fits", "one/g01.fits", "two/g00.fits", "two/g01.fits"]
    np.testing.assert_allclose(_probs(table), expected[[0, 1, 3, 4]], rtol=0, atol=ORDER_ATOL)
    listed = predict_files([str(tmp_path / "two" / "g01.fits"), str(tmp_path / "one" / "g02.fits"),
                            str(tmp_path / "one" / "g02.fits")], model_path, **OPTS)
    assert listed["id"].tolist() == ["one/g02.fits", "two/g01.fits"]  # sorted, each once
    np.testing.assert_allclose(_probs(listed), expected[[2, 4]], rtol=0, atol=ORDER_ATOL)


# ---------------------------------------------------------------- validation


def test_wrong_size_names_file_and_both_shapes(images, model_path, tmp_path):
    _fits_dir(tmp_path, images[:2])
    fits.writeto(tmp_path / "big.fits", np.zeros((40, 40), np.float32))
    out = tmp_path / "out.ecsv"
    with pytest.raises(ValueError, match=r"big\.fits: image shape \(40, 40\) does not match .*\(32, 32, 1\)"):
        predict_files(str(tmp_path), model_path, output=str(out), **OPTS)
    assert not out.exists() and not os.path.exists(str(out) + CHUNKS_SUFFIX)


def test_crop_and_pad(images, model_path, tmp_path):
    from gamornet.keras_module import gamornet_predict_keras

    big = np.random.default_rng(3).normal(size=(37, 36)).astype(np.float32)
    small = np.random.default_rng(4).normal(size=(29, 28)).astype(np.float32)
    fits.writeto(tmp_path / "a_big.fits", big)
    fits.writeto(tmp_path / "b_small.fits", small)
    cropped = big[2:34, 2:34]
    padded = np.pad(small, ((1, 2), (2, 2)), constant_values=-1.0)
    table = predict_files(str(tmp_path), model_path, crop_pad=-1.0, **OPTS)
    reference = gamornet_predict_keras(np.stack([cropped, padded])[..., None], model_path, SHAPE)
    np.testing.assert_allclose(_probs(table), reference, rtol=0, atol=ORDER_ATOL)
    np.testing.assert_array_equal(reading.crop_or_pad(small[None, :, :, None], (32, 32), -1.0)[0, :, :, 0], padded)


def test_nan_pixels_error_or_fill(images, model_path, tmp_path):
    from gamornet.keras_module import gamornet_predict_keras

    bad = images[0, :, :, 0].copy()
    bad[3, 4] = np.nan
    fits.writeto(tmp_path / "nan.fits", bad)
    with pytest.raises(ValueError, match=r"nan\.fits: has NaN or inf pixels"):
        predict_files(str(tmp_path), model_path, **OPTS)
    with pytest.raises(ValueError, match=r"nan\.fits: has NaN"):  # found before predicting, with check_data
        predict_files(str(tmp_path), model_path, check_data=True, output=str(tmp_path / "o.ecsv"), **OPTS)
    assert not (tmp_path / "o.ecsv").exists() and not os.path.exists(str(tmp_path / "o.ecsv") + CHUNKS_SUFFIX)
    filled = predict_files(str(tmp_path), model_path, nan_fill=0.0, **OPTS)
    reference = gamornet_predict_keras(np.nan_to_num(bad, nan=0.0)[None, :, :, None], model_path, SHAPE)
    np.testing.assert_allclose(_probs(filled), reference, rtol=0, atol=ORDER_ATOL)


def test_mixed_good_and_bad_files(images, expected, model_path, tmp_path, monkeypatch):
    from gamornet.predict import files as batch_predict

    _fits_dir(tmp_path, images[:3])
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  = this is not a FITS file" * 20)
    fits.writeto(tmp_path / "wrong.fits", np.zeros((20, 20), np.float32))
    nan = images[3, :, :, 0].copy()
    nan[0, 0] = np.inf
    fits.writeto(tmp_path / "z_nan.fits", nan)
    out = tmp_path / "out.ecsv"
    started = []
    original_backend = batch_predict.ForwardPass
    monkeypatch.setattr(batch_predict, "ForwardPass", lambda *a, **k: started.append(1) or original_backend(*a, **k))
    with pytest.raises(ValueError, match=r"(?s)2 bad input image.*broken\.fits: unreadable.*wrong\.fits: image shape"):
        predict_files(str(tmp_path), model_path, output=str(out), **OPTS)
    assert not started and not out.exists() and not os.path.exists(str(out) + CHUNKS_SUFFIX)

    with pytest.warns(UserWarning, match="3 bad image"):
        table = predict_files(str(tmp_path), model_path, output=str(out), skip_bad=True, **OPTS)
    assert table["id"].tolist() == ["g00.fits", "g01.fits", "g02.fits"]
    np.testing.assert_allclose(_probs(table), expected[:3], rtol=0, atol=ORDER_ATOL)
    skipped = Table.read(str(out) + ".skipped.csv", format="ascii.csv")
    assert skipped["id"].tolist() == ["broken.fits", "wrong.fits", "z_nan.fits"]
    assert table.meta["nskipped"] == 3 and table.meta["skipped"][2].startswith("z_nan.fits: has NaN")
    assert Table.read(out).meta["skipped"] == table.meta["skipped"]


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("ending", [".ecsv", ".csv", ".fits", ".parquet"])
def test_output_formats(images, model_path, tmp_path, ending):
    if ending == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"table{ending}"
    table = predict_files(images[:3], model_path, output=str(out), **OPTS)
    back = read_table(out)
    assert back.colnames == ["id", "p_disk", "p_indeterminate", "p_bulge", "label"]
    np.testing.assert_allclose(_probs(back), _probs(table), rtol=1e-6)
    assert back["label"].tolist() == table["label"].tolist()
    meta = {k.lower(): v for k, v in back.meta.items()}  # CSV: from its sidecar <table>.csv.meta.json
    assert meta["model"] == model_path and meta["policy"] == "keras_sdss" and meta["shard"] == "1/1"
    sidecar = [out.name + ".meta.json"] if ending == ".csv" else []
    assert sorted(os.listdir(tmp_path)) == sorted([out.name, *sidecar])  # no temporary or chunk files left
    with pytest.raises(FileExistsError, match="overwrite"):
        predict_files(images[:3], model_path, output=str(out), **OPTS)


def test_unknown_output_ending(images, model_path, tmp_path):
    with pytest.raises(ValueError, match=r"`output` must end in one of .*Received: output='.*table\.xlsx'"):
        predict_files(images, model_path, output=str(tmp_path / "table.xlsx"), **OPTS)


# ---------------------------------------------------------------- resume


class _Stop(Exception):
    pass


@pytest.mark.backends
def test_interrupted_run_resumes_to_identical_table(images, model_path, tmp_path):
    np.save(tmp_path / "stack.npy", images)
    opts = dict(OPTS, batch_size=2, chunk_size=3, mc_samples=2)
    whole = predict_files(str(tmp_path / "stack.npy"), model_path, output=str(tmp_path / "whole.fits"), **opts)
    out = tmp_path / "run.fits"

    def stop_after_two(done, total):
        assert total == 3
        if done == 2:
            raise _Stop

    with pytest.raises(_Stop):
        predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), on_chunk=stop_after_two, **opts)
    chunks = str(out) + CHUNKS_SUFFIX
    assert not out.exists() and sorted(os.listdir(chunks)) == ["chunk-000000.npz", "chunk-000001.npz", "manifest.json"]
    with pytest.raises(FileExistsError, match="resume"):
        predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), **opts)
    with pytest.raises(ValueError, match="Cannot resume.*chunk_size was 3, now 4"):
        predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), resume=True, **dict(opts, chunk_size=4))
    calls = []
    assert len(predict_files(str(tmp_path / "stack.npy"), model_path, output=str(tmp_path / "other.fits"),
                             **dict(opts, mc_samples=0))) == 7  # other outputs are independent
    resumed = predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), resume=True,
                            on_chunk=lambda done, total: calls.append(done), **opts)
    assert calls == [3]  # only the missing chunk was predicted
    _assert_same_table(resumed, whole)
    _assert_same_table(Table.read(out), Table.read(tmp_path / "whole.fits"))
    assert not os.path.exists(chunks)
    with pytest.raises(_Stop):  # overwrite discards an interrupted run's chunks
        predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), on_chunk=stop_after_two,
                      overwrite=True, **opts)
    assert out.exists() and len(os.listdir(chunks)) == 3  # the old table stays until the new one is complete
    predict_files(str(tmp_path / "stack.npy"), model_path, output=str(out), overwrite=True, **opts)
    _assert_same_table(Table.read(out), Table.read(tmp_path / "whole.fits"))
    assert not os.path.exists(chunks)


def test_killed_process_resumes_to_identical_table(images, model_path, tmp_path):
    directory = tmp_path / "imgs"
    _fits_dir(directory, images)
    out = tmp_path / "run.ecsv"
    script = textwrap.dedent(f"""
        import os, signal
        from gamornet.predict import predict_files

        def kill(done, total):
            if done == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        predict_files({str(directory)!r}, {model_path!r}, input_shape=(32, 32, 1), engine="keras",
                      output={str(out)!r}, batch_size=2, chunk_size=2, progress=False, on_chunk=kill)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists()
    assert len(glob.glob(str(out) + CHUNKS_SUFFIX + "/chunk-*.npz")) == 2
    resumed = predict_files(str(directory), model_path, output=str(out), resume=True, batch_size=2, chunk_size=2,
                            **OPTS)
    whole = predict_files(str(directory), model_path, batch_size=2, chunk_size=2, **OPTS)
    _assert_same_table(resumed, whole)
    _assert_same_table(Table.read(out), whole)


# ---------------------------------------------------------------- shards and merge


def test_shards_cover_everything_once_and_merge(images, model_path, tmp_path):
    _fits_dir(tmp_path / "imgs", images[:4])
    np.save(tmp_path / "imgs" / "stack.npy", images[4:])
    whole = predict_files(str(tmp_path / "imgs"), model_path, output=str(tmp_path / "whole.ecsv"), **OPTS)
    parts, paths = [], []
    for i in (1, 2, 3):
        paths.append(str(tmp_path / f"part{i}.ecsv"))
        parts.append(predict_files(str(tmp_path / "imgs"), model_path, shard=f"{i}/3", output=paths[-1], **OPTS))
    ids = [part["id"].tolist() for part in parts]
    assert [len(i) for i in ids] == [2, 2, 3]
    assert sum(ids, []) == whole["id"].tolist()  # disjoint contiguous blocks, union = whole
    assert parts[1].meta["shard"] == "2/3" and parts[1].meta["ntotal"] == 7

    merged = merge_tables(paths[::-1], str(tmp_path / "merged.ecsv"))  # any order of the shard files
    _assert_same_table(merged, whole)
    assert merged.meta == whole.meta
    with pytest.raises(ValueError, match=r"shard 2/3 is in both"):
        merge_tables([paths[0], paths[1], paths[1]])
    with pytest.warns(UserWarning, match=r"missing: \[3\]"):
        assert len(merge_tables(paths[:2])) == 4
    other = predict_files(str(tmp_path / "imgs"), model_path, shard="3/3", policy="keras_candels",
                          output=str(tmp_path / "other.ecsv"), **OPTS)
    assert other.meta["policy"] == "keras_candels"
    with pytest.raises(ValueError, match=r"policy is 'keras_sdss' in .* but 'keras_candels'"):
        merge_tables([paths[0], paths[1], str(tmp_path / "other.ecsv")])
    Table.read(paths[0]).write(tmp_path / "plain.csv")  # CSV without its metadata sidecar: nothing to check
    with pytest.raises(ValueError, match=r"plain\.csv' is a \.csv table without its metadata sidecar"):
        merge_tables([paths[0], str(tmp_path / "plain.csv")])
    copy = read_table(paths[0])
    del copy.meta["shard"]
    write_table(copy, str(tmp_path / "copy.csv"))
    with pytest.raises(ValueError, match=r"id 'g00\.fits' appears more than once"):
        merge_tables([paths[0], str(tmp_path / "copy.csv")])


# ---------------------------------------------------------------- MC dropout


@pytest.mark.backends
def test_mc_samples_add_mean_and_std(images, expected, model_path):
    table = predict_files(images, model_path, mc_samples=4, batch_size=3, **OPTS)
    for c in CLASS_NAMES:
        assert f"p_{c}_mean" in table.colnames and f"p_{c}_std" in table.colnames
    np.testing.assert_allclose(_probs(table), expected, rtol=0, atol=ORDER_ATOL)  # p_* stay deterministic
    assert (_probs(table, "_std") > 0).all()
    np.testing.assert_allclose(_probs(table, "_mean").sum(axis=1), 1.0, atol=1e-5)
    assert table["label"].tolist() == classify_probabilities(_probs(table, "_mean"), "keras_sdss").tolist()
    assert table.meta["mc"] == 4
    again = predict_files(images, model_path, mc_samples=4, batch_size=3, **OPTS)
    _assert_same_table(table, again)  # seeded: reproducible
    other = predict_files(images, model_path, mc_samples=4, batch_size=3, seed=1, **OPTS)
    assert not np.array_equal(_probs(other, "_std"), _probs(table, "_std"))
    with pytest.raises(ValueError, match="Received: mc_samples=2, flavor='tflearn'"):
        predict_files(images, model_path, flavor="tflearn", mc_samples=2, **OPTS)


# ---------------------------------------------------------------- multi-device


def test_mirrored_strategy_on_two_logical_cpus(images, model_path, tmp_path):
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from gamornet.predict import files as batch_predict

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        calls = []
        from gamornet.keras_backend import forward as keras_forward

        original = keras_forward._distributed_forward
        keras_forward._distributed_forward = lambda *a: calls.append(1) or original(*a)
        opts = dict(input_shape=(32, 32, 1), batch_size=3, progress=False)
        one = batch_predict.predict_files({str(tmp_path / "x.npy")!r}, {model_path!r}, strategy=None, **opts)
        two = batch_predict.predict_files({str(tmp_path / "x.npy")!r}, {model_path!r}, strategy=strategy, **opts)
        assert calls, "the strategy was not used"
        assert one["id"].tolist() == two["id"].tolist()
        for c in ("p_disk", "p_indeterminate", "p_bulge"):
            assert np.abs(np.asarray(one[c]) - np.asarray(two[c])).max() < 1e-5
        mc = batch_predict.predict_files({str(tmp_path / "x.npy")!r}, {model_path!r}, strategy=strategy,
                                         mc_samples=2, **opts)
        assert (np.asarray(mc["p_bulge_std"]) > 0).all()
        print("MIRRORED-OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, timeout=300)
    assert proc.returncode == 0 and b"MIRRORED-OK" in proc.stdout, proc.stderr.decode()[-3000:]


# ---------------------------------------------------------------- CLI and bad arguments


def test_cli_predict_shards_and_merge(images, model_path, tmp_path, capsys):
    from gamornet.cli import COMMAND_MODULES, main

    assert "gamornet.cli.predict" in COMMAND_MODULES
    _fits_dir(tmp_path / "imgs", images[:5])
    pattern = str(tmp_path / "imgs" / "*.fits")
    common = ["--model", model_path, "--input-shape", "32,32,1", "--quiet", "--batch-size", "2"]
    assert main(["predict", pattern, *common, "--output", str(tmp_path / "all.fits")]) == 0
    for i in (1, 2):
        assert main(["predict", pattern, *common, "--shard", f"{i}/2", "--output", str(tmp_path / f"p{i}.fits"),
                     "--chunk-size", "2"]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "p2.fits"), str(tmp_path / "p1.fits"), "--output",
                 str(tmp_path / "merged.ecsv")]) == 0
    assert "5 images" in capsys.readouterr().out
    _assert_same_table(read_table(tmp_path / "merged.ecsv"), read_table(tmp_path / "all.fits"))
    np.testing.assert_allclose(_probs(read_table(tmp_path / "all.fits")),
                               _probs(predict_files(images[:5], model_path, **OPTS)), rtol=0, atol=ORDER_ATOL)
    assert main(["predict", pattern, *common, "--mc-samples", "2"]) == 0  # no --output: CSV on stdout
    printed = Table.read(capsys.readouterr().out, format="ascii.csv")
    assert len(printed) == 5 and "p_disk_std" in printed.colnames


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shard", "3/2"], "argument --shard: `shard` must be 'I/N'.*Received: shard='3/2'"),
        (["--policy", "fancy"], "argument --policy: `policy` must be one of.*Received: policy='fancy'"),
        (["--input-shape", "32,32"], "argument --input-shape: .*Received: input_shape=\\(32, 32\\)"),
        (["--batch-size", "0"], "argument --batch-size: .*Received: batch_size='0'"),
    ],
)
def test_cli_bad_arguments(model_path, tmp_path, capsys, extra, message):
    from gamornet.cli import main

    with pytest.raises(SystemExit) as info:
        main(["predict", str(tmp_path), "--model", model_path, "--input-shape", "32,32,1", *extra])
    assert info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_bad_arguments_name_argument_and_value(images, model_path, tmp_path, capsys):
    from gamornet.cli import main

    missing = str(tmp_path / "nowhere.fits")
    assert main(["predict", missing, "--model", model_path, "--input-shape", "32,32,1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "gamornet predict: error: `inputs`" in err and f"Received: inputs=['{missing}']" in err
    with pytest.raises(ValueError, match=r"`shard` must be .*Received: shard='3/2'"):
        predict_files(images, model_path, shard="3/2", **OPTS)
    with pytest.raises(ValueError, match=r"`shard` .*Received: shard=\(0, 2\)"):
        predict_files(images, model_path, shard=(0, 2), **OPTS)
    with pytest.raises(ValueError, match=r"`policy` must be one of .*Received: policy='fancy'"):
        predict_files(images, model_path, policy="fancy", **OPTS)
    with pytest.raises(FileNotFoundError, match=r"`inputs`: .*nowhere\.fits' does not exist\. Received"):
        predict_files(missing, model_path, **OPTS)
    with pytest.raises(FileNotFoundError, match=r"`inputs`: .*pattern matches no image file\. Received"):
        predict_files(str(tmp_path / "*.fits"), model_path, **OPTS)
    with pytest.raises(ValueError, match=r"`input_shape` is required.*Received: input_shape=None"):
        predict_files(images, model_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"`model`: .*Received: model='no_model\.keras'"):
        predict_files(images, "no_model.keras", **OPTS)
    with pytest.raises(ValueError, match=r"`resume` needs an `output`"):
        predict_files(images, model_path, resume=True, **OPTS)
    with pytest.raises(ValueError, match=r"`crop_pad` must be a finite number.*Received: crop_pad=nan"):
        predict_files(images, model_path, crop_pad=float("nan"), **OPTS)


# ---------------------------------------------------------------- TFLearn flavour (last: builds a TF1 graph)


def test_tflearn_flavor_uses_gamornet_predict_tflearn(images, tmp_path):
    from gamornet.tflearn_module import build_tflearn_network, gamornet_predict_tflearn, save_tflearn_checkpoint

    network = build_tflearn_network(SHAPE)
    prefix = save_tflearn_checkpoint(network, str(tmp_path / "check-1"))
    network.close()
    np.save(tmp_path / "x.npy", images)
    table = predict_files(str(tmp_path / "x.npy"), prefix, flavor="tflearn", batch_size=3, **OPTS)
    reference = gamornet_predict_tflearn(images, prefix, SHAPE, progress=False)
    np.testing.assert_allclose(_probs(table), reference, rtol=0, atol=ORDER_ATOL)
    assert table.meta["flavor"] == "tflearn" and table.meta["policy"] == "tflearn_sdss"
