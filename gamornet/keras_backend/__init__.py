"""GaMorNet on Keras 3: its layers, the model and its saved forms, compiled forward passes, training.

- :mod:`~gamornet.keras_backend.layers`: the LRN of both flavours and the
  pixel scaling stored in models;
- :mod:`~gamornet.keras_backend.model`: the model built from
  :data:`gamornet.core.network.LAYERS`, weights read from any saved form;
- :mod:`~gamornet.keras_backend.forward`: :func:`load_forward`, the
  prediction entry point;
- :mod:`~gamornet.keras_backend.training`: the training engine;
- :mod:`~gamornet.keras_backend.frameworks`: what differs between the Keras
  backends (TensorFlow, JAX, PyTorch), the frameworks Keras runs on.
"""

from gamornet.keras_backend.frameworks import keep_tensorflow_out

keep_tensorflow_out()

from gamornet.keras_backend.forward import KerasForward, load_forward  # noqa: E402

__all__ = ["KerasForward", "load_forward"]
