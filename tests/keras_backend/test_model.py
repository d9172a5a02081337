"""Keras functions: the LRN flavour asked for, unreadable model files, True / False arguments."""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest

from gamornet.keras_backend.model import (
    apply_weights,
    build_keras_model,
    load_keras_model,
    model_lrn_flavor,
    read_weights,
)
from gamornet.keras_module import gamornet_predict_keras, gamornet_tl_keras, gamornet_train_keras

from helpers import SMALL_SHAPE, make_data

# --------------------------------------------------------------------------- LRN flavour


def test_tflearn_lrn_asked_for_a_keras_file_is_applied(trained_keras_model):
    path, _ = trained_keras_model
    x, _ = make_data(5, seed=21)
    keras_flavour = gamornet_predict_keras(x, path, SMALL_SHAPE, lrn="keras", progress=False)
    tflearn_flavour = gamornet_predict_keras(x, path, SMALL_SHAPE, lrn="tflearn", progress=False)
    assert model_lrn_flavor(load_keras_model(path, SMALL_SHAPE, lrn="tflearn")) == "tflearn"
    assert model_lrn_flavor(load_keras_model(path, SMALL_SHAPE)) == "keras"
    reference = build_keras_model(SMALL_SHAPE, lrn="tflearn", widths=read_weights(path).widths())
    apply_weights(reference, read_weights(path))
    # same network, same weights, same images; only the batching of the forward pass may differ
    np.testing.assert_allclose(tflearn_flavour, reference.predict(x, verbose=0), atol=1e-6)
    # the two normalisations differ far beyond float32 rounding (~1e-7 on probabilities)
    assert np.max(np.abs(tflearn_flavour - keras_flavour)) > 1e-4
    np.testing.assert_allclose(gamornet_predict_keras(x, path, SMALL_SHAPE, progress=False), keras_flavour, atol=0)


# --------------------------------------------------------------------------- unreadable model files


@pytest.fixture(scope="module")
def bad_model_files(tmp_path_factory, trained_keras_model):
    """Files (and a directory) that are no readable model, with what the error must say."""
    path, _ = trained_keras_model
    folder = tmp_path_factory.mktemp("bad_models")
    whole = open(path, "rb").read()
    (folder / "empty.keras").write_bytes(b"")
    (folder / "garbage.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    with zipfile.ZipFile(folder / "notes.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    (folder / "directory.keras").mkdir()
    return {
        "empty": (folder / "empty.keras", r"is an empty file \(0 bytes\)"),
        "garbage": (folder / "garbage.keras", r"is not a \.keras file: Keras 3 models are zip archives"),
        "truncated": (folder / "truncated.keras", r"is a truncated \.keras file: a zip archive without its end"),
        "no model": (folder / "notes.keras", r"is a zip archive but not a Keras model \(no config\.json"),
        "directory": (folder / "directory.keras", r"must be a model file .* or a TFLearn checkpoint prefix, not a "
                                                  r"directory"),
    }


KINDS = ["empty", "garbage", "truncated", "no model", "directory"]


@pytest.mark.backends
@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_model_files_are_named_and_explained(kind, bad_model_files, small_data, tmp_path):
    path, pattern = bad_model_files[kind]
    x, y = small_data
    pattern = rf"`model_load_path` {pattern}.*Received: model_load_path='{re.escape(str(path))}'"
    with pytest.raises(ValueError, match=pattern):
        gamornet_predict_keras(x, str(path), SMALL_SHAPE, engine="keras", progress=False)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=pattern):
        gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path=str(out), epochs=1, load_model=True,
                             model_load_path=str(path), verbose=0)
    with pytest.raises(ValueError, match=pattern):
        gamornet_tl_keras(x, y, x, y, SMALL_SHAPE, model_load_path=str(path), files_save_path=str(out), epochs=1,
                          verbose=0)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["train", "tl"])
def test_cli_names_an_unreadable_model(command, bad_model_files, tmp_path, capsys):
    from astropy.table import Table

    from gamornet.cli import main

    x, _ = make_data(6)
    np.save(tmp_path / "images.npy", x)
    Table({"label": ["disk", "bulge", "indeterminate"] * 2}).write(tmp_path / "catalog.ecsv")
    for kind in ("truncated", "directory"):
        path, pattern = bad_model_files[kind]
        out = tmp_path / f"out_{kind}"
        assert main([command, str(tmp_path / "images.npy"), "--catalog", str(tmp_path / "catalog.ecsv"), "--model",
                     str(path), "--output", str(out), "--epochs", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "`model_load_path`" in err and str(path) in err
        assert any(word in err for word in ("truncated", "directory")), err
        assert not out.exists()


# --------------------------------------------------------------------------- True / False arguments


@pytest.mark.parametrize("value", ["no", 1, None])
@pytest.mark.parametrize("function,flag", [
    ("train", "save_model"), ("train", "load_model"), ("train", "resume"), ("train", "nesterov"),
    ("tl", "save_model"), ("tl", "resume"), ("tl", "nesterov"),
    ("predict", "individual_arrays"), ("predict", "progress"), ("predict", "reuse_model"),
])
def test_flags_must_be_true_or_false(function, flag, value, trained_keras_model, small_data, tmp_path):
    path, _ = trained_keras_model
    x, y = small_data
    out = tmp_path / "out"
    common = dict(files_save_path=str(out), epochs=1, batch_size=12, verbose=0)
    call = {
        "train": lambda: gamornet_train_keras(x, y, None, None, SMALL_SHAPE, model_load_path=path, **common,
                                              **{flag: value}),
        "tl": lambda: gamornet_tl_keras(x, y, None, None, SMALL_SHAPE, model_load_path=path, **common,
                                        **{flag: value}),
        "predict": lambda: gamornet_predict_keras(x, path, SMALL_SHAPE, **{flag: value}),
    }[function]
    with pytest.raises(ValueError, match=rf"`{flag}` must be True or False\. Received: {flag}={value!r}"):
        call()
    assert not out.exists()


def test_numpy_bools_are_flags_too(trained_keras_model, small_data):
    path, _ = trained_keras_model
    x, _ = small_data
    columns = gamornet_predict_keras(x[:2], path, SMALL_SHAPE, individual_arrays=np.bool_(True), progress=False)
    assert len(columns) == 3 and columns[0].shape == (2,)

