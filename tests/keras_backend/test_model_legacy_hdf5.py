"""Keras-2-era HDF5 files, written here by tf-keras (the Keras 2 API), load and predict identically."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from gamornet.keras_module import gamornet_predict_keras

from helpers import SMALL_SHAPE, keras2_model, make_data

tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def images():
    # Bright images so the LRN matters (as for real counts).
    x, _ = make_data(10, seed=3)
    return x * 20.0


def _save_legacy(model, path, weights_only: bool):
    if weights_only:
        model.save_weights(str(path), save_format="h5")
    else:
        model.save(str(path), save_format="h5")


@pytest.mark.parametrize("weights_only", [False, True], ids=["full-model", "weights-only"])
@pytest.mark.parametrize("lrn", ["keras", "tflearn"])
def test_keras2_hdf5_predicts_as_keras2_did(tmp_path, images, lrn, weights_only):
    tf_keras.utils.set_random_seed(7)
    old = keras2_model(lrn)
    expected = old.predict(images, verbose=0)
    path = tmp_path / ("model.hdf5" if not weights_only else "weights.h5")
    _save_legacy(old, path, weights_only)
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        assert "layer_names" in group.attrs  # really the Keras 2 layout
        if not weights_only:
            config = json.loads(f.attrs["model_config"])
            assert "LocalResponseNormalization" in json.dumps(config)
    got = gamornet_predict_keras(images, str(path), SMALL_SHAPE, lrn=None if lrn == "keras" else "tflearn")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The other LRN gives different outputs: the flavour really matters for these weights.
    other = gamornet_predict_keras(images, str(path), SMALL_SHAPE, lrn="tflearn" if lrn == "keras" else "keras",
                                   reuse_model=False)
    assert np.abs(other - expected).max() > 1e-4


def test_byte_string_metadata_as_old_h5py_wrote(tmp_path, images):
    tf_keras.utils.set_random_seed(8)
    old = keras2_model("keras")
    path = tmp_path / "old.h5"
    _save_legacy(old, path, weights_only=False)
    with h5py.File(path, "r+") as f:
        g = f["model_weights"]
        g.attrs["layer_names"] = np.array([_as_bytes(n) for n in g.attrs["layer_names"]], dtype="S")
        for name in g.attrs["layer_names"]:
            layer = g[name.decode()]
            layer.attrs["weight_names"] = np.array([_as_bytes(n) for n in layer.attrs["weight_names"]], dtype="S")
        f.attrs["model_config"] = np.bytes_(_as_bytes(f.attrs["model_config"]))
    got = gamornet_predict_keras(images, str(path), SMALL_SHAPE)
    np.testing.assert_allclose(got, old.predict(images, verbose=0), atol=1e-5)


def test_keras3_load_model_with_old_class_name(tmp_path, images):
    import keras

    from gamornet.keras_backend.model import CUSTOM_OBJECTS

    tf_keras.utils.set_random_seed(9)
    old = keras2_model("keras")
    path = tmp_path / "old.h5"
    _save_legacy(old, path, weights_only=False)
    loaded = keras.models.load_model(str(path), custom_objects=CUSTOM_OBJECTS, compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), old.predict(images, verbose=0), atol=1e-5)


def _as_bytes(value):
    return value if isinstance(value, bytes) else str(value).encode("utf8")
