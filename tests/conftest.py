"""Shared fixtures: small images, labels and trained models of a small input shape and a narrow network."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A cache of the session's own: models converted for OpenVINO (engine "auto" with openvino installed) go there,
# never into the user's cache.  Tests that need another cache set GAMORNET_HOME themselves.
os.environ["GAMORNET_HOME"] = tempfile.mkdtemp(prefix="gamornet-tests-home-")
atexit.register(shutil.rmtree, os.environ["GAMORNET_HOME"], True)

import pytest  # noqa: E402

from gamornet.openvino_backend import is_available as openvino_installed  # noqa: E402

if openvino_installed():  # imported once, with OpenVINO's telemetry declined, before any test imports it
    from gamornet.openvino_backend.runtime import import_openvino

    import_openvino()

from helpers import NARROW_WIDTHS, SMALL_SHAPE, blob_data, cpu_description, make_data  # noqa: E402
from helpers import narrow_network as _narrow_network  # noqa: E402


def pytest_report_header(config):
    """The CPU's vector-instruction flags: oneDNN picks other kernels on each, so failures can be attributed."""
    return [f"cpu: {cpu_description()}"]


@pytest.fixture(scope="session")
def small_data():
    return make_data(12)


@pytest.fixture
def narrow_network(monkeypatch):
    """Networks this test builds from scratch (training, ``saved_keras_model``) are narrow (``NARROW_WIDTHS``).

    For the tests where the width does not matter; use it with ``pytest.mark.usefixtures("narrow_network")``.
    """
    _narrow_network(monkeypatch)


@pytest.fixture(scope="session")
def narrow_keras_model(tmp_path_factory):
    """Path of a randomly initialised narrow GaMorNet (``NARROW_WIDTHS``, ``SMALL_SHAPE``, seed 0), saved once."""
    from helpers import saved_keras_model

    return saved_keras_model(tmp_path_factory.mktemp("narrow"), SMALL_SHAPE, seed=0, widths=NARROW_WIDTHS)


@pytest.fixture(scope="session")
def trained_keras_model(tmp_path_factory, small_data):
    """A narrow Keras model (``NARROW_WIDTHS``) trained for one epoch, saved as ``trained_model.keras``.

    Returns (path, model).
    """
    from gamornet.keras_module import gamornet_train_keras

    directory = tmp_path_factory.mktemp("trained")
    x, y = small_data
    with pytest.MonkeyPatch.context() as monkeypatch:
        _narrow_network(monkeypatch)
        model = gamornet_train_keras(x, y, x, y, SMALL_SHAPE, files_save_path=str(directory), epochs=1,
                                     batch_size=6, verbose=0)
    return str(directory / "trained_model.keras"), model


@pytest.fixture(scope="module")
def blobs():
    """Learnable blob images: a training set of 48 and a validation set of 24."""
    return blob_data(48, seed=0), blob_data(24, seed=1)


@pytest.fixture(autouse=True)
def _tensorflow_stays_out(request):
    """On the JAX and PyTorch backends, TensorFlow must not be imported by a ``backends`` test (checked after it).

    Run these tests with the files that hold them named (see ``.ci/run``):
    collecting the whole suite imports test modules that need TensorFlow.
    """
    import sys

    check = (request.node.get_closest_marker("backends") is not None
             and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow")
    yield
    if check:
        assert "tensorflow" not in sys.modules, (
            f"TensorFlow was imported under KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
