"""GaMorNet: the Galaxy Morphology Network (Ghosh et al. 2020, ApJ 895, 112).

A convolutional neural network that classifies galaxy images as
disk-dominated, indeterminate or bulge-dominated.  Two backends share one
description of the network (:mod:`gamornet.core.network`):

- :mod:`gamornet.keras_module` (Keras 3)
- :mod:`gamornet.tflearn_module` (TFLearn 0.5.0 on TensorFlow 2)

Importing :mod:`gamornet` is cheap: TensorFlow is imported only when a
backend function is called.  It sets ``TF_CPU_ALLOCATOR_USE_BFC=true``
unless that variable is already set: TensorFlow then pools CPU memory
instead of asking the system for every large tensor (Keras training is
faster on CPU: figures on the performance page).  TensorFlow reads it when it
runs its first operation; set it to ``false`` before importing
:mod:`gamornet` to keep the default allocator.
"""

from __future__ import annotations

import importlib
import os

__version__ = "1.0.0.dev0"

__all__ = ["__version__", "predict_files", "merge_tables"]

os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

#: Public names reached lazily, so ``import gamornet`` does not import TensorFlow.
_LAZY = {"predict_files": "gamornet.predict", "merge_tables": "gamornet.predict"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gamornet' has no attribute {name!r}")
