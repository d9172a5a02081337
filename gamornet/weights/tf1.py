"""The one reader of TFLearn (TF1) checkpoints: GaMorNet's weights read with plain TensorFlow.

A TFLearn checkpoint holds every variable of the training graph; GaMorNet's
weights are ``Conv2D/W``, ``Conv2D/b`` ... ``FullyConnected_2/b``
(:func:`gamornet.core.network.tflearn_variable_prefixes`).  Optimiser slots
and counters are skipped.  ``tf.train.load_checkpoint`` reads them without
TFLearn; TensorFlow is imported when a checkpoint is read, and a clear error
says so where it is not installed.
"""

from __future__ import annotations

import os

from gamornet.core.network import WEIGHTED_LAYERS, tflearn_variable_prefixes, weight_shapes
from gamornet.weights.container import ModelWeights
from gamornet.weights.paths import CHECKPOINT_SUFFIXES, resolve_checkpoint_prefix

__all__ = ["read_checkpoint", "checkpoint_variable_shapes", "validate_checkpoint"]


def _tensorflow(prefix: str, name: str):
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError(
            f"`{name}` is a TFLearn checkpoint, and reading one needs TensorFlow, which is not installed here. "
            "Convert it once where TensorFlow is installed: `gamornet convert PREFIX model.keras` (a Keras file "
            f"loads on every Keras backend). Received: {name}={prefix!r}"
        ) from None
    return tf


def _open_reader(prefix: str, name: str):
    tf = _tensorflow(prefix, name)
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", str(exc)).splitlines()[0]
        raise ValueError(f"`{name}`={prefix!r} could not be read as a TFLearn checkpoint: {message}") from None


def checkpoint_variable_shapes(prefix, name: str = "model_load_path") -> dict[str, list[int]]:
    """Names and shapes of every variable in a checkpoint (reads only its index)."""
    return dict(_open_reader(resolve_checkpoint_prefix(prefix, name), name).get_variable_to_shape_map())


def read_checkpoint(prefix, name: str = "model_load_path") -> ModelWeights:
    """Read the weights of a TFLearn GaMorNet checkpoint.

    Parameters
    ----------
    prefix : str or os.PathLike
        The checkpoint prefix (e.g. ``.../check-1405593``), or one of its file
        names (``.index``, ``.meta``, ``.data-00000-of-00001``).
    name : str
        Argument name used in error messages.

    Returns
    -------
    ModelWeights
        The 8 (kernel, bias) pairs, with ``lrn="tflearn"``.

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If it cannot be read or lacks a GaMorNet variable.
    RuntimeError
        If TensorFlow is not installed.
    """
    source = os.fspath(prefix)
    prefix = resolve_checkpoint_prefix(prefix, name)
    reader = _open_reader(prefix, name)
    shapes = reader.get_variable_to_shape_map()
    arrays = []
    for spec, scope in zip(WEIGHTED_LAYERS, tflearn_variable_prefixes()):
        pair = []
        for var in ("W", "b"):
            key = f"{scope}/{var}"
            if key not in shapes:
                raise ValueError(f"`{name}`={source!r} is not a GaMorNet TFLearn checkpoint: it has no "
                                 f"variable {key!r} (layer {spec.number}).")
            try:
                pair.append(reader.get_tensor(key))
            except Exception as exc:  # a damaged data file: TensorFlow's checksum errors
                raise ValueError(f"`{name}`={source!r}: variable {key!r} could not be read ({exc}).") from None
        arrays.append(tuple(pair))
    return ModelWeights(arrays, lrn="tflearn", preprocessing=None, source=prefix)


def validate_checkpoint(prefix, input_shape=None) -> None:
    """Check that a TFLearn checkpoint is complete and holds GaMorNet's weights (of ``input_shape``, if given).

    The 3 files must be present and not empty; every GaMorNet variable must
    be there (with the expected shapes for ``input_shape``) and read back
    (TensorFlow verifies its checksum).

    Raises
    ------
    ValueError
        If a file is missing or empty, or the checkpoint is unreadable or does not fit.
    """
    prefix = os.fspath(prefix)
    missing = [p for p in (prefix + s for s in CHECKPOINT_SUFFIXES) if not os.path.isfile(p) or not os.path.getsize(p)]
    if missing:
        raise ValueError(f"incomplete TFLearn checkpoint: missing or empty {', '.join(missing)}")
    tf = _tensorflow(prefix, "prefix")
    problems = []
    try:
        reader = tf.train.load_checkpoint(prefix)
        found = reader.get_variable_to_shape_map()
        scopes = tflearn_variable_prefixes()
        expected = weight_shapes(tuple(input_shape)) if input_shape is not None else [(None, None)] * len(scopes)
        for scope, shapes in zip(scopes, expected):
            for var, shape in zip((f"{scope}/W", f"{scope}/b"), shapes):
                if var not in found:
                    problems.append(f"{var} is missing")
                elif shape is not None and tuple(found[var]) != tuple(shape):
                    problems.append(f"{var} has shape {tuple(found[var])}, expected {tuple(shape)}")
                else:
                    reader.get_tensor(var)
    except Exception as exc:  # tf.errors.* (DataLossError, NotFoundError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{prefix} is not a readable TensorFlow checkpoint ({first})") from None
    if problems:
        fit = f" for input shape {tuple(input_shape)}" if input_shape is not None else ""
        raise ValueError(f"{prefix} is not a GaMorNet TFLearn checkpoint{fit}: {'; '.join(problems)}")
