import csv
import inspect
import os

import keras
import numpy as np
import pytest

from gamornet.keras_backend.model import weighted_layers
from gamornet.keras_module import gamornet_predict_keras, gamornet_tl_keras, gamornet_train_keras

from helpers import ORDER_ATOL, SMALL_SHAPE, make_data

pytestmark = pytest.mark.usefixtures("narrow_network")  # the published widths are tested in tests/core, published/


def test_signatures_and_defaults_of_0_4_3():
    train = inspect.signature(gamornet_train_keras).parameters
    assert list(train)[:17] == [
        "training_imgs", "training_labels", "validation_imgs", "validation_labels", "input_shape", "files_save_path",
        "epochs", "checkpoint_freq", "batch_size", "lr", "momentum", "decay", "nesterov", "loss", "load_model",
        "model_load_path", "save_model"]
    assert (train["epochs"].default, train["lr"].default, train["batch_size"].default) == (100, 0.0001, 64)
    tl = inspect.signature(gamornet_tl_keras).parameters
    assert tl["load_layers_bools"].default == [True] * 8 and tl["lr"].default == 0.00001
    pred = inspect.signature(gamornet_predict_keras).parameters
    assert list(pred)[:5] == ["img_array", "model_load_path", "input_shape", "batch_size", "individual_arrays"]


def test_train_save_predict_round_trip(tmp_path, small_data):
    x, y = small_data
    model = gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "run"), epochs=2,
                                 checkpoint_freq=1, batch_size=6, verbose=0)
    files = sorted(os.listdir(tmp_path / "run"))
    assert files == ["metrics.csv", "model_0001.keras", "model_0002.keras", "trained_model.keras"]
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_loss" in rows[0]
    saved = gamornet_predict_keras(x, str(tmp_path / "run" / "trained_model.keras"), SMALL_SHAPE)
    np.testing.assert_allclose(saved, model.predict(x, verbose=0), rtol=0, atol=ORDER_ATOL)
    np.testing.assert_allclose(saved.sum(axis=1), 1.0, atol=1e-5)


def test_path_without_trailing_slash_and_dev_null(tmp_path, small_data):
    x, y = small_data
    gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "a"), epochs=1, verbose=0)
    assert (tmp_path / "a" / "trained_model.keras").exists()
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path="/dev/null", epochs=1, verbose=0)
    finally:
        os.chdir(cwd)
    assert set(os.listdir(tmp_path)) == before


def test_batch_size_changes_results_only_by_rounding(trained_keras_model):
    path, _ = trained_keras_model
    x, _ = make_data(7, seed=5)
    full = gamornet_predict_keras(x, path, SMALL_SHAPE, batch_size=64)  # N < batch_size
    for b in (1, 3, 7):  # partial last batches
        np.testing.assert_allclose(gamornet_predict_keras(x, path, SMALL_SHAPE, batch_size=b), full, rtol=0,
                                   atol=ORDER_ATOL)
    disk, indet, bulge = gamornet_predict_keras(x, path, SMALL_SHAPE, individual_arrays=True)
    np.testing.assert_array_equal(np.stack([disk, indet, bulge], axis=1), full)


def test_integer_images_are_accepted(trained_keras_model):
    path, _ = trained_keras_model
    x, _ = make_data(3, seed=6)
    ints = np.round(x).astype(np.int32)
    np.testing.assert_allclose(gamornet_predict_keras(ints, path, SMALL_SHAPE),
                               gamornet_predict_keras(ints.astype(np.float32), path, SMALL_SHAPE), atol=0)


def test_model_reused_until_file_changes(tmp_path, trained_keras_model):
    from gamornet.keras_backend.model import load_keras_model

    path, model = trained_keras_model
    a = load_keras_model(path, SMALL_SHAPE)
    assert load_keras_model(path, SMALL_SHAPE) is a
    assert load_keras_model(path, SMALL_SHAPE, reuse=False) is not a
    copy = tmp_path / "copy.keras"
    copy.write_bytes(open(path, "rb").read())
    b = load_keras_model(str(copy), SMALL_SHAPE)
    os.utime(copy, ns=(1, 1))
    assert load_keras_model(str(copy), SMALL_SHAPE) is not b


def test_optimizer_settings_reach_the_optimizer(tmp_path, small_data):
    x, y = small_data
    model = gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path="/dev/null", epochs=1, batch_size=6,
                                 lr=0.003, momentum=0.5, nesterov=True, decay=0.1, verbose=0)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == 0.5 and opt.nesterov is True
    # Keras 2 decay rule: lr / (1 + decay * iterations); 2 steps were taken
    assert int(opt.iterations.numpy()) == 2
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.003 / (1 + 0.1 * 2), rel=1e-5)


def _weights(model):
    return [[w.copy() for w in layer.get_weights()] for layer in weighted_layers(model)]


@pytest.mark.backends
def test_transfer_learning_loads_and_freezes_per_bools(tmp_path, trained_keras_model, small_data):
    path, source = trained_keras_model
    x, y = small_data
    load = [True, True, True, False, True, True, False, True]
    train = [False, True, False, True, False, True, True, False]
    src = _weights(source)
    model = gamornet_tl_keras(x, y, x, y, SMALL_SHAPE, load_layers_bools=load, trainable_bools=train,
                              model_load_path=path, files_save_path="/dev/null", epochs=1, batch_size=6, lr=0.01,
                              verbose=0)
    after = _weights(model)
    for i, (loaded, trainable) in enumerate(zip(load, train)):
        same = all(np.array_equal(a, b) for a, b in zip(after[i], src[i]))
        if loaded and not trainable:
            assert same, f"layer {i} should be the frozen loaded weights"
        elif loaded and trainable:
            assert not same, f"layer {i} should have been trained"
        else:
            assert not same, f"layer {i} should not hold the source weights"
        assert weighted_layers(model)[i].trainable == trainable


def test_transfer_learning_repeatable_with_defaults(trained_keras_model, small_data):
    path, _ = trained_keras_model
    x, y = small_data
    defaults = inspect.signature(gamornet_tl_keras).parameters
    for _ in range(2):
        gamornet_tl_keras(x, y, x, y, SMALL_SHAPE, model_load_path=path, files_save_path="/dev/null", epochs=1,
                          verbose=0)
    assert defaults["load_layers_bools"].default == [True] * 8
    assert defaults["trainable_bools"].default == [True] * 8


def test_sdss_dense_weights_do_not_fit_another_shape(trained_keras_model, small_data):
    path, _ = trained_keras_model
    x, y = make_data(6, shape=(48, 48, 1))
    with pytest.raises(ValueError, match=r"do not fit layer 13 \(dense_1\)"):
        gamornet_tl_keras(x, y, x, y, (48, 48, 1), model_load_path=path, files_save_path="/dev/null", epochs=1,
                          verbose=0)
    # the convolutions alone do fit
    gamornet_tl_keras(x, y, x, y, (48, 48, 1), load_layers_bools="load_bools_SDSS", model_load_path=path,
                      files_save_path="/dev/null", epochs=1, verbose=0)


def test_published_name_goes_through_the_resolver(monkeypatch, small_data):
    from gamornet import keras_module

    seen = []

    def fake_resolve(name, flavor="keras", progress=True):
        seen.append((name, flavor))
        raise RuntimeError("resolver reached")

    monkeypatch.setattr(keras_module, "resolve_model_path", fake_resolve)
    x, _ = small_data
    with pytest.raises(RuntimeError, match="resolver reached"):
        gamornet_predict_keras(x, "SDSS_tl", SMALL_SHAPE)
    assert seen == [("SDSS_tl", "keras")]


BAD_INPUTS = [
    ("img_array", np.zeros((4, 32, 32), np.float32), ValueError, r"4-D.*Received: shape=\(4, 32, 32\)"),
    ("img_array", np.zeros((4, 30, 32, 1), np.float32), ValueError, r"input shape \(32, 32, 1\).*Received"),
    ("img_array", np.full((4, 32, 32, 1), "x"), TypeError, r"must hold numbers.*Received: dtype="),
    ("img_array", np.full((4, 32, 32, 1), np.nan, np.float32), ValueError, r"NaN or inf pixels"),
    ("img_array", np.full((4, 32, 32, 1), np.inf, np.float32), ValueError, r"NaN or inf pixels"),
    ("img_array", np.zeros((0, 32, 32, 1), np.float32), ValueError, r"holds no images.*Received: shape=\(0,"),
]


@pytest.mark.parametrize("arg,value,error,pattern", BAD_INPUTS)
def test_bad_images_refused_by_every_function(arg, value, error, pattern, tmp_path, small_data):
    x, y = small_data
    with pytest.raises(error, match=pattern):
        gamornet_predict_keras(value, "unused.keras", SMALL_SHAPE)
    with pytest.raises(error, match=pattern):
        gamornet_train_keras(value, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "t"), verbose=0)
    with pytest.raises(error, match=pattern):
        gamornet_tl_keras(x, y, value, y, SMALL_SHAPE, model_load_path="unused.keras",
                          files_save_path=str(tmp_path / "t"), verbose=0)
    assert not (tmp_path / "t").exists()  # refused before anything was written


@pytest.mark.parametrize("labels,pattern", [
    (np.zeros((12, 2)), r"`training_labels` must have shape \(12, 3\).*Received: shape=\(12, 2\)"),
    (np.full((12, 3), 1 / 3), r"`training_labels` rows must be one-hot"),
])
def test_bad_labels(labels, pattern, small_data):
    x, y = small_data
    with pytest.raises(ValueError, match=pattern):
        gamornet_train_keras(x, labels, x, y, SMALL_SHAPE, files_save_path="/dev/null", verbose=0)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"load_layers_bools": [True] * 7}, r"`load_layers_bools` must be .*Received: load_layers_bools="),
    ({"trainable_bools": "train_bools_HST"}, r"`trainable_bools` must be .*Received: trainable_bools=.train_bools_HST"),
    ({"input_shape": "HST"}, r"`input_shape` must be .*Received: input_shape='HST'"),
    ({"epochs": 0}, r"`epochs` must be an integer >= 1. Received: epochs=0"),
    ({"lr": -1.0}, r"`lr` must be > 0. Received: lr=-1.0"),
])
def test_bad_arguments_of_transfer_learning(kwargs, pattern, small_data):
    x, y = small_data
    args = {"input_shape": SMALL_SHAPE, "model_load_path": "unused.keras", "files_save_path": "/dev/null",
            "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        gamornet_tl_keras(x, y, x, y, **args)


def test_missing_model_file(small_data):
    x, _ = small_data
    with pytest.raises(FileNotFoundError, match=r"`model_load_path` does not exist. Received: model_load_path="):
        gamornet_predict_keras(x, "no/such/model.keras", SMALL_SHAPE)


def test_adam_option_and_bad_optimizer(small_data):
    x, y = small_data
    model = gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path="/dev/null", epochs=1, batch_size=6,
                                 lr=0.0005, verbose=0, optimizer="adam")
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.0005)
    with pytest.raises(ValueError, match=r"`optimizer` must be one of .*Received: optimizer='rmsprop'"):
        gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path="/dev/null", verbose=0, optimizer="rmsprop")
