"""The Keras path on JAX and PyTorch: the TensorFlow backend's probabilities, and TensorFlow never imported.

These tests run in a process whose Keras backend is JAX or PyTorch
(``KERAS_BACKEND=jax`` / ``=torch``, as CI runs the ``backends`` marker);
the TensorFlow side (a Keras 2 file written by tf-keras, a model trained on
TensorFlow, the reference probabilities) runs in a child process on the
TensorFlow backend, so this process never imports TensorFlow.  Where
TensorFlow is not installed at all only the checks that need no reference run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from gamornet.keras_backend.forward import load_forward
from gamornet.keras_module import gamornet_predict_keras, gamornet_train_keras

from helpers import REPO, SMALL_SHAPE, make_data

BACKEND = keras.backend.backend()
pytestmark = [pytest.mark.backends,
              pytest.mark.skipif(BACKEND == "tensorflow", reason="compares the other Keras backends with TensorFlow")]
#: float32 over the same operations in another framework's kernels: sums in another order.
ATOL = 1e-5
HAS_TENSORFLOW = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf_keras"))
needs_reference = pytest.mark.skipif(not HAS_TENSORFLOW, reason="the reference needs TensorFlow and tf-keras")


def _run(code: str, cwd, backend: str = "tensorflow") -> str:
    """Run ``code`` in a fresh Python on Keras backend ``backend``; its stdout."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, timeout=900,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def on_tensorflow(tmp_path_factory):
    """A Keras 2 ``.hdf5`` (tf-keras) and a model trained on TensorFlow, with TensorFlow's probabilities."""
    if not HAS_TENSORFLOW:
        pytest.skip("the reference needs TensorFlow and tf-keras")
    directory = tmp_path_factory.mktemp("tensorflow")
    x, y = make_data(12, seed=31)
    np.save(directory / "x.npy", x * 20.0)  # bright: the LRN matters
    np.save(directory / "y.npy", y)
    _run("""
        import numpy as np, tf_keras
        from helpers import SMALL_SHAPE, keras2_model
        from gamornet.keras_module import gamornet_predict_keras, gamornet_train_keras
        x, y = np.load("x.npy"), np.load("y.npy")
        tf_keras.utils.set_random_seed(5)
        keras2_model("keras").save("legacy.hdf5", save_format="h5")
        gamornet_train_keras(x, y, None, None, SMALL_SHAPE, files_save_path="trained", epochs=1, batch_size=6,
                             verbose=0, seed=3)
        opts = dict(engine="keras", progress=False)
        np.savez("probs.npz", legacy=gamornet_predict_keras(x, "legacy.hdf5", SMALL_SHAPE, **opts),
                 trained=gamornet_predict_keras(x, "trained/trained_model.keras", SMALL_SHAPE, **opts))
    """, directory)
    return directory


def test_keras2_hdf5_predicts_as_on_tensorflow_without_importing_it(on_tensorflow):
    x = np.load(on_tensorflow / "x.npy")
    expected = np.load(on_tensorflow / "probs.npz")["legacy"]
    got = gamornet_predict_keras(x, str(on_tensorflow / "legacy.hdf5"), SMALL_SHAPE, batch_size=5, engine="keras",
                                 progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert np.abs(expected - 1 / 3).max() > 1e-3  # the weights really separate the classes
    assert "tensorflow" not in sys.modules


def test_model_trained_on_tensorflow_predicts_the_same_here(on_tensorflow):
    x = np.load(on_tensorflow / "x.npy")
    expected = np.load(on_tensorflow / "probs.npz")["trained"]
    got = gamornet_predict_keras(x, str(on_tensorflow / "trained" / "trained_model.keras"), SMALL_SHAPE,
                                 engine="keras", progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@needs_reference
def test_model_trained_here_predicts_the_same_on_tensorflow(on_tensorflow, tmp_path):
    x, y = np.load(on_tensorflow / "x.npy"), np.load(on_tensorflow / "y.npy")
    gamornet_train_keras(x, y, x[:6], y[:6], SMALL_SHAPE, files_save_path=str(tmp_path), epochs=2, batch_size=6,
                         verbose=0, seed=4, augment="flips")
    assert "tensorflow" not in sys.modules  # training, validation and augmentation included
    path = tmp_path / "trained_model.keras"
    here = gamornet_predict_keras(x, str(path), SMALL_SHAPE, engine="keras", progress=False)
    np.save(tmp_path / "x.npy", x)
    _run(f"""
        import numpy as np
        from gamornet.keras_module import gamornet_predict_keras
        np.save("tf.npy", gamornet_predict_keras(np.load("x.npy"), {str(path)!r}, (32, 32, 1), engine="keras",
                                                 progress=False))
    """, tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "tf.npy"), here, rtol=0, atol=ATOL)


def test_monte_carlo_dropout_is_seeded_on_this_backend(tmp_path):
    x, y = make_data(8, seed=32)
    gamornet_train_keras(x, y, None, None, SMALL_SHAPE, files_save_path=str(tmp_path), epochs=1, batch_size=4,
                         verbose=0, seed=6)
    forward = load_forward(tmp_path / "trained_model.keras", SMALL_SHAPE, reuse=False)
    passes = []
    for seed in (11, 11, 12):
        forward.reseed(seed)
        passes.append(np.stack([forward.sample(x) for _ in range(2)]))
    np.testing.assert_array_equal(passes[0], passes[1])  # the same seed: the same masks
    assert np.abs(passes[0][0] - passes[0][1]).max() > 1e-6  # successive passes draw new masks
    assert np.abs(passes[0] - passes[2]).max() > 1e-6  # another seed: other masks
    assert "tensorflow" not in sys.modules


def test_tflearn_checkpoint_is_refused_naming_the_conversion(tmp_path):
    prefix = tmp_path / "model.ckpt"
    for suffix in (".index", ".meta", ".data-00000-of-00001"):
        (tmp_path / f"model.ckpt{suffix}").write_bytes(b"")
    x, _ = make_data(2, seed=33)
    pattern = (rf"`model_load_path` is a TFLearn checkpoint.*'{BACKEND}' backend.*gamornet convert PREFIX "
               rf"model.keras.*Received: model_load_path=")
    with pytest.raises(RuntimeError, match=pattern):
        gamornet_predict_keras(x, str(prefix), SMALL_SHAPE, engine="keras", progress=False)
    assert "tensorflow" not in sys.modules


@needs_reference
def test_tf_data_datasets_are_refused_off_tensorflow(tmp_path):
    # In a child on this backend: making the dataset imports TensorFlow, which this process must not.
    out = _run("""
        import numpy as np, tensorflow as tf
        from helpers import SMALL_SHAPE, make_data
        from gamornet.keras_module import gamornet_train_keras
        x, y = make_data(4)
        try:
            gamornet_train_keras(tf.data.Dataset.from_tensor_slices((x, y)), None, None, None, SMALL_SHAPE,
                                 files_save_path="out", verbose=0)
        except TypeError as exc:
            print(exc)
    """, tmp_path, backend=BACKEND)
    assert f"`training_imgs` is a tf.data.Dataset, which needs the TensorFlow backend of Keras; this process runs " \
           f"Keras on '{BACKEND}'" in out and "Received: training_imgs of type" in out
    assert not (tmp_path / "out").exists()
