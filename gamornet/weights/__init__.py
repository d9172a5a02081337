"""Saved GaMorNet models, without a deep-learning framework: where their weights lie and how to read them.

- :mod:`gamornet.weights.paths`: the kinds of saved model and their file
  endings, checkpoint prefixes, file fingerprints;
- :mod:`gamornet.weights.container`: :class:`ModelWeights`, the 8 (kernel,
  bias) pairs with the LRN flavour and pixel scaling they were trained with;
- :mod:`gamornet.weights.hdf5`: Keras HDF5 files (read with h5py);
- :mod:`gamornet.weights.tf1`: TFLearn (TF1) checkpoints (read with
  TensorFlow, imported when needed).

Keras 3 ``.keras`` archives are read by the Keras backend
(:func:`gamornet.keras_backend.model.read_weights`), which hands the other
kinds to these readers.
"""

from gamornet.weights.container import ModelWeights, infer_input_shape
from gamornet.weights.hdf5 import read_hdf5, validate_hdf5
from gamornet.weights.paths import fingerprint, model_kind, resolve_checkpoint_prefix, strip_checkpoint_suffix
from gamornet.weights.tf1 import read_checkpoint, validate_checkpoint

__all__ = [
    "ModelWeights",
    "infer_input_shape",
    "read_hdf5",
    "validate_hdf5",
    "read_checkpoint",
    "validate_checkpoint",
    "fingerprint",
    "model_kind",
    "resolve_checkpoint_prefix",
    "strip_checkpoint_suffix",
]
