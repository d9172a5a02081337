"""File prediction on each engine: what the tables record, resume and merge across engines, a run without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.table import Table

from gamornet import engines
from gamornet.core.network import CLASS_NAMES
from gamornet.predict import predict_files
from gamornet.predict.tables import merge_tables, read_table

from helpers import ORDER_ATOL, REPO, saved_keras_model

SHAPE = (32, 32, 1)
OPTS = {"input_shape": SHAPE, "progress": False}
needs_openvino = pytest.mark.skipif(not engines.openvino_available(), reason="openvino is not installed")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return saved_keras_model(tmp_path_factory.mktemp("model"), SHAPE, seed=5)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(2).normal(10.0, 3.0, size=(9, *SHAPE)).astype(np.float32)


def _probs(table: Table) -> np.ndarray:
    return np.stack([np.asarray(table[f"p_{c}"]) for c in CLASS_NAMES], axis=1)


def test_keras_table_records_engine_and_precision(images, model_path, tmp_path, capsys):
    table = predict_files(images, model_path, engine="keras", input_shape=SHAPE, output=str(tmp_path / "t.ecsv"))
    assert (table.meta["engine"], table.meta["precision"]) == ("keras", "float32")
    assert "Predicting 9 images (keras, float32)" in capsys.readouterr().err
    written = read_table(tmp_path / "t.ecsv")
    assert (written.meta["engine"], written.meta["precision"]) == ("keras", "float32")
    mc = predict_files(images, model_path, mc_samples=2, **OPTS)  # "auto" with MC dropout: Keras
    assert mc.meta["engine"] == "keras"


def test_bad_engine_is_refused_before_any_work(images, model_path, tmp_path):
    output = str(tmp_path / "t.ecsv")
    with pytest.raises(ValueError, match=r"`engine` must be one of.*Received: engine='fast'"):
        predict_files(images, model_path, engine="fast", output=output, **OPTS)
    with pytest.raises(ValueError, match=r"`precision` must be one of.*Received: precision='int8'"):
        predict_files(images, model_path, precision="int8", output=output, **OPTS)
    with pytest.raises(ValueError, match=r"Monte-Carlo dropout needs engine='keras'.*mc_samples=2"):
        predict_files(images, model_path, engine="openvino", mc_samples=2, output=output, **OPTS)
    assert os.listdir(tmp_path) == []


@pytest.mark.openvino
@needs_openvino
def test_openvino_table_resume_and_merge(images, model_path, tmp_path, capsys):
    keras = predict_files(images, model_path, engine="keras", output=str(tmp_path / "k.ecsv"), **OPTS)
    whole = predict_files(images, model_path, engine="openvino", batch_size=4, input_shape=SHAPE,
                          output=str(tmp_path / "o.ecsv"))
    assert "Predicting 9 images (openvino, float32)" in capsys.readouterr().err
    assert (whole.meta["engine"], whole.meta["precision"]) == ("openvino", "float32")
    np.testing.assert_allclose(_probs(whole), _probs(keras), rtol=0, atol=ORDER_ATOL)
    # shards and chunks of OpenVINO runs: each image at the same row of a batch of the same size
    parts = [str(tmp_path / f"o{i}.ecsv") for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        predict_files(images, model_path, engine="openvino", batch_size=4, shard=f"{i}/2", chunk_size=3,
                      output=part, **OPTS)
    merged = merge_tables(parts)
    for name in whole.colnames:
        assert np.array_equal(np.asarray(merged[name]), np.asarray(whole[name])), name
    # another engine's table is neither resumed nor merged
    with pytest.raises(ValueError, match=r"Cannot resume: .*engine is 'keras' there, 'openvino' now"):
        predict_files(images, model_path, engine="openvino", resume=True, output=str(tmp_path / "k.ecsv"), **OPTS)
    keras_part = str(tmp_path / "k2.ecsv")
    predict_files(images, model_path, engine="keras", shard="2/2", output=keras_part, **OPTS)
    with pytest.raises(ValueError, match=r"Cannot merge: engine is 'openvino' in .* but 'keras' in"):
        merge_tables([parts[0], keras_part])
    older = Table.read(parts[1])
    del older.meta["engine"], older.meta["precision"]
    older.write(tmp_path / "older.ecsv")
    with pytest.raises(ValueError, match=r"Cannot merge: engine is 'openvino' in .* but not recorded in"):
        merge_tables([parts[0], str(tmp_path / "older.ecsv")])
    resumed = predict_files(images, model_path, engine="openvino", batch_size=4, resume=True,
                            output=str(tmp_path / "o.ecsv"), **OPTS)
    assert resumed.meta["run_sha256"] == whole.meta["run_sha256"]


def test_openvino_is_a_dependency_and_the_default_without_an_nvidia_gpu(images, model_path, tmp_path):
    import importlib.metadata
    import re

    from gamornet.cli import main
    from gamornet.core.hardware import nvidia_gpu_visible

    required = [r for r in importlib.metadata.requires("gamornet") or [] if re.match(r"openvino\b", r)]
    assert required and all("extra ==" not in r for r in required), required
    np.save(tmp_path / "x.npy", images)
    output = str(tmp_path / "default.ecsv")
    assert main(["predict", str(tmp_path / "x.npy"), "--model", model_path, "--input-shape", "32,32,1", "--quiet",
                 "--output", output]) == 0
    table = read_table(output)
    expected = ("keras" if nvidia_gpu_visible() else "openvino", "float32")
    assert (table.meta["engine"], table.meta["precision"]) == expected
    reference = predict_files(images, model_path, engine="keras", **OPTS)
    np.testing.assert_allclose(_probs(table), _probs(reference), rtol=0, atol=ORDER_ATOL)


@pytest.mark.openvino
@needs_openvino
def test_cli_engine_and_precision(images, model_path, tmp_path, capsys):
    from gamornet.cli import main
    from gamornet.core.hardware import native_bfloat16
    from gamornet.openvino_backend.runtime import native_bfloat16 as openvino_bfloat16

    np.save(tmp_path / "x.npy", images)
    output = str(tmp_path / "bf16.ecsv")
    assert main(["predict", str(tmp_path / "x.npy"), "--model", model_path, "--input-shape", "32,32,1",
                 "--engine", "openvino", "--precision", "bfloat16", "--output", output]) == 0
    captured = capsys.readouterr()
    computed = "bfloat16" if openvino_bfloat16() else "float32"
    assert f"(openvino, {computed})" in captured.err and f"openvino {computed}" in captured.out
    assert ("warning: precision='bfloat16' on a CPU without native bfloat16" in captured.err) == (
        not native_bfloat16())
    table = read_table(output)
    assert (table.meta["engine"], table.meta["precision"]) == ("openvino", computed)
    reference = predict_files(images, model_path, engine="keras", **OPTS)
    assert np.abs(_probs(table) - _probs(reference)).max() < 1e-2
    assert main(["predict", str(tmp_path / "x.npy"), "--model", model_path, "--input-shape", "32,32,1",
                 "--engine", "openvino", "--mc-samples", "2"]) == 2
    assert "Monte-Carlo dropout needs engine='keras'" in capsys.readouterr().err


@pytest.mark.openvino
@needs_openvino
def test_second_openvino_run_does_not_import_tensorflow(images, model_path, tmp_path):
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import sys
        from gamornet.cli import main

        code = main(["predict", {str(tmp_path / "x.npy")!r}, "--model", {model_path!r}, "--input-shape", "32,32,1",
                     "--engine", "openvino", "--quiet", "--overwrite", "--output", {str(tmp_path / "t.ecsv")!r}])
        loaded = sorted(m for m in ("tensorflow", "keras", "tflearn", "torch", "jax") if m in sys.modules)
        print("EXIT", code, "LOADED", ",".join(loaded) or "-")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), GAMORNET_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="3")

    def run() -> str:
        proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    first = run()  # the first run converts the Keras model (Keras may bring JAX along where it is installed)
    assert first.startswith("EXIT 0 LOADED ") and {"keras", "tensorflow"} <= set(first.split()[-1].split(",")), first
    assert run() == "EXIT 0 LOADED -"  # later runs load the stored conversion
    reference = predict_files(images, model_path, engine="keras", **OPTS)
    np.testing.assert_allclose(_probs(read_table(tmp_path / "t.ecsv")), _probs(reference), rtol=0, atol=ORDER_ATOL)
