"""The Keras backend of the process, the framework Keras 3 runs on: which one runs, its GPUs, TensorFlow kept out.

GaMorNet's Keras code runs on every Keras backend (TensorFlow, JAX,
PyTorch); the Keras backend is chosen as Keras documents it, by
``KERAS_BACKEND`` (or ``~/.keras/keras.json``) before Keras is first imported,
and is fixed for the process.  On JAX and PyTorch, GaMorNet never imports
TensorFlow, even where it is installed.  This module is the one place that
asks which Keras backend runs; see :doc:`/architecture` for the words used
(a Keras backend is not one of GaMorNet's ``*_backend`` subpackages).
"""

from __future__ import annotations

import sys

import keras

__all__ = ["backend_name", "has_gpu", "keep_tensorflow_out"]


def backend_name() -> str:
    """The Keras backend of this process: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def has_gpu() -> bool:
    """Whether the Keras backend sees a GPU (asked of that framework only)."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def keep_tensorflow_out() -> None:
    """On a Keras backend other than TensorFlow, stop Keras from importing TensorFlow for type checks.

    Keras' saving code asks ``isinstance(obj, tf.TensorShape)`` (and other
    TensorFlow types) of every object it serialises, importing TensorFlow to
    do so whenever it is installed: time and memory (see :doc:`/performance`),
    and on a GPU a memory pool of its own beside the Keras backend's.  While
    TensorFlow has not been imported, no object in the process can be of a
    TensorFlow type, so Keras is told that TensorFlow is unavailable.  Where
    TensorFlow is already imported, or Keras runs on it, nothing changes.
    """
    if backend_name() == "tensorflow" or "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:  # another Keras layout: nothing to adjust
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "module", None) is None and hasattr(lazy, "_available"):
        lazy._available = False
