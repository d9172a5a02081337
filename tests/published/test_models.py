"""Published model names end to end: fetched once from a local server in the published layout, cached, predicting.

The model files are written here in the published formats at the real CANDELS input shape: a Keras 2 HDF5
file (tf-keras) and a TFLearn checkpoint written by TFLearn itself.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gamornet.published.registry import get_model_info

from helpers import keras2_model, make_data
from servers import ftp_server, http_server

pytestmark = pytest.mark.slow

CANDELS = (83, 83, 1)


@pytest.fixture
def model_env(tmp_path, monkeypatch):
    served, cache = tmp_path / "server", tmp_path / "cache"
    served.mkdir()
    monkeypatch.setenv("GAMORNET_HOME", str(cache))
    monkeypatch.delenv("GAMORNET_OFFLINE", raising=False)
    return served, cache


def _cache_files(cache):
    """The downloaded files of the cache (not its locks, nor the conversions the OpenVINO engine stores there)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and ".locks" not in p.parts and p.relative_to(cache).parts[0] != "openvino")


def test_keras_candels_tl_downloads_once_then_predicts_from_cache(model_env, monkeypatch):
    pytest.importorskip("tf_keras")
    import tf_keras

    from gamornet.keras_backend.model import clear_model_cache
    from gamornet.keras_module import gamornet_predict_keras

    served, cache = model_env
    info = get_model_info("CANDELS_tl", "keras")
    target = served / info.path
    target.parent.mkdir(parents=True)
    tf_keras.utils.set_random_seed(11)
    old = keras2_model("keras", CANDELS)
    old.save(str(target), save_format="h5")
    images = make_data(5, CANDELS, seed=2)[0] * 20
    expected = old.predict(images, verbose=0)

    with ftp_server(served) as url:
        monkeypatch.setenv("GAMORNET_MODELS_URL", url)
        first = gamornet_predict_keras(images, "CANDELS_tl", "CANDELS")
    np.testing.assert_allclose(first, expected, atol=1e-5)
    assert _cache_files(cache) == [info.path]

    # server gone, nothing reachable: the cached file is used
    monkeypatch.setenv("GAMORNET_MODELS_URL", "http://127.0.0.1:9/")
    clear_model_cache()
    np.testing.assert_allclose(gamornet_predict_keras(images, "CANDELS_tl", "CANDELS"), expected, atol=1e-5)


def test_tflearn_candels_tl_downloads_once_then_predicts_from_cache(model_env, monkeypatch):
    from gamornet.convert import write_tflearn_checkpoint
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.tflearn_module import gamornet_predict_tflearn

    served, cache = model_env
    info = get_model_info("CANDELS_tl", "tflearn")
    (served / info.path).parent.mkdir(parents=True)
    model = build_keras_model(CANDELS, lrn="tflearn", seed=4)
    write_tflearn_checkpoint(model, str(served / info.path))
    images = make_data(5, CANDELS, seed=3)[0] * 20
    expected = np.asarray(model(images, training=False))

    with http_server(served) as server:
        monkeypatch.setenv("GAMORNET_MODELS_URL", server.url)
        first = gamornet_predict_tflearn(images, "CANDELS_tl", "CANDELS")
        n_requests = len(server.requests)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    assert _cache_files(cache) == sorted(info.files)
    assert n_requests == 3

    monkeypatch.setenv("GAMORNET_MODELS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    np.testing.assert_allclose(gamornet_predict_tflearn(images, "CANDELS_tl", "CANDELS"), expected, atol=1e-5)
    assert os.path.isfile(cache / (info.path + ".index"))
