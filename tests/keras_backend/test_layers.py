import numpy as np
import pytest

from gamornet.keras_backend.layers import LocalResponseNormalization


def _brute_force_keras_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    n, h, w, c = x.shape
    out = np.empty_like(x, dtype=np.float64)
    half = size // 2
    for i in range(h):
        for j in range(w):
            window = x[:, max(0, i - half): i + half + 1, max(0, j - half): j + half + 1, :].astype(np.float64) ** 2
            s = window.mean(axis=(1, 2)).sum(axis=-1, keepdims=True)
            out[:, i, j, :] = x[:, i, j, :] / (k + alpha * s) ** beta
    return out


def _brute_force_depth_lrn(x, radius=5, alpha=1e-4, beta=0.75, k=1.0):
    c = x.shape[-1]
    sq = x.astype(np.float64) ** 2
    out = np.empty_like(sq)
    for ch in range(c):
        s = sq[..., max(0, ch - radius): ch + radius + 1].sum(axis=-1)
        out[..., ch] = x[..., ch] / (k + alpha * s) ** beta
    return out


@pytest.fixture
def activations():
    return (np.random.default_rng(1).random((2, 7, 9, 24)) * 40).astype(np.float32)


@pytest.mark.backends
def test_keras_flavour_is_spatial_mean_summed_over_all_channels(activations):
    out = np.asarray(LocalResponseNormalization("keras")(activations))
    np.testing.assert_allclose(out, _brute_force_keras_lrn(activations), rtol=2e-6, atol=1e-6)
    # the same factor for every channel of a pixel
    ratio = out / activations
    np.testing.assert_allclose(ratio, ratio[..., :1].repeat(ratio.shape[-1], axis=-1), rtol=1e-6)


def test_tflearn_flavour_matches_tf_nn_lrn(activations):
    import tensorflow as tf

    out = np.asarray(LocalResponseNormalization("tflearn")(activations))
    ref = tf.nn.local_response_normalization(activations, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, _brute_force_depth_lrn(activations), rtol=1e-5, atol=1e-6)


def test_flavours_differ(activations):
    a = np.asarray(LocalResponseNormalization("keras")(activations))
    b = np.asarray(LocalResponseNormalization("tflearn")(activations))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.backends
def test_config_round_trip_and_old_config_without_flavour():
    layer = LocalResponseNormalization("tflearn", name="lrn_x")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert clone.flavor == "tflearn" and clone.depth_radius == 5
    old = LocalResponseNormalization.from_config({"name": "lrn", "trainable": True, "batch_input_shape": None})
    assert old.flavor == "keras"


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError, match="flavor.*Received: flavor='caffe'"):
        LocalResponseNormalization("caffe")
