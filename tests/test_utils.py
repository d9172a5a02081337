import numpy as np
import pytest

from gamornet import utils
from gamornet.thresholds import ThresholdPolicy, classify_probabilities, get_policy


def test_input_shape_aliases_and_tuples():
    assert utils.check_input_shape("SDSS") == (167, 167, 1)
    assert utils.check_input_shape("CANDELS") == (83, 83, 1)
    assert utils.check_input_shape([64, 48, 2]) == (64, 48, 2)


@pytest.mark.parametrize("bad", ["sdss", "HST", (167, 167), (167, 167, 0), (16.0, 16, 1), (True, 16, 1), None])
def test_bad_input_shape_names_argument_and_value(bad):
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: input_shape="):
        utils.check_input_shape(bad)


def test_bool_presets():
    assert utils.check_bools("load_bools_SDSS", "x") == (True,) * 5 + (False,) * 3
    assert utils.check_bools("load_bools_CANDELS", "x") == (True,) * 6 + (False,) * 2
    assert utils.check_bools("train_bools_SDSS", "x") == (True,) * 8
    assert utils.check_bools("train_bools_CANDELS", "x") == (False,) * 3 + (True,) * 5
    assert utils.check_bools(np.ones(8, dtype=bool), "x") == (True,) * 8
    assert utils.train_bools_CANDELS == [False] * 3 + [True] * 5


@pytest.mark.parametrize("bad", [[True] * 7, [True] * 9, [1] * 8, "train_bools_HST", None, "TTTTTTTT"])
def test_bad_bools(bad):
    with pytest.raises(ValueError, match=r"`trainable_bools`.*Received: trainable_bools="):
        utils.check_bools(bad, "trainable_bools")


def test_images_are_cast_not_rescaled():
    ints = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4, 1)
    out = utils.check_images(ints, input_shape=(4, 4, 1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ints)


@pytest.mark.parametrize(
    "images,error,pattern",
    [
        (np.zeros((4, 4, 1), np.float32), ValueError, r"`img_array` must be a 4-D.*Received: shape=\(4, 4, 1\)"),
        (np.zeros((2, 5, 4, 1), np.float32), ValueError, r"input shape \(4, 4, 1\).*Received: shape=\(5, 4, 1\)"),
        (np.array([[["a"]]] * 2).reshape(2, 1, 1, 1), TypeError, r"`img_array` must hold numbers.*Received: dtype="),
        (np.zeros((0, 4, 4, 1), np.float32), ValueError, r"`img_array` holds no images.*Received: shape=\(0,"),
    ],
)
def test_bad_images(images, error, pattern):
    shape = (4, 4, 1) if images.shape[1:] != (1, 1, 1) else (1, 1, 1)
    with pytest.raises(error, match=pattern):
        utils.check_images(images, input_shape=shape)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_image(value):
    images = np.zeros((5, 4, 4, 1), np.float32)
    images[3, 1, 2, 0] = value
    with pytest.raises(ValueError, match=r"`img_array` has NaN or inf pixels in image\(s\) \[3\]"):
        utils.check_images(images)


def test_labels():
    good = np.eye(3)[[0, 2, 1]]
    np.testing.assert_array_equal(utils.check_labels(good, 3), good)
    with pytest.raises(ValueError, match=r"`training_labels` must have shape \(3, 3\).*Received: shape=\(3,\)"):
        utils.check_labels([0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\).*Received: shape=\(3, 3\)"):
        utils.check_labels(good, 2)
    with pytest.raises(ValueError, match=r"rows must be one-hot.*Received: rows \[1\]"):
        utils.check_labels([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1]], 3)
    with pytest.raises(TypeError, match="`training_labels` must be numeric"):
        utils.check_labels(np.array([["disk"] * 3] * 3), 3)
    assert list(utils.labels_from_onehot(good)) == ["disk", "bulge", "indeterminate"]


def test_published_policies_at_their_boundaries():
    p = np.array([
        [0.70, 0.20, 0.10],  # disk for keras_sdss (>=), not for tflearn_sdss
        [0.10, 0.20, 0.70],  # bulge for keras_sdss
        [0.69, 0.30, 0.01],
        [0.80, 0.10, 0.10],
        [0.37, 0.33, 0.30],  # disk by argmax for CANDELS policies
        [0.36, 0.34, 0.30],  # keras_candels disk; tflearn_candels needs > 0.36
        [0.30, 0.15, 0.55],  # tflearn_candels bulge (>= 0.55), keras_candels needs 0.60
        [0.30, 0.40, 0.30],
    ])
    expect = {
        "keras_sdss": ["disk", "bulge", "indeterminate", "disk", "indeterminate", "indeterminate", "indeterminate",
                       "indeterminate"],
        "tflearn_sdss": ["indeterminate", "indeterminate", "indeterminate", "disk"] + ["indeterminate"] * 4,
        "keras_candels": ["disk", "bulge", "disk", "disk", "disk", "disk", "indeterminate", "indeterminate"],
        "tflearn_candels": ["disk", "bulge", "disk", "disk", "disk", "indeterminate", "bulge", "indeterminate"],
    }
    for name, labels in expect.items():
        assert list(classify_probabilities(p, name)) == labels, name


def test_user_thresholds():
    p = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.45, 0.1, 0.45]])
    assert list(classify_probabilities(p, (0.6, 0.6))) == ["disk", "bulge", "indeterminate"]
    assert list(classify_probabilities(p, {"disk_min": 0.4, "bulge_min": 0.9})) == ["disk", "indeterminate", "disk"]
    assert get_policy(ThresholdPolicy(0.5, 0.5)).disk_min == 0.5


@pytest.mark.parametrize("bad", ["keras_hst", (1.2, 0.5), {"disk": 0.5}, 3])
def test_bad_policy(bad):
    with pytest.raises(ValueError, match=r"Received: "):
        classify_probabilities(np.full((1, 3), 1 / 3), bad)


def test_probabilities_shape_checked():
    with pytest.raises(ValueError, match=r"`probabilities` must have shape \(N, 3\)"):
        classify_probabilities(np.zeros((3, 2)))


def test_save_dir_and_atomic_path(tmp_path):
    assert utils.resolve_save_dir("/dev/null") is None
    target = tmp_path / "run" / "sub"
    assert utils.resolve_save_dir(str(target) + "/") == str(target) + "/"
    assert target.is_dir()
    final = target / "file.txt"
    with pytest.raises(RuntimeError):
        with utils.atomic_path(final) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert list(target.iterdir()) == []
    with utils.atomic_path(final) as tmp:
        open(tmp, "w").write("whole")
    assert final.read_text() == "whole" and len(list(target.iterdir())) == 1
