"""File prediction under faults: concurrent writers, damaged inputs, failed runs, resumes, arguments, FITS scaling."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gamornet.core.network import CLASS_NAMES
from gamornet.predict import files as batch_predict
from gamornet.predict import fits as fits_reader
from gamornet.predict import images as reading
from gamornet.predict import inputs as listing
from gamornet.predict import predict_files
from gamornet.predict.tables import CHUNKS_SUFFIX, merge_tables, read_table

from helpers import NARROW_WIDTHS, REPO

SHAPE = (32, 32, 1)
OPTS = {"input_shape": SHAPE, "progress": False}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """Two small, narrow models with different weights."""
    from gamornet.keras_backend.model import build_keras_model

    directory = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (3, 4):
        path = directory / f"model{seed}.keras"
        build_keras_model(SHAPE, seed=seed, widths=NARROW_WIDTHS).save(path)
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).normal(10.0, 3.0, size=(7, *SHAPE)).astype(np.float32)


@pytest.fixture
def started(monkeypatch) -> list:
    """Records every start of a model backend (a forward pass would follow)."""
    calls: list = []
    original = batch_predict.ForwardPass
    monkeypatch.setattr(batch_predict, "ForwardPass", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def _probs(table: Table) -> np.ndarray:
    return np.stack([np.asarray(table[f"p_{c}"]) for c in CLASS_NAMES], axis=1)


def _fits_dir(directory, images) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, image in enumerate(images):
        fits.writeto(os.path.join(directory, f"g{i:02d}.fits"), image[:, :, 0], overwrite=True)


def _assert_same_table(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for name in a.colnames:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


# ---------------------------------------------------------------- one writer per output


def _wait_for(path, proc, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.1)


def test_second_writer_in_another_process_fails_at_once(models, images, tmp_path, capsys, started):
    model_a, model_b = models
    np.save(tmp_path / "stack.npy", images)
    stack, out = str(tmp_path / "stack.npy"), str(tmp_path / "out.ecsv")
    first_chunk, go = tmp_path / "first_chunk_done", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, time
        from gamornet.predict import predict_files

        def hold(done, total):
            if done == 1:
                open({str(first_chunk)!r}, "w").close()
                deadline = time.monotonic() + 300
                while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
                    time.sleep(0.05)

        predict_files({stack!r}, {model_a!r}, input_shape=(32, 32, 1), output={out!r}, batch_size=2,
                      chunk_size=2, progress=False, on_chunk=hold)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stderr=subprocess.PIPE)
    try:
        _wait_for(first_chunk, proc)
        message = rf"(?s)being written by another run.*{re.escape(out + '.lock')}.*Received: output='{re.escape(out)}'"
        with pytest.raises(RuntimeError, match=message):  # another model, replacing the output
            predict_files(stack, model_b, output=out, overwrite=True, batch_size=2, chunk_size=2, **OPTS)
        with pytest.raises(RuntimeError, match=message):  # the same run
            predict_files(stack, model_a, output=out, resume=True, batch_size=2, chunk_size=2, **OPTS)
        assert not started  # refused before any model was loaded
        from gamornet.cli import main

        assert main(["predict", stack, "--model", model_b, "--input-shape", "32,32,1", "--output", out,
                     "--overwrite", "--quiet"]) == 2
        assert "being written by another run" in capsys.readouterr().err
    finally:
        go.touch()
        proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    table = read_table(out)
    assert table.meta["model"] == model_a
    _assert_same_table(table, predict_files(stack, model_a, batch_size=2, **OPTS))  # model A's rows only
    assert sorted(os.listdir(tmp_path)) == ["first_chunk_done", "go", "out.ecsv", "stack.npy"]  # lock released


def test_second_writer_in_the_same_process_fails_and_failures_release_the_lock(models, images, tmp_path):
    model_a, model_b = models
    out = str(tmp_path / "out.fits")
    part = str(tmp_path / "part.ecsv")
    predict_files(images[:2], model_b, output=part, **OPTS)
    refused = []

    def second_writer(done, total):
        with pytest.raises(RuntimeError, match=r"being written by another run.*out\.fits\.lock") as info:
            predict_files(images, model_b, output=out, overwrite=True, **OPTS)
        with pytest.raises(RuntimeError, match=r"being written by another run.*out\.fits\.lock"):
            merge_tables([part], output=out, overwrite=True)
        refused.append(str(info.value))

    table = predict_files(images, model_a, output=out, chunk_size=3, on_chunk=second_writer, **OPTS)
    assert len(refused) == 3 and table.meta["model"] == model_a
    _assert_same_table(read_table(out), predict_files(images, model_a, **OPTS))

    def fail(done, total):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        predict_files(images, model_b, output=out, overwrite=True, chunk_size=3, on_chunk=fail, **OPTS)
    assert not os.path.exists(out + ".lock")
    table = predict_files(images, model_b, output=out, resume=True, chunk_size=3, **OPTS)  # not locked any more
    assert table.meta["model"] == model_b


# ---------------------------------------------------------------- damaged inputs, found before predicting


def _truncate(path, keep_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)


def test_cut_short_fits_and_non_real_npy_are_bad_before_prediction(images, models, tmp_path, started):
    _fits_dir(tmp_path, images[:3])
    fits.writeto(tmp_path / "cut_plain.fits", images[3, :, :, 0])
    _truncate(tmp_path / "cut_plain.fits", 2880 + 1000)  # header whole, 1000 of 4096 data bytes
    blank = fits.PrimaryHDU(np.arange(32 * 32, dtype=np.int32).reshape(32, 32))
    blank.header["BLANK"] = -1
    blank.writeto(tmp_path / "cut_blank.fits")  # read by astropy
    _truncate(tmp_path / "cut_blank.fits", 2880 + 2000)
    tiles = tmp_path / "cut_tiles.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.arange(32 * 32, dtype=np.int32).reshape(32, 32))]).writeto(
        tiles)
    with fits.open(tiles) as hdul:
        _truncate(tiles, hdul.fileinfo(1)["datLoc"] + 10)  # the compressed table's data cut short
    np.save(tmp_path / "flags.npy", np.ones((2, 32, 32), dtype=bool))
    np.save(tmp_path / "waves.npy", np.ones((2, 32, 32), dtype=np.complex64))
    out = tmp_path / "out.ecsv"
    bad_names = ["cut_blank.fits", "cut_plain.fits", "cut_tiles.fits.fz", "flags.npy", "waves.npy"]
    with pytest.raises(ValueError) as info:
        predict_files(str(tmp_path), models[0], output=str(out), chunk_size=1, **OPTS)
    assert sorted(image_id for image_id, _ in info.value.bad) == bad_names
    text = str(info.value)
    assert "cut_plain.fits: FITS data cut short: HDU 0 (BITPIX=-32, NAXIS1=32, NAXIS2=32) needs 4096 bytes" in text
    assert "flags.npy: .npy pixels must be real int or float numbers, not bool" in text
    assert "waves.npy: .npy pixels must be real int or float numbers, not complex64" in text
    assert not started and not out.exists() and not os.path.exists(str(out) + CHUNKS_SUFFIX)

    with pytest.warns(UserWarning, match="5 bad image"):
        table = predict_files(str(tmp_path), models[0], output=str(out), chunk_size=1, skip_bad=True, **OPTS)
    assert table["id"].tolist() == ["g00.fits", "g01.fits", "g02.fits"]
    assert sorted(Table.read(str(out) + ".skipped.csv", format="ascii.csv")["id"].tolist()) == bad_names


def test_broken_symlinks_are_bad_files(images, models, tmp_path, started):
    _fits_dir(tmp_path / "imgs", images[:2])
    os.symlink(tmp_path / "gone.fits", tmp_path / "imgs" / "zz.fits")
    for inputs in (str(tmp_path / "imgs"), str(tmp_path / "imgs" / "*.fits")):
        with pytest.raises(ValueError, match=r"zz\.fits: broken symbolic link \(to '.*gone\.fits'"):
            predict_files(inputs, models[0], **OPTS)
        assert not started
        with pytest.warns(UserWarning, match="1 bad image"):
            table = predict_files(inputs, models[0], skip_bad=True, **OPTS)
        assert table["id"].tolist() == ["g00.fits", "g01.fits"]
        assert table.meta["skipped"] == [f"zz.fits: broken symbolic link (to '{tmp_path / 'gone.fits'}', which does "
                                         "not exist)"]
        started.clear()


# ---------------------------------------------------------------- resume checks the run


def test_resume_onto_a_finished_table_checks_model_inputs_and_settings(images, models, tmp_path):
    model_a, model_b = models
    _fits_dir(tmp_path / "night1", images[:4])
    _fits_dir(tmp_path / "night2", images[3:])  # the same file names, other images
    out = str(tmp_path / "out.ecsv")
    first = predict_files(str(tmp_path / "night1"), model_a, output=out, **OPTS)
    assert len(first.meta["run_sha256"]) == 64
    again = predict_files(str(tmp_path / "night1"), model_a, output=out, resume=True, **OPTS)
    _assert_same_table(again, first)
    refusals = [
        (dict(model=model_b), r"model is '.*model3\.keras' there, '.*model4\.keras' now"),
        (dict(inputs=str(tmp_path / "night2")), "the input files, the model file or a setting"),
        (dict(batch_size=2), "the input files, the model file or a setting"),
        (dict(policy="keras_candels"), "policy is 'keras_sdss' there, 'keras_candels' now"),
        (dict(shard="1/2"), r"shard is '1/1' there, '1/2' now"),
    ]
    for change, reason in refusals:
        args = dict(inputs=str(tmp_path / "night1"), model=model_a, **OPTS) | change
        with pytest.raises(ValueError, match=rf"Cannot resume: .*out\.ecsv is the finished table of another run "
                                             rf"\({reason}.*overwrite=True"):
            predict_files(output=out, resume=True, **args)
    _assert_same_table(read_table(out), first)  # untouched

    old = read_table(out)
    del old.meta["run_sha256"]  # as older versions wrote it
    old.write(out, format="ascii.ecsv", overwrite=True)
    with pytest.raises(ValueError, match="records no run digest"):
        predict_files(str(tmp_path / "night1"), model_a, output=out, resume=True, **OPTS)
    csv_out = str(tmp_path / "out.csv")
    predict_files(str(tmp_path / "night1"), model_a, output=csv_out, **OPTS)
    _assert_same_table(predict_files(str(tmp_path / "night1"), model_a, output=csv_out, resume=True, **OPTS),
                       read_table(csv_out))  # checked through its metadata sidecar
    with pytest.raises(ValueError, match="is the finished table of another run"):
        predict_files(str(tmp_path / "night1"), model_b, output=csv_out, resume=True, **OPTS)
    os.remove(csv_out + ".meta.json")
    with pytest.raises(ValueError, match=r"a CSV table without its \.meta\.json sidecar"):
        predict_files(str(tmp_path / "night1"), model_a, output=csv_out, resume=True, **OPTS)


# ---------------------------------------------------------------- batch padding


def test_batches_are_padded_only_to_the_images_of_the_run(images, models, tmp_path, monkeypatch):
    from gamornet.keras_backend import forward as keras_forward

    sizes: list[int] = []
    original = keras_forward.compiled_forward

    def recording(model, training=False):
        forward = original(model, training=training)
        return lambda batch: sizes.append(len(batch)) or forward(batch)

    monkeypatch.setattr(keras_forward, "compiled_forward", recording)
    keras_only = {**OPTS, "engine": "keras"}  # the sizes of the batches the Keras model sees
    one = predict_files(images[:1], models[0], batch_size=99_999_999_999, **keras_only)
    assert sizes == [1]
    _assert_same_table(one, predict_files(images[:1], models[0], batch_size=1, **keras_only))

    np.save(tmp_path / "stack.npy", images)
    stack = str(tmp_path / "stack.npy")
    sizes.clear()
    whole = predict_files(stack, models[0], batch_size=4096, **keras_only)
    assert sizes == [7]
    for batch_size, chunk_size in ((4096, 4096), (3, 2), (4, 3)):
        sizes.clear()
        parts = [predict_files(stack, models[0], batch_size=batch_size, chunk_size=chunk_size, shard=f"{i}/3",
                               **keras_only) for i in (1, 2, 3)]
        assert set(sizes) == {min(batch_size, 7)}  # every shard pads to the whole run's batch
        reference = predict_files(stack, models[0], batch_size=batch_size, **keras_only)
        for part in parts:  # each image at the same row of a batch of the same size: identical results
            rows = [reference["id"].tolist().index(i) for i in part["id"].tolist()]
            _assert_same_table(part, reference[rows])
        np.testing.assert_allclose(_probs(reference), _probs(whole), atol=1e-5)  # float32, other batch sizes


# ---------------------------------------------------------------- failed runs


def test_failed_run_removes_its_chunks_or_records_its_error(images, models, tmp_path):
    directory = tmp_path / "imgs"
    _fits_dir(directory, images)
    out = str(tmp_path / "out.ecsv")
    chunks = out + CHUNKS_SUFFIX
    opts = dict(OPTS, output=out, batch_size=2, chunk_size=2)
    good = images[0, :, :, 0]
    nan = good.copy()
    nan[5, 5] = np.nan

    fits.writeto(directory / "g00.fits", nan, overwrite=True)  # found in the first chunk
    with pytest.raises(ValueError, match=r"g00\.fits: has NaN"):
        predict_files(str(directory), models[0], **opts)
    assert sorted(os.listdir(tmp_path)) == ["imgs"]  # no chunk was complete: nothing left
    fits.writeto(directory / "g00.fits", good, overwrite=True)

    fits.writeto(directory / "g04.fits", nan, overwrite=True)  # found in the third chunk
    with pytest.raises(ValueError, match=r"g04\.fits: has NaN"):
        predict_files(str(directory), models[0], **opts)
    assert sorted(os.listdir(chunks)) == ["chunk-000000.npz", "chunk-000001.npz", "manifest.json"]
    with open(os.path.join(chunks, "manifest.json")) as f:
        assert json.load(f)["failed"].startswith("BadImageError: g04.fits: has NaN")
    with pytest.raises(FileExistsError, match=r"chunks of a failed run \(2 complete; it failed with: "
                                              r"BadImageError: g04\.fits: has NaN.*resume=True"):
        predict_files(str(directory), models[0], **opts)
    fits.writeto(directory / "g04.fits", images[4, :, :, 0], overwrite=True)

    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_files(str(directory), models[0], resume=True, on_chunk=interrupt, **opts)
    with pytest.raises(FileExistsError, match="chunks of an interrupted run"):
        predict_files(str(directory), models[0], **opts)
    resumed = predict_files(str(directory), models[0], resume=True, **opts)
    _assert_same_table(resumed, predict_files(str(directory), models[0], batch_size=2, **OPTS))
    assert sorted(os.listdir(tmp_path)) == ["imgs", "out.ecsv"]


# ---------------------------------------------------------------- argument errors


@pytest.fixture(scope="module")
def shard_table(images, models, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("shard") / "part.ecsv")
    predict_files(images[:2], models[0], output=path, **OPTS)
    return path


@pytest.mark.parametrize(
    "function, arguments, error, message",
    [
        ("predict", dict(inputs=None), TypeError, r"`inputs`: must be a path.*Received: inputs=None"),
        ("predict", dict(inputs=5), TypeError, r"`inputs`: must be a path.*Received: inputs=5"),
        ("predict", dict(output=5), TypeError, r"`output` must be a file path.*Received: output=5"),
        ("predict", dict(output="{tmp}/missing/out.ecsv"), FileNotFoundError,
         r"`output`: directory .*missing' does not exist\. Received: output="),
        ("predict", dict(output="{tmp}/dir.ecsv"), ValueError, r"`output` is a directory.*Received: output="),
        ("predict", dict(workers="a"), ValueError, r"`workers` must be an integer >= 1\. Received: workers='a'"),
        ("predict", dict(workers=-3), ValueError, r"`workers` must be an integer >= 1\. Received: workers=-3"),
        ("predict", dict(read_threads=0), ValueError,
         r"`read_threads` must be an integer >= 1\. Received: read_threads=0"),
        ("predict", dict(prefetch=-1), ValueError, r"`prefetch` must be an integer >= 0\. Received: prefetch=-1"),
        ("predict", dict(on_chunk=5), TypeError, r"`on_chunk` must be a callable.*Received: on_chunk=5"),
        ("merge", dict(paths=None), TypeError, r"`paths` must be a table path.*Received: paths=None"),
        ("merge", dict(paths=["{tmp}"]), ValueError, r"`paths`: '.*' is a directory, not a table file\. Received"),
        ("merge", dict(paths=["{tmp}/no_id.ecsv"]), ValueError,
         r"`paths`: '.*no_id\.ecsv' has no `id` column.*Received: paths="),
        ("merge", dict(paths=["{table}"], output=5), TypeError, r"`output` must be a file path.*Received: output=5"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(images, models, shard_table, tmp_path, started, function,
                                                   arguments, error, message):
    os.makedirs(tmp_path / "dir.ecsv")
    Table({"name": ["a"], "p_disk": [0.5]}).write(tmp_path / "no_id.ecsv")
    before = sorted(os.listdir(tmp_path))
    arguments = {key: value.format(tmp=tmp_path, table=shard_table) if isinstance(value, str) else
                 [v.format(tmp=tmp_path, table=shard_table) for v in value] if isinstance(value, list) else value
                 for key, value in arguments.items()}
    with pytest.raises(error, match=message):
        if function == "predict":
            predict_files(**{"inputs": images, "model": models[0], "output": str(tmp_path / "out.ecsv"), **OPTS,
                             **arguments})
        else:
            merge_tables(**{"output": str(tmp_path / "merged.ecsv"), **arguments})
    assert not started and sorted(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------- FITS pixels: the direct reader equals astropy


def _card(key: str, value) -> str:
    if isinstance(value, bool):
        text = "T" if value else "F"
    elif isinstance(value, float):
        text = repr(value).upper()
    else:
        text = str(value)
    return f"{key:<8}= {text:>20}".ljust(80)


def _fits_bytes(raw: np.ndarray, bitpix: int, cards: list[tuple[str, object]]) -> bytes:
    """A one-HDU FITS file written card by card (duplicates kept as given)."""
    header = [("SIMPLE", True), ("BITPIX", bitpix), ("NAXIS", 2), ("NAXIS1", raw.shape[1]),
              ("NAXIS2", raw.shape[0]), *cards]
    text = "".join(_card(k, v) for k, v in header) + "END".ljust(80)
    text = text.ljust(-(-len(text) // 2880) * 2880)
    data = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    return text.encode("ascii") + data + b"\0" * (-len(data) % 2880)


_RAW = {
    8: lambda rng: rng.integers(0, 256, (32, 32)).astype(np.uint8),
    16: lambda rng: rng.integers(-32768, 32768, (32, 32)).astype(np.int16),
    32: lambda rng: rng.integers(-2**31, 2**31, (32, 32)).astype(np.int32),
    64: lambda rng: rng.integers(-2**62, 2**62, (32, 32)).astype(np.int64),
    -32: lambda rng: (rng.normal(size=(32, 32)) * 1000).astype(np.float32),
    -64: lambda rng: rng.normal(size=(32, 32)) * 1000,
}
_CONVENTION = {8: -128, 16: 32768, 32: 2**31, 64: 2**63, -32: 32768, -64: 32768}


@pytest.mark.parametrize("bitpix", [8, 16, 32, 64, -32, -64])
@pytest.mark.parametrize("scaling", ["none", "bscale", "bzero", "both", "convention"])
def test_direct_fits_reader_reads_exactly_what_astropy_reads(tmp_path, bitpix, scaling):
    raw = _RAW[bitpix](np.random.default_rng(bitpix + 100))
    cards = {"none": [], "bscale": [("BSCALE", 1.5e-05)], "bzero": [("BZERO", 10.25)],
             "both": [("BSCALE", 0.05), ("BZERO", -3.7)], "convention": [("BZERO", _CONVENTION[bitpix])]}[scaling]
    duplicates = {"single": [], "bscale twice": [("BSCALE", 0.5), ("BSCALE", 2.0)],
                  "bzero twice": [("BZERO", 1.5), ("BZERO", 7.0)]}
    for label, extra in duplicates.items():
        content = _fits_bytes(raw, bitpix, cards + extra)
        (tmp_path / "x.fits").write_bytes(content)
        (tmp_path / "x.fits.gz").write_bytes(gzip.compress(content))  # always read by astropy
        theirs = fits.getdata(tmp_path / "x.fits")
        read = {}
        for name in ("x.fits", "x.fits.gz"):
            refs, _ = listing.list_images(str(tmp_path / name))
            good, _ = reading.scan_images(refs, SHAPE)
            read[name] = reading.ImageReader(SHAPE).read(good).images[0, :, :, 0]
        expected = np.asarray(theirs).astype(np.float32)
        for name, ours in read.items():
            assert ours.dtype == expected.dtype and np.array_equal(ours, expected), (label, name)
        pixels = fits_reader.plain_fits_pixels(str(tmp_path / "x.fits"))
        if label == "single":
            assert pixels is not None  # the direct path was taken
            direct = fits_reader.physical_values(raw.astype(raw.dtype.newbyteorder(">")), pixels.bscale, pixels.bzero)
            native = direct.dtype.newbyteorder("="), theirs.dtype.newbyteorder("=")
            assert native[0] == native[1] and np.array_equal(direct, theirs)  # also before the cast
        else:
            assert pixels is None  # duplicated scaling keywords: astropy reads the file


# ---------------------------------------------------------------- file modes


def test_written_files_get_the_mode_of_a_plain_open(images, models, tmp_path):
    old_umask = os.umask(0o022)
    try:
        np.save(tmp_path / "stack.npy", images)
        np.save(tmp_path / "flags.npy", np.ones((2, 32, 32), dtype=bool))
        out = str(tmp_path / "out.ecsv")

        def stop(done, total):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            predict_files(str(tmp_path), models[0], output=out, chunk_size=3, skip_bad=True, on_chunk=stop, **OPTS)
        chunks = out + CHUNKS_SUFFIX
        modes = {name: stat.S_IMODE(os.stat(os.path.join(chunks, name)).st_mode) for name in os.listdir(chunks)}
        assert modes == {"chunk-000000.npz": 0o644, "manifest.json": 0o644}
        with pytest.warns(UserWarning, match="1 bad image"):
            predict_files(str(tmp_path), models[0], output=out, chunk_size=3, skip_bad=True, resume=True, **OPTS)
        for path in (out, out + ".skipped.csv"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path
    finally:
        os.umask(old_umask)
