"""The OpenVINO runtime: precision told and read back, one request per model, batches of any size, telemetry."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gamornet.openvino_backend import is_available, runtime

if not is_available():
    pytest.skip("openvino is not installed", allow_module_level=True)
pytestmark = pytest.mark.openvino

from helpers import ORDER_ATOL, SMALL_SHAPE, make_data  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(model.xml of a converted random model, its Keras model)."""
    from gamornet.engines import convert_keras_model
    from gamornet.keras_backend.model import build_keras_model

    model = build_keras_model(SMALL_SHAPE, seed=3)
    xml = tmp_path_factory.mktemp("converted") / "model.xml"
    runtime.import_openvino().save_model(convert_keras_model(model), str(xml), compress_to_fp16=False)
    return xml, model


@pytest.fixture(scope="module")
def images():
    return make_data(20, seed=4)[0]


def keras_probabilities(model, images):
    from gamornet.keras_backend.forward import KerasForward

    return KerasForward(model)(images)


def test_float32_equals_keras_at_any_batch_size(converted, images):
    xml, model = converted
    forward = runtime.load_forward(xml, "float32", reuse=False)
    assert (forward.engine, forward.precision, forward.requested_precision) == ("openvino", "float32", "float32")
    expected = keras_probabilities(model, images)
    for size in (1, 7, 20):
        got = np.concatenate([forward(images[i:i + size]) for i in range(0, len(images), size)])
        np.testing.assert_allclose(got, expected, rtol=0, atol=ORDER_ATOL)


def test_precision_is_told_and_read_back(converted, images):
    xml, _ = converted
    assert runtime.compile_options("float32")["INFERENCE_PRECISION_HINT"] == "f32"
    assert runtime.compile_options("bfloat16")["INFERENCE_PRECISION_HINT"] == "bf16"
    bf16 = runtime.load_forward(xml, "bfloat16", reuse=False)
    native = runtime.native_bfloat16()
    assert bf16.requested_precision == "bfloat16"
    assert bf16.precision == ("bfloat16" if native else "float32")
    f32 = runtime.load_forward(xml, "float32", reuse=False)
    difference = np.abs(bf16(images) - f32(images)).max()
    if native:
        assert 0 < difference < 1e-2
    else:  # the CPU plugin computed the bf16 request in float32: the same kernels
        assert difference == 0
    with pytest.raises(ValueError, match=r"Received: precision='float16'"):
        runtime.compile_options("float16")


def test_inputs_are_never_written_and_outputs_never_reused(converted, images):
    xml, _ = converted
    first = runtime.load_forward(xml, "float32", reuse=True)
    assert runtime.load_forward(xml, "float32", reuse=True) is first
    second = runtime.load_forward(xml, "float32", reuse=False)  # another compiled model of the same file
    copies = images.copy()
    a, b, c = np.array(images[:8]), np.array(images[8:16]), np.array(images[16:19])
    out_a = first(a)
    kept = out_a.copy()
    second(b)
    first(c)  # another batch size on the same request
    second(a)
    np.testing.assert_array_equal(images, copies)
    np.testing.assert_array_equal(a, images[:8])
    np.testing.assert_array_equal(out_a, kept)


def test_a_row_does_not_depend_on_the_other_rows(converted, images):
    xml, _ = converted
    forward = runtime.load_forward(xml, "float32", reuse=False)
    batch = images[:8].copy()
    other = batch.copy()
    other[[0, 1, 2, 4, 7]] = images[10:15]
    zeros = np.zeros_like(batch)
    zeros[3] = batch[3]
    rows = [forward(b)[3] for b in (batch, other, zeros)]
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[0], rows[2])


def test_no_monte_carlo_dropout(converted, images):
    forward = runtime.load_forward(converted[0], "float32")
    with pytest.raises(RuntimeError, match=r"Monte-Carlo dropout needs engine='keras'"):
        forward.sample(images[:2])


def test_telemetry_is_declined_for_the_block_only(monkeypatch):
    monkeypatch.delenv(runtime.TELEMETRY_VARIABLE, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with runtime.telemetry_declined():
        assert os.environ["CI"] == "true"
    assert "CI" not in os.environ
    monkeypatch.setenv("CI", "false")
    with runtime.telemetry_declined():
        assert os.environ["CI"] == "true"
    assert os.environ["CI"] == "false"
    monkeypatch.setenv(runtime.TELEMETRY_VARIABLE, "1")  # leave it to OpenVINO's own setting
    with runtime.telemetry_declined():
        assert os.environ["CI"] == "false"
