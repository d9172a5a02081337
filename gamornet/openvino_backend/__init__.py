"""GaMorNet on the OpenVINO runtime: converted models, stored once and run without Keras or TensorFlow.

- :mod:`~gamornet.openvino_backend.runtime`: the OpenVINO core (imported
  with its telemetry declined, see :func:`~gamornet.openvino_backend.runtime.telemetry_declined`),
  :class:`~gamornet.openvino_backend.runtime.OpenVINOForward` (one compiled
  model, one inference request, told its precision explicitly) and
  :func:`~gamornet.openvino_backend.runtime.load_forward`;
- :mod:`~gamornet.openvino_backend.store`: converted models on disk (one
  folder per model file, input shape, LRN flavour and versions, written
  into a temporary folder and renamed into place, checked against the
  checksums recorded when written on every load, pruned by age and size).

Converting needs the Keras model, so it lives in :mod:`gamornet.engines`;
nothing here imports Keras, TensorFlow, TFLearn, PyTorch or JAX, and
:func:`is_available` does not even import OpenVINO.
"""

from __future__ import annotations

import importlib.util

__all__ = ["is_available"]


def is_available() -> bool:
    """Whether the ``openvino`` package is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False
