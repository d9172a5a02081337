"""Property-based tests of the validation layer: any input is either accepted or refused by name.

Every checker is given random shapes, dtypes, NaN placements, label arrays, bool
lists and batch sizes.  The property: the call returns a value of the promised
kind, or raises ``ValueError`` / ``TypeError`` whose message names the argument
and shows what was received.  No other exception may escape.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gamornet import utils
from gamornet.core.thresholds import PROBABILITY_TOLERANCE, SUM_TOLERANCE, classify_probabilities

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Dtypes a user may hand over: numbers, but also bools, complex numbers, strings, objects.
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8,
                          np.uint16, np.bool_, np.complex64, np.dtype("U3"), np.dtype(object)])

#: Scalars and containers that are not what any argument wants.
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=6), st.lists(st.integers(-2, 3), max_size=4), st.tuples(st.integers(), st.text()))


def _refused(exc: BaseException, name: str) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__} escaped: {exc}"
    message = str(exc)
    assert f"`{name}`" in message, message
    assert "Received" in message, message


def _call(fn, name: str, *args, **kwargs):
    try:
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the property is about which exceptions escape
        _refused(exc, name)
        return False, None


@st.composite
def image_arrays(draw):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(DTYPES)
    if np.dtype(dtype).kind in "OU":
        return np.full(shape, "x", dtype=dtype)
    arr = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(np.dtype(dtype), allow_nan=False,
                                                                allow_infinity=False)
                          if np.dtype(dtype).kind not in "fc" else st.just(1)))
    if arr.size and np.dtype(dtype).kind == "f" and draw(st.booleans()):
        flat = arr.reshape(-1)
        flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return arr


@SETTINGS
@given(images=image_arrays(), shape=st.one_of(st.none(), st.tuples(st.integers(1, 5), st.integers(1, 5),
                                                                    st.integers(1, 5))))
def test_check_images_accepts_only_finite_real_stacks_of_the_shape(images, shape):
    ok, out = _call(utils.check_images, "img_array", images, "img_array", shape)
    if ok:
        assert out.dtype == np.float32 and out.ndim == 4 and out.shape[0] >= 1
        assert np.isfinite(out).all()
        assert shape is None or out.shape[1:] == shape
        assert images.dtype.kind in "iuf"
        np.testing.assert_array_equal(out, images.astype(np.float32))
    else:
        bad_kind = images.dtype.kind not in "iuf"
        bad_shape = images.ndim != 4 or (shape is not None and images.shape[1:] != shape) or images.shape[0] == 0
        bad_pixels = images.dtype.kind == "f" and not np.isfinite(images).all()
        assert bad_kind or bad_shape or bad_pixels


@SETTINGS
@given(shape=st.one_of(JUNK, st.sampled_from(["SDSS", "CANDELS", "sdss"]),
                       st.lists(st.one_of(st.integers(-2, 300), st.floats(0, 10), st.booleans()), max_size=4)))
def test_check_input_shape(shape):
    ok, out = _call(utils.check_input_shape, "input_shape", shape)
    if ok:
        assert isinstance(out, tuple) and len(out) == 3 and all(type(v) is int and v > 0 for v in out)


@SETTINGS
@given(value=st.one_of(JUNK, st.lists(st.one_of(st.booleans(), st.integers(0, 1)), min_size=6, max_size=10),
                       st.sampled_from(sorted(utils.BOOL_PRESETS))))
def test_check_bools(value):
    ok, out = _call(utils.check_bools, "trainable_bools", value, "trainable_bools")
    if ok:
        assert len(out) == 8 and all(type(v) is bool for v in out)
        if not isinstance(value, str):
            assert list(out) == list(value) and all(isinstance(v, bool) for v in value)


@SETTINGS
@given(value=st.one_of(JUNK, st.integers(-10**12, 10**12), st.floats(), st.sampled_from([np.int64(3), np.uint8(0)])),
       minimum=st.integers(0, 2))
def test_check_positive_int(value, minimum):
    ok, out = _call(utils.check_positive_int, "batch_size", value, "batch_size", minimum)
    if ok:
        assert type(out) is int and out >= minimum and out == value


@st.composite
def label_arrays(draw):
    n = draw(st.integers(0, 6))
    cols = draw(st.sampled_from([3, 3, 3, 2, 4]))
    kind = draw(st.sampled_from(["onehot", "random", "soft", "text", "1d"]))
    if kind == "onehot":
        return np.eye(3, cols, dtype=draw(st.sampled_from([np.float32, np.int64, np.bool_])))[
            draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))], n
    if kind == "random":
        return draw(hnp.arrays(np.float64, (n, cols), elements=st.one_of(st.floats(-1, 2), st.just(np.nan)))), n
    if kind == "soft":
        return np.full((n, cols), 1 / cols), n
    if kind == "text":
        return np.array([["disk"] * cols] * n), n
    return np.zeros(n), n


@SETTINGS
@given(labels=label_arrays(), n_offset=st.integers(-1, 1))
def test_check_labels(labels, n_offset):
    arr, n = labels
    n_images = max(n + n_offset, 0)
    ok, out = _call(utils.check_labels, "training_labels", arr, n_images, "training_labels")
    if ok:
        assert out.shape == (n_images, 3)
        assert set(np.unique(out)) <= {0.0, 1.0} and (out.sum(axis=1) == 1).all()


@SETTINGS
@given(probabilities=hnp.arrays(np.float64, st.tuples(st.integers(0, 5), st.integers(1, 4)),
                                elements=st.one_of(st.floats(-0.5, 1.5), st.sampled_from([np.nan, np.inf]))),
       normalise=st.booleans())
def test_classify_probabilities_accepts_only_probability_rows(probabilities, normalise):
    p = probabilities
    if normalise and p.shape[1] == 3:
        p = np.abs(np.nan_to_num(p, nan=0.5, posinf=1.0, neginf=0.0)) + 1e-3
        p = p / p.sum(axis=1, keepdims=True)
    ok, out = _call(classify_probabilities, "probabilities", p)
    tol = PROBABILITY_TOLERANCE
    valid = (p.shape[1] == 3 and np.isfinite(p).all() and ((p >= -tol) & (p <= 1 + tol)).all()
             and (np.abs(p.sum(axis=1) - 1.0) <= SUM_TOLERANCE).all())
    assert ok == valid
    if ok:
        assert out.shape == (p.shape[0],) and set(out) <= {"disk", "indeterminate", "bulge"}


@settings(max_examples=40, deadline=None)
@given(batch_size=st.one_of(JUNK, st.integers(-3, 10**13)), input_shape=st.one_of(st.just((8, 8, 1)), JUNK),
       individual=st.one_of(st.booleans(), JUNK))
def test_predict_keras_refuses_bad_arguments_before_loading_anything(batch_size, input_shape, individual,
                                                                    tmp_path_factory):
    from gamornet.keras_module import gamornet_predict_keras

    missing = str(tmp_path_factory.getbasetemp() / "no_such_model.keras")
    images = np.ones((2, 8, 8, 1), np.float32)
    try:
        gamornet_predict_keras(images, missing, input_shape, batch_size, individual, progress=False)
    except FileNotFoundError as exc:  # every argument passed: the missing model is the only problem
        assert "model_load_path" in str(exc)
        assert isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
        assert utils.check_input_shape(input_shape) == (8, 8, 1)
    except BaseException as exc:  # noqa: BLE001
        _refused(exc, _named_in(exc))
    else:  # pragma: no cover - the model does not exist
        pytest.fail("prediction succeeded without a model")


def _named_in(exc: BaseException) -> str:
    for name in ("batch_size", "input_shape", "individual_arrays", "img_array"):
        if f"`{name}`" in str(exc):
            return name
    return "an argument"


def test_property_strategies_reach_both_outcomes():
    """The strategies above produce accepted and refused inputs alike (the properties are not vacuous)."""
    rng = np.random.default_rng(1)
    good = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
    assert _call(utils.check_images, "img_array", good, "img_array", (3, 3, 1))[0]
    assert not _call(utils.check_images, "img_array", good.astype(np.complex64), "img_array", None)[0]
    assert _call(utils.check_positive_int, "batch_size", 64, "batch_size")[0]
    assert not _call(utils.check_positive_int, "batch_size", math.inf, "batch_size")[0]
