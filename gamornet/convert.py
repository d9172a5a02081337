"""Moving GaMorNet weights between the Keras and TFLearn forms.

- :func:`read_tflearn_checkpoint` reads the 8 (kernel, bias) pairs of a TFLearn
  (TF1) checkpoint with plain ``tf.train.load_checkpoint``: no TFLearn needed,
  optimiser slots and counters are skipped.
- :func:`write_tflearn_checkpoint` writes a TF1 checkpoint (``.index``,
  ``.meta``, ``.data-00000-of-00001``) by building the real TFLearn network,
  loading the weights into it and saving it, so both
  :func:`gamornet.tflearn_module.gamornet_predict_tflearn` and plain TFLearn
  code (``DNN.load``) load it.
- :func:`convert` does either direction by the destination's name, and
  ``gamornet convert SRC DST`` is its command line.

Kernels have the same layout in both forms ((kh, kw, in, out) and (in, out)),
so the weights are copied unchanged.  The two forms normalise differently,
though (Ghosh et al. 2020; see the FAQ on LRN): a model keeps the LRN of the weights' origin when
read back by :mod:`gamornet.keras_model`, except that a TFLearn checkpoint
always means the TFLearn (depth) LRN; converting Keras-LRN weights to TFLearn
therefore warns that predictions will change.

Importing this module is cheap: TensorFlow, Keras and TFLearn are imported
only when a function needs them.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import warnings

from gamornet import utils
from gamornet.network import WEIGHTED_LAYERS, tflearn_variable_prefixes, weight_shapes
from gamornet.registry import CHECKPOINT_SUFFIXES

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "KERAS_SUFFIXES",
    "strip_checkpoint_suffix",
    "resolve_checkpoint_prefix",
    "checkpoint_variable_shapes",
    "read_tflearn_checkpoint",
    "write_tflearn_checkpoint",
    "infer_input_shape",
    "convert",
    "register_cli",
]

#: Destination endings that mean a Keras file; anything else is a TFLearn checkpoint prefix.
KERAS_SUFFIXES: tuple[str, ...] = (".keras", ".h5", ".hdf5")


def strip_checkpoint_suffix(path: str) -> str:
    """A checkpoint prefix without ``.index`` / ``.meta`` / ``.data-00000-of-00001``."""
    path = os.fspath(path)
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def resolve_checkpoint_prefix(path, name: str = "model_load_path") -> str:
    """The prefix of an existing TF1 checkpoint, given with or without one of its extensions.

    Raises
    ------
    FileNotFoundError
        If ``<prefix>.index`` does not exist.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`{name}` must be a TFLearn checkpoint prefix. Received: {name}={path!r}")
    prefix = strip_checkpoint_suffix(os.fspath(path))
    if not os.path.isfile(prefix + ".index"):
        hint = " (a directory: give the checkpoint prefix inside it, e.g. 'dir/check-1000')" if os.path.isdir(
            prefix) else ""
        raise FileNotFoundError(
            f"`{name}` is not an existing TFLearn checkpoint: {prefix + '.index'!r} not found{hint}. "
            f"Received: {name}={os.fspath(path)!r}"
        )
    return prefix


def _open_reader(prefix: str, name: str = "model_load_path"):
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", str(exc)).splitlines()[0]
        raise ValueError(f"`{name}`={prefix!r} could not be read as a TFLearn checkpoint: {message}") from None


def checkpoint_variable_shapes(prefix: str, name: str = "model_load_path") -> dict[str, list[int]]:
    """Names and shapes of every variable in a checkpoint (reads only its index)."""
    return dict(_open_reader(resolve_checkpoint_prefix(prefix, name), name).get_variable_to_shape_map())


def read_tflearn_checkpoint(prefix):
    """Read the weights of a TFLearn GaMorNet checkpoint.

    Parameters
    ----------
    prefix : str or os.PathLike
        The checkpoint prefix (e.g. ``.../check-1405593``), or one of its file
        names (``.index``, ``.meta``, ``.data-00000-of-00001``).

    Returns
    -------
    gamornet.keras_model.ModelWeights
        The 8 (kernel, bias) pairs of ``Conv2D/W`` ... ``FullyConnected_2/b``,
        with ``lrn="tflearn"``; optimiser slots and counters are skipped.

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If it cannot be read or lacks a GaMorNet variable.
    """
    from gamornet.keras_model import ModelWeights

    source = os.fspath(prefix)
    prefix = resolve_checkpoint_prefix(prefix)
    reader = _open_reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    arrays = []
    for spec, scope in zip(WEIGHTED_LAYERS, tflearn_variable_prefixes()):
        pair = []
        for var in ("W", "b"):
            key = f"{scope}/{var}"
            if key not in shapes:
                raise ValueError(f"`model_load_path`={source!r} is not a GaMorNet TFLearn checkpoint: it has no "
                                 f"variable {key!r} (layer {spec.number}).")
            try:
                pair.append(reader.get_tensor(key))
            except Exception as exc:  # corrupted data file
                raise ValueError(f"`model_load_path`={source!r}: variable {key!r} could not be read ({exc}).") from None
        arrays.append(tuple(pair))
    return ModelWeights(arrays, lrn="tflearn", preprocessing=None, source=prefix)


def infer_input_shape(arrays) -> tuple[int, int, int]:
    """The preset input shape (SDSS or CANDELS) whose layer shapes the weights fit.

    Only the first dense layer depends on the image size, and several sizes
    give it the same shape; outside the two presets pass ``input_shape``.

    Raises
    ------
    ValueError
        If neither preset fits.
    """
    received = [tuple(tuple(int(d) for d in getattr(a, "shape", ())) for a in pair) for pair in arrays]
    channels = received[0][0][2] if received and len(received[0][0]) == 4 else None
    for h, w, _ in utils.INPUT_SHAPES.values():
        if channels and [tuple(p) for p in weight_shapes((h, w, channels))] == received:
            return (h, w, channels)
    raise ValueError(
        "`input_shape` is needed: the weights fit neither the SDSS (167, 167, C) nor the CANDELS (83, 83, C) "
        f"network (first dense kernel {received[5][0] if len(received) > 5 else '?'}). Received: input_shape=None"
    )


def _weights_of(obj, input_shape):
    """(arrays, lrn, preprocessing, input_shape, source) of a Keras model, ModelWeights or 8 pairs."""
    from gamornet.keras_model import ModelWeights

    if isinstance(obj, ModelWeights):
        arrays, lrn, pre, source = obj.arrays, obj.lrn, obj.preprocessing, obj.source
        if input_shape is None and obj.model is not None:
            input_shape = tuple(obj.model.input_shape[1:])
    elif hasattr(obj, "layers") and hasattr(obj, "input_shape"):
        from gamornet.keras_model import model_lrn_flavor, weighted_layers
        from gamornet.preprocessing import PixelScaling

        arrays = [tuple(layer.get_weights()) for layer in weighted_layers(obj)]
        lrn = model_lrn_flavor(obj)
        pre = next((layer.get_config() for layer in obj.layers if isinstance(layer, PixelScaling)), None)
        source = getattr(obj, "name", "keras model")
        if input_shape is None:
            input_shape = tuple(obj.input_shape[1:])
    elif isinstance(obj, (list, tuple)) and len(obj) == len(WEIGHTED_LAYERS):
        arrays, lrn, pre, source = list(obj), "tflearn", None, "arrays"
    else:
        raise TypeError("`weights_or_keras_model` must be a GaMorNet keras.Model, a gamornet.keras_model.ModelWeights "
                        f"or 8 (kernel, bias) pairs. Received: {type(obj).__name__}")
    if len(arrays) != len(WEIGHTED_LAYERS) or any(len(pair) != 2 for pair in arrays):
        raise ValueError(f"Expected 8 (kernel, bias) pairs of GaMorNet weights; {source!r} has {len(arrays)}.")
    shape = utils.check_input_shape(input_shape) if input_shape is not None else infer_input_shape(arrays)
    return arrays, lrn, pre, shape, source


def write_tflearn_checkpoint(weights_or_keras_model, prefix, input_shape=None) -> str:
    """Write GaMorNet weights as a TFLearn (TF1) checkpoint.

    The real TFLearn network (with its training op, as TFLearn training
    builds it) is built from :data:`gamornet.network.LAYERS`, the weights are
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
    from gamornet.tflearn_module import build_tflearn_network, save_tflearn_checkpoint

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
    from gamornet.keras_model import read_weights

    try:
        return read_weights(path)
    except (ValueError, OSError):
        from gamornet.download import repair_model

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
    shape = utils.check_input_shape(input_shape) if input_shape is not None else None
    dst = os.fspath(dst)
    to_keras = _is_keras_path(dst)
    published = src if utils.is_published_model(src) else None
    if published is not None:
        src = utils.resolve_model_path(published, "tflearn" if to_keras else "keras", progress=progress)
    if not isinstance(src, (str, os.PathLike)) or not os.fspath(src):
        raise ValueError(f"`src` must be a model file, checkpoint prefix or published name. Received: src={src!r}")
    weights = _read_source(os.fspath(src), published, "tflearn" if to_keras else "keras", progress)
    if not to_keras:
        return write_tflearn_checkpoint(weights, dst, shape)
    from gamornet.keras_model import apply_weights, build_keras_model

    arrays, lrn, pre, shape, _ = _weights_of(weights, shape)
    model = build_keras_model(shape, lrn=lrn, preprocessing=pre)
    apply_weights(model, weights, input_shape=shape)
    utils.make_output_dir(os.path.dirname(os.path.abspath(dst)))
    suffix = os.path.splitext(dst)[1]
    with utils.atomic_path(dst, suffix=suffix) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save")
            try:
                model.save(tmp)
            except RuntimeError as exc:  # HDF5 reports failed writes (a full disk...) so, the errno in its text
                found = re.search(r"errno = (\d+)", str(exc))
                code = int(found.group(1)) if found else errno.EIO
                raise OSError(code, os.strerror(code), tmp) from exc
    return dst


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parse_shape(text: str):
    if text in utils.INPUT_SHAPES:
        return text
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected SDSS, CANDELS or H,W,C (e.g. 64,64,1); got {text!r}")
    return values


def register_cli(subparsers) -> None:
    """Add the ``convert`` subcommand: ``gamornet convert SRC DST [--input-shape SHAPE]``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a model between the Keras and TFLearn forms",
        description="Convert a GaMorNet model. DST ending in .keras, .h5 or .hdf5 is written as a Keras 3 model; "
        "anything else as a TFLearn checkpoint prefix (PREFIX.index, .meta, .data-00000-of-00001). SRC is a Keras "
        "file, a TFLearn checkpoint prefix or a published model name (SDSS_sim, ...; the flavour opposite to DST).",
    )
    parser.add_argument("src", metavar="SRC", help="Keras file, TFLearn checkpoint prefix or published model name")
    parser.add_argument("dst", metavar="DST", help="Keras file (.keras/.h5/.hdf5) or TFLearn checkpoint prefix")
    parser.add_argument("--input-shape", type=_parse_shape, default=None, metavar="SHAPE",
                        help="SDSS, CANDELS or H,W,C (default: the source model's, else the preset it fits)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    written = convert(args.src, args.dst, args.input_shape, progress=not args.quiet)
    if not args.quiet:
        print(f"Wrote {written}")
    return 0
