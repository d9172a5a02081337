"""The one reader of Keras HDF5 model files (``.h5`` / ``.hdf5``), with h5py alone.

Keras 2 saved a whole model (``model_weights`` group plus ``model_config``)
or weights only, as Keras 3 does with ``save("x.h5")``: one group per layer,
listed in order by the ``layer_names`` attribute, each listing its datasets
by ``weight_names``.  GaMorNet's weighted layers are the layers that have
weights, in order, as Keras 2's ``load_weights`` matched them.  Old files
store names as byte strings; both forms are read.  No deep-learning
framework is needed.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gamornet.core.network import PREPROCESSING_KEYS
from gamornet.weights.container import ModelWeights

__all__ = ["read_hdf5", "validate_hdf5"]


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else value


def _settings(config: str) -> tuple[str, dict | None]:
    """LRN flavour and pixel scaling recorded in a model's JSON configuration."""
    lrn, preprocessing = "keras", None
    layers = json.loads(config).get("config", {}).get("layers", []) if config else []
    for layer in layers:
        settings = layer.get("config", {})
        if layer.get("class_name") == "LocalResponseNormalization":
            lrn = settings.get("flavor", lrn)
        if layer.get("class_name") == "PixelScaling":
            preprocessing = {k: v for k, v in settings.items() if k in PREPROCESSING_KEYS}
    return lrn, preprocessing


def read_hdf5(path, name: str = "model_load_path") -> ModelWeights:
    """The weights of a Keras HDF5 model file (full model or weights only).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    name : str
        Argument name used in error messages.

    Raises
    ------
    ValueError
        If the file is not a readable HDF5 file, holds no Keras weights, or
        not the 8 weighted layers of GaMorNet.
    """
    import h5py

    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise ValueError(f"`{name}`={path!r} is an HDF5 file without Keras weights (no 'layer_names').")
            arrays = []
            for layer_name in (_decode(n) for n in group.attrs["layer_names"]):
                weight_names = [_decode(n) for n in group[layer_name].attrs.get("weight_names", [])]
                if weight_names:
                    arrays.append(tuple(np.asarray(group[layer_name][w]) for w in weight_names))
            config = _decode(f.attrs.get("model_config", "")) or ""
    except (OSError, KeyError, RuntimeError) as exc:  # h5py's errors on damaged or foreign files
        raise ValueError(f"`{name}`={path!r} is neither a Keras model file (.keras, .h5, .hdf5) nor a TFLearn "
                         f"checkpoint prefix ({exc}).") from None
    lrn, preprocessing = _settings(config)
    return ModelWeights(arrays, lrn, preprocessing, path)


def validate_hdf5(path, input_shape=None) -> None:
    """Check a Keras HDF5 model file: complete and, for ``input_shape``, holding GaMorNet's weights of that shape.

    Without ``input_shape`` the check is light (the check of a cached copy
    before its first use in a process): the file opens as HDF5 (which refuses
    a truncated file) and holds datasets.  With it, every weight is read by
    :func:`read_hdf5` and its shape compared (the check of a download).

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    import h5py

    path = os.fspath(path)
    found = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, obj: found.append(1) if isinstance(obj, h5py.Dataset) else None)
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on damaged files
        raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from None
    if not found:
        raise ValueError(f"{path} holds no weights (an HDF5 file without datasets)")
    if input_shape is None:
        return
    try:
        weights = read_hdf5(path, "path")
    except ValueError as exc:
        raise ValueError(f"{path} is not a GaMorNet Keras model: {exc}") from None
    problems = weights.mismatches(input_shape)
    if problems:
        raise ValueError(f"{path} is not a GaMorNet Keras model for input shape {tuple(input_shape)}: "
                         f"{'; '.join(problems)}")
