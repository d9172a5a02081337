"""Converting GaMorNet weights between Keras files and TFLearn checkpoints (real TFLearn, real Keras)."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

from gamornet import convert as cv
from gamornet.cli.convert import register_cli
from gamornet.core.network import tflearn_variable_prefixes
from gamornet.keras_backend.model import build_keras_model, read_weights, weighted_layers
from gamornet.tflearn_module import gamornet_predict_tflearn
from gamornet.weights import read_checkpoint

from helpers import SMALL_SHAPE, make_data, plain_tflearn_model

CKPT_FILES = (".index", ".meta", ".data-00000-of-00001")


def _random_keras_model(lrn="tflearn", seed=0, shape=SMALL_SHAPE):
    """A GaMorNet Keras model with random kernels and non-zero biases."""
    model = build_keras_model(shape, lrn=lrn, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape).astype(np.float32)])
    return model


def _arrays(model):
    return [tuple(layer.get_weights()) for layer in weighted_layers(model)]


def _assert_same_arrays(got, expected):
    assert len(got) == len(expected) == 8
    for (gk, gb), (ek, eb) in zip(got, expected):
        np.testing.assert_array_equal(gk, ek)
        np.testing.assert_array_equal(gb, eb)


@pytest.fixture(scope="module")
def keras_source(tmp_path_factory):
    """A random Keras model (TFLearn LRN) and its TFLearn checkpoint written by write_tflearn_checkpoint."""
    import keras

    directory = tmp_path_factory.mktemp("convert")
    model = _random_keras_model()
    prefix = cv.write_tflearn_checkpoint(model, str(directory / "from-keras"))
    x = make_data(5, seed=11)[0]
    return model, prefix, x, keras.ops.convert_to_numpy(model(x, training=False))


def test_written_checkpoint_files_and_names(keras_source):
    model, prefix, _, _ = keras_source
    directory = os.path.dirname(prefix)
    assert sorted(os.listdir(directory)) == sorted("from-keras" + s for s in CKPT_FILES)  # no temp names, no index
    import tensorflow as tf

    names = dict(tf.train.list_variables(prefix))
    for scope in tflearn_variable_prefixes():
        assert f"{scope}/W" in names and f"{scope}/b" in names
        assert f"{scope}/W/Momentum" in names  # the slots TFLearn training checkpoints hold
    weights = read_checkpoint(prefix)
    assert weights.lrn == "tflearn" and weights.source == prefix
    _assert_same_arrays(weights.arrays, _arrays(model))
    for suffix in CKPT_FILES:
        _assert_same_arrays(read_checkpoint(prefix + suffix).arrays, _arrays(model))


def test_keras_tflearn_keras_tflearn_round_trip_is_identical(keras_source, tmp_path):
    model, prefix, x, expected = keras_source
    back = cv.convert(prefix, str(tmp_path / "back.keras"), SMALL_SHAPE)
    keras_weights = read_weights(back)
    assert keras_weights.lrn == "tflearn"
    _assert_same_arrays(keras_weights.arrays, _arrays(model))
    h5 = cv.convert(prefix + ".index", str(tmp_path / "back.h5"), SMALL_SHAPE)
    _assert_same_arrays(read_weights(h5).arrays, _arrays(model))
    again = cv.convert(back, str(tmp_path / "again"))  # input shape from the Keras file
    _assert_same_arrays(read_checkpoint(again).arrays, _arrays(model))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    # the same function in every form
    np.testing.assert_allclose(gamornet_predict_tflearn(x, again, SMALL_SHAPE, progress=False), expected, atol=1e-5)
    from gamornet.keras_module import gamornet_predict_keras

    np.testing.assert_allclose(gamornet_predict_keras(x, back, SMALL_SHAPE), expected, atol=1e-5)


def test_written_checkpoint_loads_in_plain_tflearn(keras_source, tmp_path):
    _, prefix, x, expected = keras_source
    graph, dnn = plain_tflearn_model(SMALL_SHAPE, tmp_path)
    for weights_only in (False, True):  # every variable (weights, slots, counters), then trainable ones only
        with graph.as_default():
            dnn.load(prefix, weights_only=weights_only)
            got = np.asarray(dnn.predict(x))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    dnn.session.close()


def test_keras_lrn_weights_warn_and_preprocessing_refused(tmp_path):
    model = _random_keras_model(lrn="keras", seed=1)
    with pytest.warns(UserWarning, match="Keras LRN"):
        cv.write_tflearn_checkpoint(model, str(tmp_path / "keras-lrn"))
    scaled = build_keras_model(SMALL_SHAPE, lrn="tflearn", preprocessing={"stretch": "linear", "offset": 1.0,
                                                                          "scale": 2.0})
    with pytest.raises(ValueError, match="preprocessing"):
        cv.write_tflearn_checkpoint(scaled, str(tmp_path / "scaled"))
    assert not os.path.exists(tmp_path / "scaled.index")


def test_conversion_needs_a_fitting_input_shape(tmp_path, keras_source):
    # a 32x32 checkpoint fits neither preset: the input shape must be given
    with pytest.raises(ValueError, match="input_shape"):
        cv.convert(keras_source[1], str(tmp_path / "x.keras"))
    with pytest.raises(ValueError, match="another input shape"):
        cv.convert(keras_source[1], str(tmp_path / "x.keras"), (64, 64, 1))
    assert not os.path.exists(tmp_path / "x.keras")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="gamornet")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(keras_source, tmp_path, capsys):
    model, prefix, x, expected = keras_source
    dst = str(tmp_path / "cli.keras")
    assert _cli(["convert", prefix, dst, "--input-shape", "32,32,1"]) == 0
    assert "Wrote" in capsys.readouterr().out
    _assert_same_arrays(read_weights(dst).arrays, _arrays(model))
    assert _cli(["convert", dst, str(tmp_path / "cli-ckpt"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    _assert_same_arrays(read_checkpoint(str(tmp_path / "cli-ckpt")).arrays, _arrays(model))
    with pytest.raises(SystemExit):
        _cli(["convert", prefix, dst, "--input-shape", "32,32"])
    with pytest.raises(FileNotFoundError):
        _cli(["convert", str(tmp_path / "nothing"), dst])
    from gamornet.cli import main

    assert main(["convert", prefix, str(tmp_path / "main.keras"), "--input-shape", "32,32,1"]) == 0
    assert main(["convert", str(tmp_path / "nothing"), dst]) == 2
