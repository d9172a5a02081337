"""The argument checks: every bad value refused by name, with what was expected and what was received."""

import numpy as np
import pytest

from gamornet.core import validation


def test_input_shape_aliases_and_tuples():
    assert validation.check_input_shape("SDSS") == (167, 167, 1)
    assert validation.check_input_shape("CANDELS") == (83, 83, 1)
    assert validation.check_input_shape([64, 48, 2]) == (64, 48, 2)


@pytest.mark.parametrize("bad", ["sdss", "HST", (167, 167), (167, 167, 0), (16.0, 16, 1), (True, 16, 1), None])
def test_bad_input_shape_names_argument_and_value(bad):
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: input_shape="):
        validation.check_input_shape(bad)


def test_bool_presets():
    assert validation.check_bools("load_bools_SDSS", "x") == (True,) * 5 + (False,) * 3
    assert validation.check_bools("load_bools_CANDELS", "x") == (True,) * 6 + (False,) * 2
    assert validation.check_bools("train_bools_SDSS", "x") == (True,) * 8
    assert validation.check_bools("train_bools_CANDELS", "x") == (False,) * 3 + (True,) * 5
    assert validation.check_bools(np.ones(8, dtype=bool), "x") == (True,) * 8



@pytest.mark.parametrize("bad", [[True] * 7, [True] * 9, [1] * 8, "train_bools_HST", None, "TTTTTTTT"])
def test_bad_bools(bad):
    with pytest.raises(ValueError, match=r"`trainable_bools`.*Received: trainable_bools="):
        validation.check_bools(bad, "trainable_bools")


def test_images_are_cast_not_rescaled():
    ints = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4, 1)
    out = validation.check_images(ints, input_shape=(4, 4, 1))
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
        validation.check_images(images, input_shape=shape)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_image(value):
    images = np.zeros((5, 4, 4, 1), np.float32)
    images[3, 1, 2, 0] = value
    with pytest.raises(ValueError, match=r"`img_array` has NaN or inf pixels in image\(s\) \[3\]"):
        validation.check_images(images)


def test_labels():
    good = np.eye(3)[[0, 2, 1]]
    np.testing.assert_array_equal(validation.check_labels(good, 3), good)
    with pytest.raises(ValueError, match=r"`training_labels` must have shape \(3, 3\).*Received: shape=\(3,\)"):
        validation.check_labels([0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\).*Received: shape=\(3, 3\)"):
        validation.check_labels(good, 2)
    with pytest.raises(ValueError, match=r"rows must be one-hot.*Received: rows \[1\]"):
        validation.check_labels([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1]], 3)
    with pytest.raises(TypeError, match="`training_labels` must be numeric"):
        validation.check_labels(np.array([["disk"] * 3] * 3), 3)
    assert list(validation.labels_from_onehot(good)) == ["disk", "bulge", "indeterminate"]


