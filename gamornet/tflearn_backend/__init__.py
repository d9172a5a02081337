"""GaMorNet on TFLearn 0.5.0 (TensorFlow 2): compatibility fixes, the network, training.

- :mod:`~gamornet.tflearn_backend.compat`: TFLearn importable and usable on
  TensorFlow 2 beside Keras 3;
- :mod:`~gamornet.tflearn_backend.network`: building, restoring and saving
  networks; :func:`load_forward`, the prediction entry point;
- :mod:`~gamornet.tflearn_backend.training`: the training engine.
"""

from gamornet.tflearn_backend.network import TFLearnForward, load_forward

__all__ = ["TFLearnForward", "load_forward"]
