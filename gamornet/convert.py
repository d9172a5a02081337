"""Moving GaMorNet weights between the Keras and TFLearn forms: the one module that sees both backends.

- :func:`write_tflearn_checkpoint` writes a TF1 checkpoint (``.index``,
  ``.meta``, ``.data-00000-of-00001``) by building the real TFLearn network,
  loading the weights into it and saving it, so both
  :func:`gamornet.tflearn_module.gamornet_predict_tflearn` and plain TFLearn
  code (``DNN.load``) load it.
- :func:`convert` does either direction by the destination's name (``gamornet
  convert SRC DST`` on the command line); checkpoints are read by
  :func:`gamornet.weights.read_checkpoint` (no TFLearn needed).

Kernels have the same layout in both forms ((kh, kw, in, out) and (in, out)),
so the weights are copied unchanged.  The two forms normalise differently,
though (Ghosh et al. 2020; see the FAQ on LRN): a model keeps the LRN of the
weights' origin when read back by :mod:`gamornet.keras_backend.model`, except
that a TFLearn checkpoint always means the TFLearn (depth) LRN; converting
Keras-LRN weights to TFLearn therefore warns that predictions will change.

Importing this module is cheap: TensorFlow, Keras and TFLearn are imported
only when a function needs them.
"""

from __future__ import annotations

import errno
import os
import re
import warnings

import numpy as np

from gamornet.core.files import atomic_path, make_output_dir
from gamornet.core.network import WEIGHTED_LAYERS, widths_of
from gamornet.core.validation import check_input_shape
from gamornet.published.models import is_published_model, repair_model, resolve_model_path
from gamornet.weights import ModelWeights, infer_input_shape
from gamornet.weights.paths import KERAS_SUFFIXES

__all__ = ["write_tflearn_checkpoint", "convert"]


def _weights_of(obj, input_shape):
    """(arrays, lrn, preprocessing, input_shape, source) of a Keras model, ModelWeights or 8 pairs."""
    if isinstance(obj, ModelWeights):
        arrays, lrn, pre, source = obj.arrays, obj.lrn, obj.preprocessing, obj.source
        if input_shape is None and obj.model is not None:
            input_shape = tuple(obj.model.input_shape[1:])
    elif hasattr(obj, "layers") and hasattr(obj, "input_shape"):
        from gamornet.keras_backend.layers import pixel_scaling_config
        from gamornet.keras_backend.model import model_lrn_flavor, weighted_layers

        arrays = [tuple(layer.get_weights()) for layer in weighted_layers(obj)]
        lrn = model_lrn_flavor(obj)
        pre = pixel_scaling_config(obj)
        source = getattr(obj, "name", "keras model")
        if input_shape is None:
            input_shape = tuple(obj.input_shape[1:])
    elif isinstance(obj, (list, tuple)) and len(obj) == len(WEIGHTED_LAYERS):
        arrays, lrn, pre, source = list(obj), "tflearn", None, "arrays"
    else:
        raise TypeError("`weights_or_keras_model` must be a GaMorNet keras.Model, a gamornet.weights.ModelWeights "
                        f"or 8 (kernel, bias) pairs. Received: {type(obj).__name__}")
    if len(arrays) != len(WEIGHTED_LAYERS) or any(len(pair) != 2 for pair in arrays):
        raise ValueError(f"Expected 8 (kernel, bias) pairs of GaMorNet weights; {source!r} has {len(arrays)}.")
    if input_shape is not None:
        shape = check_input_shape(input_shape)
    else:
        shape = infer_input_shape(obj if isinstance(obj, ModelWeights) else ModelWeights(list(arrays), source=source))
    return arrays, lrn, pre, shape, source


def write_tflearn_checkpoint(weights_or_keras_model, prefix, input_shape=None) -> str:
    """Write GaMorNet weights as a TFLearn (TF1) checkpoint.

    The real TFLearn network (with its training op, as TFLearn training
    builds it) is built from :data:`gamornet.core.network.LAYERS`, the weights are
    loaded into it and every variable is saved under TFLearn's default
    names; momentum slots and step counters are zero.  The three files
    ``<prefix>.index``, ``<prefix>.meta`` and ``<prefix>.data-00000-of-00001``
    are written under temporary names and renamed into place.

    Parameters
    ----------
    weights_or_keras_model : keras.Model, ModelWeights or list of 8 (kernel, bias)
        The weights.
    prefix : str or os.PathLike
        Checkpoint prefix to write (an extension given is removed).
    input_shape : str or tuple, optional
        Input shape of the network; by default the Keras model's, else the
        preset (SDSS or CANDELS) the weights fit.

    Returns
    -------
    str
        The absolute checkpoint prefix written.

    Warns
    -----
    UserWarning
        For weights trained with the Keras LRN: the TFLearn network uses the
        depth LRN, so its predictions differ (about 0.08 in probability).
    """
    from gamornet.tflearn_backend.network import build_tflearn_network, save_tflearn_checkpoint

    arrays, lrn, pre, shape, source = _weights_of(weights_or_keras_model, input_shape)
    if pre:
        raise ValueError(f"{source!r} scales its pixels ({pre}); a TFLearn checkpoint cannot hold that step. "
                         "Convert a model without preprocessing.")
    if lrn != "tflearn":
        warnings.warn(
            f"The weights of {source!r} were trained with the Keras LRN; the TFLearn network normalises with the "
            "depth LRN, so its predictions will differ from the Keras model's. The weights are copied unchanged.",
            UserWarning,
            stacklevel=2,
        )
    training = dict(lr=0.0001, momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy")
    network = build_tflearn_network(shape, training=training)
    try:
        network.set_weights(arrays, source=source)
        return save_tflearn_checkpoint(network, os.fspath(prefix))
    finally:
        network.close()


def _is_keras_path(path: str) -> bool:
    return os.fspath(path).lower().endswith(KERAS_SUFFIXES)


def _read_source(path: str, published: str | None, flavor: str, progress: bool):
    """The weights of ``path``; a published model whose cached copy fails to load is checked and fetched again."""
    from gamornet.keras_backend.model import read_weights

    try:
        return read_weights(path)
    except (ValueError, OSError):
        if published is None or not repair_model(published, flavor, progress=progress):
            raise  # not a published model, or its cached copy is sound: the failure is not the file's
    return read_weights(path)


def convert(src, dst, input_shape=None, *, progress: bool = True) -> str:
    """Convert a GaMorNet model between the Keras and TFLearn forms (or re-save it in the same form).

    Parameters
    ----------
    src : str or os.PathLike
        A Keras file (``.keras``, ``.h5``, ``.hdf5``, Keras 2 or 3), a TFLearn
        checkpoint prefix (an extension is accepted), or a published model
        name: its TFLearn flavour when ``dst`` is a Keras file, else its Keras
        flavour.
    dst : str or os.PathLike
        Ending in ``.keras``, ``.h5`` or ``.hdf5``: a Keras 3 model file
        (with the LRN of the weights' origin); otherwise a TFLearn checkpoint
        prefix (three files).  Written atomically.
    input_shape : str or tuple, optional
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``; by default
        the source model's own, else the preset the weights fit.
    progress : bool
        Show a progress bar when a published model is downloaded.

    Returns
    -------
    str
        ``dst`` (for TFLearn, the absolute prefix).
    """
    if not isinstance(dst, (str, os.PathLike)) or not os.fspath(dst):
        raise ValueError(f"`dst` must be a file path or checkpoint prefix. Received: dst={dst!r}")
    shape = check_input_shape(input_shape) if input_shape is not None else None
    dst = os.fspath(dst)
    to_keras = _is_keras_path(dst)
    published = src if is_published_model(src) else None
    if published is not None:
        src = resolve_model_path(published, "tflearn" if to_keras else "keras", progress=progress)
    if not isinstance(src, (str, os.PathLike)) or not os.fspath(src):
        raise ValueError(f"`src` must be a model file, checkpoint prefix or published name. Received: src={src!r}")
    weights = _read_source(os.fspath(src), published, "tflearn" if to_keras else "keras", progress)
    if not to_keras:
        return write_tflearn_checkpoint(weights, dst, shape)
    from gamornet.keras_backend.model import apply_weights, build_keras_model

    arrays, lrn, pre, shape, _ = _weights_of(weights, shape)
    widths = widths_of((np.shape(kernel), np.shape(bias)) for kernel, bias in arrays)
    model = build_keras_model(shape, lrn=lrn, preprocessing=pre, widths=widths)
    apply_weights(model, weights, input_shape=shape)
    make_output_dir(os.path.dirname(os.path.abspath(dst)))
    suffix = os.path.splitext(dst)[1]
    with atomic_path(dst, suffix=suffix) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save")
            try:
                model.save(tmp)
            except RuntimeError as exc:  # HDF5 reports failed writes (a full disk...) so, the errno in its text
                found = re.search(r"errno = (\d+)", str(exc))
                code = int(found.group(1)) if found else errno.EIO
                raise OSError(code, os.strerror(code), tmp) from exc
    return dst
