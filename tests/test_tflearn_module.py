"""The TFLearn module, running real TFLearn 0.5.0 on TensorFlow 2, mixed with Keras 3 in one process."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from gamornet import tflearn_module as tm
from gamornet.core.network import tflearn_variable_prefixes
from gamornet.keras_module import gamornet_predict_keras, gamornet_tl_keras, gamornet_train_keras
from gamornet.tflearn_module import gamornet_predict_tflearn, gamornet_tl_tflearn, gamornet_train_tflearn

from helpers import ORDER_ATOL, REPO, SMALL_SHAPE, make_data, plain_tflearn_model

# ---------------------------------------------------------------------------
# A checkpoint written by plain TFLearn code (no gamornet network code)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A checkpoint trained for one epoch and saved by plain TFLearn; returns (prefix, images, predictions)."""
    directory = tmp_path_factory.mktemp("plain_tflearn")
    x, y = make_data(16, seed=1)
    graph, dnn = plain_tflearn_model(SMALL_SHAPE, directory)
    with graph.as_default():
        dnn.fit(x, y, n_epoch=1, batch_size=8, snapshot_epoch=False, show_metric=False)
        prefix = str(directory / "plain-model")
        dnn.save(prefix)
        predictions = dnn.predict(x)
        weights = [tuple(dnn.get_weights(v) for v in pair) for pair in _plain_variables(graph)]
    dnn.session.close()
    return prefix, x, np.asarray(predictions), weights


def _plain_variables(graph):
    by_name = {v.op.name: v for v in graph.get_collection("variables")}
    return [(by_name[f"{s}/W"], by_name[f"{s}/b"]) for s in tflearn_variable_prefixes()]


def _numpy(tensor):
    import keras

    return keras.ops.convert_to_numpy(tensor)


def _checkpoint_weights(prefix):
    from gamornet.weights import read_checkpoint

    return read_checkpoint(prefix).arrays


# ---------------------------------------------------------------------------
# Import and process state
# ---------------------------------------------------------------------------


def test_import_does_not_load_tflearn_or_tensorflow():
    code = (
        "import sys, gamornet, gamornet.tflearn_module, gamornet.tflearn_backend, gamornet.convert, gamornet.weights\n"
        "assert 'tflearn' not in sys.modules, 'tflearn imported'\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_eager_mode_stays_on(plain_checkpoint):
    import tensorflow as tf

    assert "tflearn" in sys.modules
    assert tf.executing_eagerly()
    assert tf.compat.v1.resource_variables_enabled()


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------


def test_plain_tflearn_checkpoint_predicts_the_same(plain_checkpoint):
    prefix, x, expected, _ = plain_checkpoint
    got = gamornet_predict_tflearn(x, prefix, SMALL_SHAPE, progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
    via_keras = gamornet_predict_keras(x, prefix, SMALL_SHAPE)
    np.testing.assert_allclose(via_keras, expected, atol=1e-5)
    for suffix in (".index", ".meta", ".data-00000-of-00001"):
        again = gamornet_predict_tflearn(x, prefix + suffix, SMALL_SHAPE, progress=False, reuse_model=False)
        np.testing.assert_allclose(again, expected, rtol=0, atol=ORDER_ATOL)


def test_predict_batches_and_output_forms(plain_checkpoint, monkeypatch):
    prefix, x, expected, _ = plain_checkpoint
    partial = gamornet_predict_tflearn(x[:7], prefix, SMALL_SHAPE, batch_size=3, progress=False)
    np.testing.assert_allclose(partial, expected[:7], rtol=0, atol=ORDER_ATOL)
    small = gamornet_predict_tflearn(x[:2], prefix, SMALL_SHAPE, batch_size=64, progress=False)
    np.testing.assert_allclose(small, expected[:2], rtol=0, atol=ORDER_ATOL)
    disk, indet, bulge = gamornet_predict_tflearn(x, prefix, SMALL_SHAPE, individual_arrays=True, progress=False)
    np.testing.assert_allclose(np.stack([disk, indet, bulge], axis=1), expected, rtol=0, atol=ORDER_ATOL)
    flags = []
    real = tm.predict_in_batches

    def recording(forward, images, batch_size, progress=True, **kwargs):
        flags.append(progress)
        return real(forward, images, batch_size, progress, **kwargs)

    monkeypatch.setattr(tm, "predict_in_batches", recording)
    gamornet_predict_tflearn(x[:5], prefix, SMALL_SHAPE, batch_size=2)  # progressbar2 bar by default
    gamornet_predict_tflearn(x[:5], prefix, SMALL_SHAPE, batch_size=2, progress=False)
    assert flags == [True, False]
    ints = gamornet_predict_tflearn(np.round(x[:3]).astype(np.int16), prefix, SMALL_SHAPE, progress=False)
    assert ints.shape == (3, 3) and np.allclose(ints.sum(axis=1), 1, atol=1e-5)


def test_predict_checkpoint_errors(plain_checkpoint, tmp_path):
    prefix, x, _, _ = plain_checkpoint
    with pytest.raises(FileNotFoundError, match="model_load_path"):
        gamornet_predict_tflearn(x, str(tmp_path / "missing"), SMALL_SHAPE, progress=False)
    bad = tmp_path / "bad"
    for suffix in (".index", ".meta", ".data-00000-of-00001"):
        (tmp_path / f"bad{suffix}").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        gamornet_predict_tflearn(x, str(bad), SMALL_SHAPE, progress=False)
    other = make_data(2, shape=(64, 64, 1))[0]
    with pytest.raises(ValueError, match="another input shape"):
        gamornet_predict_tflearn(other, prefix, (64, 64, 1), progress=False)


def test_clear_session_keeps_keras_models(plain_checkpoint, trained_keras_model):
    prefix, x, expected, _ = plain_checkpoint
    _, keras_model = trained_keras_model
    before = _numpy(keras_model(x[:4], training=False))
    got = gamornet_predict_tflearn(x, prefix, SMALL_SHAPE, clear_session=True, progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
    np.testing.assert_array_equal(_numpy(keras_model(x[:4], training=False)), before)  # same weights, same ops


# ---------------------------------------------------------------------------
# Training and mixing with Keras
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("narrow_network")  # the Keras models; TFLearn networks keep the published widths
def test_keras_and_tflearn_calls_mix(tmp_path):
    import keras
    import tensorflow as tf

    x, y = make_data(12, seed=3)
    # Keras
    k1 = gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "k1"), epochs=1,
                              batch_size=6, verbose=0)
    p = gamornet_predict_keras(x, str(tmp_path / "k1" / "trained_model.keras"), SMALL_SHAPE)
    np.testing.assert_allclose(p, _numpy(k1(x, training=False)), atol=1e-5)
    # TFLearn
    t1 = gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "t1"), epochs=1,
                                batch_size=6, show_metric=False)
    p = gamornet_predict_tflearn(x, str(tmp_path / "t1" / "trained_model"), SMALL_SHAPE, progress=False)
    np.testing.assert_allclose(p, t1.predict(x), rtol=0, atol=ORDER_ATOL)
    assert tf.executing_eagerly()
    # Keras again: predict, and a plain model.fit on a model the user holds
    k1.compile(optimizer=keras.optimizers.SGD(0.001), loss="categorical_crossentropy")
    history = k1.fit(x, y, epochs=1, batch_size=6, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    k1.save(str(tmp_path / "k1-refit.keras"))
    p = gamornet_predict_keras(x, str(tmp_path / "k1-refit.keras"), SMALL_SHAPE)
    np.testing.assert_allclose(p, _numpy(k1(x, training=False)), atol=1e-5)
    # TFLearn again: a second network in the same process, from scratch and continued
    t2 = gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=str(tmp_path / "t2"), epochs=1,
                                batch_size=6, show_metric=True, load_model=True,
                                model_load_path=str(tmp_path / "t1" / "trained_model"))
    p = gamornet_predict_tflearn(x, str(tmp_path / "t2" / "trained_model"), SMALL_SHAPE, progress=False)
    np.testing.assert_allclose(p, t2.predict(x), rtol=0, atol=ORDER_ATOL)
    # continued training: the step count goes on from the loaded checkpoint (2 steps, then 2 more)
    assert sorted(f for f in os.listdir(tmp_path / "t2") if f.endswith(".index")) == ["check-4.index",
                                                                                       "trained_model.index"]
    # the model returned works in its own graph: save from outside any graph context, reload
    t2.save(str(tmp_path / "t2-resaved"))
    p2 = gamornet_predict_tflearn(x, str(tmp_path / "t2-resaved"), SMALL_SHAPE, progress=False)
    np.testing.assert_array_equal(p2, p)  # same weights, same batches
    assert tf.executing_eagerly()


def test_lr_momentum_decay_reach_the_optimizer(tmp_path, monkeypatch):
    """Also: files_save_path=/dev/null saves nothing anywhere."""
    monkeypatch.chdir(tmp_path)
    x, y = make_data(8, seed=4)
    model = gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=os.devnull, epochs=2, batch_size=4,
                                   lr=0.0123, momentum=0.8, nesterov=True, show_metric=False)
    graph = model.net.graph
    (rate,) = graph.get_collection("lr_variables")
    assert model.session.run(rate) == pytest.approx(0.0123, rel=1e-6)
    optimizer = model.train_ops[0].optimizer
    assert optimizer._use_nesterov is True and optimizer._momentum == pytest.approx(0.8)
    assert model.session.run(optimizer._learning_rate_tensor) == pytest.approx(0.0123, rel=1e-6)
    # decay: TFLearn's rule lr * decay ** (step / decay_step); 2 epochs x 2 steps = 4 steps
    model = gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=os.devnull, epochs=2, batch_size=4,
                                   lr=0.01, decay=0.5, decay_step=2, show_metric=False)
    (rate,) = model.net.graph.get_collection("lr_variables")
    assert model.session.run(rate) == pytest.approx(0.01 * 0.5 ** (4 / 2), rel=1e-5)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_checkpoint_files_and_save_paths(tmp_path, monkeypatch):
    x, y = make_data(8, seed=5)
    monkeypatch.chdir(tmp_path)
    # no trailing slash, keep 2 of 3 epoch checkpoints
    out = tmp_path / "run_a"
    gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=str(out), epochs=3, batch_size=4,
                           max_checkpoints=2, show_metric=False)
    files = sorted(os.listdir(out))
    assert sorted(f for f in files if f.startswith("check-") and f.endswith(".index")) == ["check-4.index",
                                                                                           "check-6.index"]
    assert len([f for f in files if f.startswith("check-")]) == 2 * 3
    assert {"trained_model.index", "trained_model.meta", "trained_model.data-00000-of-00001"} <= set(files)
    assert not [f for f in files if f.startswith(".")]
    # trailing slash, default max_checkpoints=1, no final model
    out = tmp_path / "run_b"
    gamornet_train_tflearn(x, y, x, y, SMALL_SHAPE, files_save_path=str(out) + "/", epochs=2, batch_size=4,
                           save_model=False, show_metric=False)
    files = sorted(os.listdir(out))
    assert [f for f in files if f.endswith(".index")] == ["check-4.index"]
    assert not [f for f in files if f.startswith("trained_model")]


def test_transfer_learning_restores_and_freezes_per_layer(plain_checkpoint, tmp_path, monkeypatch):
    prefix, _, _, plain_weights = plain_checkpoint
    x, y = make_data(8, seed=6)
    load = [True, False, True, False, True, True, False, True]
    train = [False, False, True, True, True, False, True, False]
    load_copy, train_copy = list(load), list(train)
    seen = {}
    from gamornet.tflearn_backend import training as tflearn_training

    real_restore = tflearn_training.restore_tflearn_weights

    def recording_restore(network, *args, **kwargs):
        real_restore(network, *args, **kwargs)
        seen["before"] = network.get_weights()

    monkeypatch.setattr(tflearn_training, "restore_tflearn_weights", recording_restore)
    model = gamornet_tl_tflearn(x, y, x, y, SMALL_SHAPE, load_layers_bools=load, trainable_bools=train,
                                model_load_path=prefix, files_save_path=str(tmp_path), epochs=1, batch_size=4,
                                lr=0.01, show_metric=False)
    assert load == load_copy and train == train_copy
    with model.net.graph.as_default():
        after = [tuple(model.get_weights(v) for v in pair) for pair in _plain_variables(model.net.graph)]
    for i, (loaded, trainable) in enumerate(zip(load, train)):
        before_kernel, after_kernel = seen["before"][i][0], after[i][0]
        assert np.array_equal(before_kernel, plain_weights[i][0]) == loaded, f"layer {i}: restore"
        assert np.array_equal(after_kernel, before_kernel) == (not trainable), f"layer {i}: trainable"
    # the saved final model holds the trained weights
    saved = _checkpoint_weights(str(tmp_path / "trained_model"))
    for got, expected in zip(saved, after):
        np.testing.assert_array_equal(got[0], expected[0])
    # lr of transfer learning reaches the optimizer too
    (rate,) = model.net.graph.get_collection("lr_variables")
    assert model.session.run(rate) == pytest.approx(0.01)
    # presets and the default lists, which are never modified
    gamornet_tl_tflearn(x, y, x, y, SMALL_SHAPE, load_layers_bools="load_bools_SDSS",
                        trainable_bools="train_bools_CANDELS", model_load_path=prefix, files_save_path=os.devnull,
                        epochs=1, batch_size=8, show_metric=False)
    for fn in (gamornet_tl_tflearn, gamornet_predict_tflearn):
        for name, param in inspect.signature(fn).parameters.items():
            if name.endswith("_bools"):
                assert param.default == [True] * 8


def test_signatures_match_0_4_3():
    def defaults(fn):
        return [(n, p.default) for n, p in inspect.signature(fn).parameters.items() if p.kind != p.KEYWORD_ONLY]

    assert defaults(gamornet_predict_tflearn) == [
        ("img_array", inspect.Parameter.empty), ("model_load_path", inspect.Parameter.empty),
        ("input_shape", inspect.Parameter.empty), ("batch_size", 64), ("individual_arrays", False),
        ("trainable_bools", [True] * 8), ("clear_session", False)]
    data = [(n, inspect.Parameter.empty) for n in ("training_imgs", "training_labels", "validation_imgs",
                                                   "validation_labels", "input_shape")]
    common = [("epochs", 100), ("max_checkpoints", 1), ("batch_size", 64)]
    opt = [("momentum", 0.9), ("decay", 0.0), ("nesterov", False), ("loss", "categorical_crossentropy")]
    assert defaults(gamornet_train_tflearn) == data + [("files_save_path", "./")] + common + [("lr", 0.0001)] + opt + [
        ("load_model", False), ("model_load_path", "./"), ("save_model", True), ("show_metric", True),
        ("clear_session", False)]
    assert defaults(gamornet_tl_tflearn) == data + [
        ("load_layers_bools", [True] * 8), ("trainable_bools", [True] * 8), ("model_load_path", "./"),
        ("files_save_path", "./")] + common + [("lr", 0.00001)] + opt + [
        ("save_model", True), ("show_metric", True), ("clear_session", False)]


# ---------------------------------------------------------------------------
# Bad input: the same errors as the Keras module
# ---------------------------------------------------------------------------


def _error(fn, *args, **kwargs):
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


_X, _Y = make_data(6, seed=7)
_NAN = _X.copy()
_NAN[2, 3, 4, 0] = np.nan
_INF = _X.copy()
_INF[1, 0, 0, 0] = np.inf

PREDICT_CASES = {
    "wrong ndim": dict(img_array=_X[0]),
    "shape not matching the model": dict(img_array=make_data(2, shape=(16, 16, 1))[0]),
    "non-numeric dtype": dict(img_array=np.full((2, *SMALL_SHAPE), "a")),
    "nan pixels": dict(img_array=_NAN),
    "inf pixels": dict(img_array=_INF),
    "empty array": dict(img_array=np.zeros((0, *SMALL_SHAPE), np.float32)),
    "unknown preset": dict(input_shape="SDSSS"),
    "bad batch size": dict(batch_size=0),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_bad_input_same_errors_as_keras(case, plain_checkpoint):
    kwargs = dict(img_array=_X, model_load_path=plain_checkpoint[0], input_shape=SMALL_SHAPE)
    kwargs.update(PREDICT_CASES[case])
    assert _error(gamornet_predict_tflearn, **kwargs) == _error(gamornet_predict_keras, **kwargs)


TRAIN_CASES = {
    "labels not (N, 3)": dict(training_labels=_Y[:, :2]),
    "labels wrong N": dict(training_labels=_Y[:4]),
    "labels not one-hot": dict(validation_labels=_Y * 2),
    "wrong ndim": dict(training_imgs=_X[..., 0]),
    "non-numeric dtype": dict(validation_imgs=np.full((6, *SMALL_SHAPE), "a")),
    "nan pixels": dict(training_imgs=_NAN),
    "empty array": dict(validation_imgs=np.zeros((0, *SMALL_SHAPE), np.float32)),
    "unknown preset": dict(input_shape="CANDEL"),
    "negative lr": dict(lr=-1.0),
    "bad epochs": dict(epochs=0),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input_same_errors_as_keras(case):
    kwargs = dict(training_imgs=_X, training_labels=_Y, validation_imgs=_X, validation_labels=_Y,
                  input_shape=SMALL_SHAPE, files_save_path=os.devnull, epochs=1)
    kwargs.update(TRAIN_CASES[case])
    assert _error(gamornet_train_tflearn, **kwargs) == _error(gamornet_train_keras, **kwargs)


TL_CASES = {
    "7 bools": dict(load_layers_bools=[True] * 7),
    "non-bool entries": dict(trainable_bools=[1] * 8),
    "unknown bool preset": dict(trainable_bools="train_bools_XYZ"),
    "labels not one-hot": dict(training_labels=np.full((6, 3), 0.5)),
}


@pytest.mark.parametrize("case", sorted(TL_CASES))
def test_tl_bad_input_same_errors_as_keras(case, plain_checkpoint):
    kwargs = dict(training_imgs=_X, training_labels=_Y, validation_imgs=_X, validation_labels=_Y,
                  input_shape=SMALL_SHAPE, model_load_path=plain_checkpoint[0], files_save_path=os.devnull, epochs=1)
    kwargs.update(TL_CASES[case])
    assert _error(gamornet_tl_tflearn, **kwargs) == _error(gamornet_tl_keras, **kwargs)


def test_tflearn_specific_argument_errors(plain_checkpoint):
    prefix, x, _, _ = plain_checkpoint
    with pytest.raises(ValueError, match="trainable_bools"):
        gamornet_predict_tflearn(x, prefix, SMALL_SHAPE, trainable_bools=[True] * 7)
    with pytest.raises(ValueError, match="max_checkpoints"):
        gamornet_train_tflearn(_X, _Y, _X, _Y, SMALL_SHAPE, files_save_path=os.devnull, max_checkpoints=0)
    with pytest.raises(ValueError, match="decay"):
        gamornet_train_tflearn(_X, _Y, _X, _Y, SMALL_SHAPE, files_save_path=os.devnull, decay=2.0)
    with pytest.raises(ValueError, match="loss"):
        gamornet_train_tflearn(_X, _Y, _X, _Y, SMALL_SHAPE, files_save_path=os.devnull, loss="no_such_loss")
    with pytest.raises(ValueError, match="show_metric"):
        gamornet_train_tflearn(_X, _Y, _X, _Y, SMALL_SHAPE, files_save_path=os.devnull, show_metric="yes")
    with pytest.raises(FileNotFoundError, match="model_load_path"):
        gamornet_tl_tflearn(_X, _Y, _X, _Y, SMALL_SHAPE, files_save_path=os.devnull, model_load_path="./nothing")
