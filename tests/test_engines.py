"""Choosing the engine and precision; Keras bfloat16 against float32 on simulated galaxies.

The OpenVINO runtime itself is tested in tests/openvino_backend/; the tests marked ``openvino``
below need the openvino package, the others only Keras.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from gamornet import engines
from gamornet.core.thresholds import classify_probabilities

from helpers import ORDER_ATOL, SMALL_SHAPE, keras2_model, make_data


@pytest.fixture
def without_openvino(monkeypatch):
    monkeypatch.setattr(engines, "openvino_available", lambda: False)


@pytest.fixture
def with_openvino(monkeypatch):
    monkeypatch.setattr(engines, "openvino_available", lambda: True)
    monkeypatch.setattr(engines, "nvidia_gpu_visible", lambda: False)


def test_auto_without_openvino_is_keras_or_tflearn(without_openvino):
    assert engines.choose_engine() == engines.EngineChoice("keras", "float32", "float32")
    assert engines.choose_engine(flavor="tflearn").engine == "tflearn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # TFLearn has no bfloat16: the Keras model with the TFLearn LRN takes the checkpoint's weights
        assert engines.choose_engine(precision="bfloat16", flavor="tflearn").engine == "keras"


def test_auto_with_openvino(with_openvino):
    assert engines.choose_engine() == engines.EngineChoice("openvino", "float32", "float32")
    assert engines.choose_engine(flavor="tflearn").engine == "openvino"
    assert engines.choose_engine(mc_samples=3).engine == "keras"  # MC dropout: Keras only
    assert engines.choose_engine(strategy=object()).engine == "keras"  # a strategy object: Keras only
    assert engines.choose_engine(strategy=None).engine == "openvino"


def test_auto_leaves_a_gpu_or_a_machine_without_tensorflow_to_keras(with_openvino, monkeypatch):
    monkeypatch.setattr(engines, "nvidia_gpu_visible", lambda: True)
    assert engines.choose_engine().engine == "keras"  # the backend's GPU path, not OpenVINO on the CPU
    monkeypatch.setattr(engines, "nvidia_gpu_visible", lambda: False)
    monkeypatch.setattr(engines, "_tensorflow_installed", lambda: False)
    assert engines.choose_engine().engine == "keras"  # nothing could convert the model
    assert engines.choose_engine("openvino").engine == "openvino"  # asked for: a stored conversion may exist


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(engine="onnx"), ValueError, r"`engine` must be one of 'auto', 'keras', 'openvino'.*Received: engine='onnx'"),
    (dict(engine="tflearn"), ValueError,  # a Keras model: the message names the fix
     r"engine='tflearn' runs TFLearn checkpoints only: it needs flavor='tflearn' \(--flavor tflearn on the command "
     r"line\); for a Keras model choose engine 'auto', 'keras' or 'openvino'. Received: engine='tflearn', "
     r"flavor='keras'"),
    (dict(precision="float16"), ValueError, r"`precision` must be one of .*Received: precision='float16'"),
    (dict(precision=None), ValueError, r"Received: precision=None"),
    (dict(engine="tflearn", precision="bfloat16", flavor="tflearn"), ValueError,
     r"TFLearn computes in float32 only.*Received: engine='tflearn', precision='bfloat16'"),
    (dict(engine="openvino", mc_samples=2), ValueError,
     r"Monte-Carlo dropout needs engine='keras'.*Received: engine='openvino', mc_samples=2"),
    (dict(engine="openvino", strategy="mirrored"), ValueError,
     r"strategy needs engine='keras'.*Received: engine='openvino', strategy='mirrored'"),
])
def test_bad_choices_name_the_argument(with_openvino, kwargs, error, message):
    with pytest.raises(error, match=message):
        engines.choose_engine(**kwargs)


def test_openvino_asked_for_but_not_installed(without_openvino):
    message = r"needs the openvino package .*pip install openvino.*Received: engine='openvino'"
    with pytest.raises(engines.EngineUnavailableError, match=message):
        engines.choose_engine("openvino")
    assert issubclass(engines.EngineUnavailableError, RuntimeError)


def test_bfloat16_warns_only_without_native_bfloat16(without_openvino, monkeypatch):
    monkeypatch.setattr(engines, "native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match=r"without native bfloat16.*avx512_bf16.*Keras emulates it.*slower"):
        choice = engines.choose_engine("keras", "bfloat16")
    assert choice == engines.EngineChoice("keras", "bfloat16", "bfloat16")
    monkeypatch.setattr(engines, "native_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engines.choose_engine("keras", "bfloat16").precision == "bfloat16"
        assert engines.choose_engine("keras", "float32").precision == "float32"


# ---------------------------------------------------------------- Keras bfloat16 on simulated galaxies


def simulated_galaxies(n: int, seed: int):
    """32x32 CANDELS-like galaxies (counts) and their class indices."""
    from gamornet.simulate import simulate_galaxies

    images, catalog = simulate_galaxies(n, "CANDELS", seed=seed, workers=1, progress=False, shape=SMALL_SHAPE[:2],
                                        centre=(14.5, 16.5), disk_re=(1.5, 8), bulge_re=(1, 5), disk_mag=(19, 23))
    return images, np.asarray(catalog["class_index"])


@pytest.fixture(scope="session")
def galaxy_model(tmp_path_factory):
    """A small model trained on simulated galaxies until most probabilities are confident, as a usable model's are.

    Label changes under bfloat16 come from galaxies within ~1e-2 of a threshold; a barely trained model has
    most galaxies there (4 epochs: 1.3% of the labels changed), which says nothing about a usable model.
    """
    from gamornet.keras_module import gamornet_train_keras

    images, classes = simulated_galaxies(240, seed=1)
    directory = tmp_path_factory.mktemp("galaxy_model")
    gamornet_train_keras(images, np.eye(3, dtype=np.float32)[classes], None, None, SMALL_SHAPE,
                         files_save_path=str(directory), epochs=8, batch_size=32, lr=3e-4, optimizer="adam",
                         preprocessing="max", seed=0, verbose=0)
    return str(directory / "trained_model.keras")


@pytest.fixture(scope="session")
def test_galaxies():
    return simulated_galaxies(2000, seed=2)[0]  # enough that 0.5% is 10 galaxies, not 2


def bfloat16_close(p32: np.ndarray, p16: np.ndarray) -> None:
    """bfloat16 keeps 8 significant bits (relative rounding 2^-9 per operation), compounded over 8 layers.

    The bulk of the probabilities (99%) moves by under 1e-2; the largest move by under 2e-2.
    """
    difference = np.abs(p16 - p32)
    assert 0 < difference.max() < 2e-2, difference.max()  # bfloat16 arithmetic really ran, and stays close
    assert np.quantile(difference, 0.99) < 1e-2, np.quantile(difference, 0.99)


def label_changes(p32: np.ndarray, p16: np.ndarray) -> float:
    """Largest fraction of labels changed under the published Keras policies (or the argmax)."""
    fractions = [np.mean(classify_probabilities(p32, policy) != classify_probabilities(p16, policy))
                 for policy in ("keras_sdss", "keras_candels")]
    return max([*fractions, np.mean(p32.argmax(1) != p16.argmax(1))])


@pytest.mark.slow
def test_keras_bfloat16_agrees_with_float32(galaxy_model, test_galaxies):
    from gamornet.keras_module import gamornet_predict_keras

    opts = dict(progress=False, engine="keras")
    p32 = gamornet_predict_keras(test_galaxies, galaxy_model, SMALL_SHAPE, **opts)
    assert p32.max() > 0.9 and p32.min() < 0.1  # a model that separates the galaxies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated on CPUs without bfloat16
        p16 = gamornet_predict_keras(test_galaxies, galaxy_model, SMALL_SHAPE, precision="bfloat16", **opts)
    bfloat16_close(p32, p16)
    assert label_changes(p32, p16) <= 0.005


# ---------------------------------------------------------------- OpenVINO (skipped only without openvino)

needs_openvino = pytest.mark.skipif(not engines.openvino_available(), reason="openvino is not installed")


@pytest.fixture
def images():
    return make_data(10, seed=5)[0]


@pytest.mark.slow  # trains the agreement model
@pytest.mark.openvino
@needs_openvino
def test_openvino_bfloat16_agrees_with_float32(galaxy_model, test_galaxies):
    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.openvino_backend.runtime import native_bfloat16 as openvino_bfloat16

    p32 = gamornet_predict_keras(test_galaxies, galaxy_model, SMALL_SHAPE, progress=False, engine="keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 instead on CPUs without bfloat16
        choice = engines.choose_engine("openvino", "bfloat16")
        forward = engines.load_forward(galaxy_model, SMALL_SHAPE, choice)
    assert forward.precision == choice.precision == ("bfloat16" if openvino_bfloat16() else "float32")
    p16 = forward(test_galaxies)
    bfloat16_close(p32, p16)
    assert label_changes(p32, p16) <= 0.005


@pytest.mark.openvino
@needs_openvino
@pytest.mark.parametrize("lrn", ["keras", "tflearn"])
def test_openvino_float32_equals_keras_on_keras2_hdf5(tmp_path, images, lrn):
    import tf_keras

    from gamornet.keras_module import gamornet_predict_keras

    tf_keras.utils.set_random_seed(11)
    old = keras2_model(lrn)
    path = str(tmp_path / "keras2.h5")
    old.save(path, save_format="h5")
    expected = old.predict(images, verbose=0)  # Keras 2 itself
    opts = dict(lrn=None if lrn == "keras" else "tflearn", progress=False)
    keras = gamornet_predict_keras(images, path, SMALL_SHAPE, engine="keras", **opts)
    got = gamornet_predict_keras(images, path, SMALL_SHAPE, engine="openvino", **opts)
    np.testing.assert_allclose(got, keras, rtol=0, atol=ORDER_ATOL)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
    other = gamornet_predict_keras(images, path, SMALL_SHAPE, engine="openvino", progress=False,
                                   lrn="tflearn" if lrn == "keras" else "keras")
    assert np.abs(other - expected).max() > 10 * ORDER_ATOL  # the comparison can tell the LRN flavours apart


@pytest.mark.openvino
@needs_openvino
def test_openvino_float32_equals_tflearn_on_a_checkpoint(tmp_path, images):
    from gamornet.tflearn_module import build_tflearn_network, gamornet_predict_tflearn, save_tflearn_checkpoint

    network = build_tflearn_network(SMALL_SHAPE)
    rng = np.random.default_rng(7)
    with network.graph.as_default():  # fixed weights, uniform within +-sqrt(3 / fan_in): probabilities spread
        updates = []  # over (0.09, 0.61) without saturating, so float32 rounding moves them by ~1e-6 only
        for w, _ in network.variables:
            shape = w.get_shape().as_list()
            bound = np.sqrt(3.0 / np.prod(shape[:-1]))
            updates.append(w.assign(rng.uniform(-bound, bound, shape).astype(np.float32)))
        network.session.run(updates)
    prefix = save_tflearn_checkpoint(network, str(tmp_path / "check-7"))
    network.close()
    expected = gamornet_predict_tflearn(images, prefix, SMALL_SHAPE, engine="tflearn", progress=False)
    assert expected.max() - expected.min() > 0.1
    for engine in ("openvino", "keras", "auto"):
        got = gamornet_predict_tflearn(images, prefix, SMALL_SHAPE, engine=engine, progress=False)
        np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL, err_msg=engine)
    forward = engines.load_forward(prefix, SMALL_SHAPE, engines.choose_engine(flavor="tflearn"))
    assert (forward.engine, forward.precision) == ("openvino", "float32")


@pytest.fixture
def saved_model(tmp_path):
    from gamornet.keras_backend.model import build_keras_model

    path = tmp_path / "model.keras"
    build_keras_model(SMALL_SHAPE, seed=21).save(path)
    return str(path)


def stored(root=None) -> list:
    root = root or engines.openvino_cache_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GAMORNET_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "openvino"


@pytest.mark.openvino
@needs_openvino
def test_conversion_runs_once_and_is_stored_in_float32(saved_model, images, cache_home, monkeypatch):
    from gamornet.keras_backend.model import load_keras_model
    from gamornet.openvino_backend import store

    choice = engines.choose_engine("openvino")
    first = engines.load_forward(saved_model, SMALL_SHAPE, choice, progress=False)
    assert len(stored()) == 1 and engines.openvino_cache_root() == cache_home
    xml = cache_home / stored()[0] / store.MODEL_XML
    params = load_keras_model(saved_model, SMALL_SHAPE).count_params()
    assert os.path.getsize(xml.with_suffix(".bin")) >= 4 * params * 0.999  # float32 weights, not float16
    before = os.stat(xml).st_mtime_ns
    monkeypatch.setattr(engines, "_saver", lambda *a: pytest.fail("converted again"))
    again = engines.load_forward(saved_model, SMALL_SHAPE, choice, reuse=False, progress=False)
    assert again is not first and os.stat(xml).st_mtime_ns == before
    np.testing.assert_array_equal(again(images), first(images))


@pytest.mark.openvino
@needs_openvino
def test_changed_model_file_is_converted_again(saved_model, images, cache_home):
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.keras_module import gamornet_predict_keras

    engines.load_forward(saved_model, SMALL_SHAPE, engines.choose_engine("openvino"), progress=False)
    old_entries = stored()
    build_keras_model(SMALL_SHAPE, seed=22).save(saved_model)  # new weights, same path
    got = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="openvino", progress=False)
    expected = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="keras", progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
    assert len(stored()) == 1 and stored() != old_entries  # the old conversion was removed


@pytest.mark.openvino
@needs_openvino
def test_damaged_stored_conversion_is_converted_again(saved_model, images, cache_home):
    from gamornet.keras_module import gamornet_predict_keras

    expected = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="keras", progress=False)
    engines.load_forward(saved_model, SMALL_SHAPE, engines.choose_engine("openvino"), progress=False)
    weights = cache_home / stored()[0] / "model.bin"
    with open(weights, "r+b") as f:
        f.truncate(1000)
    with pytest.warns(UserWarning, match=r"damaged: model.bin has 1000 bytes"):
        got = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="openvino", progress=False,
                                     reuse_model=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
    assert os.path.getsize(weights) > 1000


def damage_in_place(path) -> None:
    """Change a stored file without changing its size: zero up to 1 MiB of the weights, one window of the graph."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".bin":
        n = min(2**20, len(data) // 2)
        data[len(data) // 4:len(data) // 4 + n] = bytes(n)
    else:
        at = data.index(b'kernel="5, 5"')  # the window of the first LRN's sum: the graph stays readable
        data[at:at + 13] = b'kernel="3, 3"'
    with open(path, "r+b") as f:
        f.write(data)


@pytest.mark.openvino
@needs_openvino
@pytest.mark.parametrize("name", ["model.bin", "model.xml"])
def test_same_size_damage_is_detected_and_converted_again(saved_model, images, cache_home, name):
    choice = engines.choose_engine("openvino")
    expected = engines.load_forward(saved_model, SMALL_SHAPE, choice, reuse=False, progress=False)(images)
    folder = cache_home / stored()[0]
    weights, original = (folder / "model.bin").read_bytes(), (folder / name).read_bytes()
    damage_in_place(folder / name)
    damaged = (folder / name).read_bytes()
    assert len(damaged) == len(original) and damaged != original
    with pytest.warns(UserWarning, match=rf"conversion in {folder} is damaged: {name} does not match"):
        forward = engines.load_forward(saved_model, SMALL_SHAPE, choice, reuse=False, progress=False)
    np.testing.assert_array_equal(forward(images), expected)
    assert stored() == [folder.name] and (folder / name).read_bytes() != damaged  # converted again
    assert (folder / "model.bin").read_bytes() == weights  # the same weights (the graph names its layers anew)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = engines.load_forward(saved_model, SMALL_SHAPE, choice, reuse=False, progress=False)
    np.testing.assert_array_equal(again(images), expected)


@pytest.mark.openvino
@needs_openvino
def test_unwritable_cache_converts_in_memory_with_a_warning(saved_model, images, tmp_path, monkeypatch):
    from gamornet.keras_module import gamornet_predict_keras

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GAMORNET_HOME", str(blocker / "home"))
    expected = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="keras", progress=False)
    with pytest.warns(UserWarning, match=r"Cannot store models converted for OpenVINO.*GAMORNET_HOME"):
        got = gamornet_predict_keras(images, saved_model, SMALL_SHAPE, engine="openvino", progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)
