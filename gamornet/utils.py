"""Shared helpers of GaMorNet 0.4.3's two modules: shape aliases, layer presets, thresholds, model paths.

The names users of 0.4.3 reach here keep working: the ``"SDSS"`` /
``"CANDELS"`` shape aliases (:data:`INPUT_SHAPES`), the layer presets (also as
attributes, e.g. ``gamornet.utils.train_bools_CANDELS``), the published
probability thresholds (:func:`classify_probabilities`), the input checks and
the published-model resolver.  They are defined in :mod:`gamornet.core` and
:mod:`gamornet.published`; this module gathers them.
"""

from __future__ import annotations

from gamornet.core.files import atomic_path, resolve_save_dir
from gamornet.core.network import BOOL_PRESETS, INPUT_SHAPES
from gamornet.core.thresholds import POLICIES, ThresholdPolicy, classify_probabilities, get_policy
from gamornet.core.validation import (
    check_bools,
    check_images,
    check_input_shape,
    check_labels,
    check_optimizer_args,
    check_positive_int,
    check_predict_inputs,
    check_training_inputs,
    labels_from_onehot,
)
from gamornet.published.models import is_published_model, resolve_model_path

__all__ = [
    "INPUT_SHAPES",
    "BOOL_PRESETS",
    "POLICIES",
    "ThresholdPolicy",
    "check_input_shape",
    "check_bools",
    "check_images",
    "check_labels",
    "check_positive_int",
    "classify_probabilities",
    "get_policy",
    "is_published_model",
    "resolve_model_path",
    "labels_from_onehot",
    "check_training_inputs",
    "check_predict_inputs",
    "check_optimizer_args",
    "resolve_save_dir",
    "atomic_path",
]


def __getattr__(name: str):
    # The presets as module attributes, as GaMorNet 0.4.3 users may reach them.
    if name in BOOL_PRESETS:
        return list(BOOL_PRESETS[name])
    raise AttributeError(f"module 'gamornet.utils' has no attribute {name!r}")
