"""Keras 3 model of GaMorNet: built from :mod:`gamornet.core.network`, weights read from any saved form.

- :func:`build_keras_model` turns :data:`gamornet.core.network.LAYERS` into a
  functional Keras model, every layer named.
- :func:`read_weights` reads the 8 (kernel, bias) pairs of a saved model,
  whatever wrote it: a Keras 3 ``.keras`` file, a Keras-2-era ``.h5`` /
  ``.hdf5`` file (full model or weights only, read by layer order as Keras 2
  did), or a TFLearn checkpoint prefix.
- :func:`load_keras_model` builds the model for an input shape and puts the
  weights in (an LRN flavour other than the file's rebuilds the network with
  it); repeated loads of an unchanged file reuse the built model.
- :func:`check_keras_archive` tells what is wrong with a ``.keras`` file that
  Keras cannot open (empty, truncated, not a zip archive, not a Keras model).
"""

from __future__ import annotations

import os
import secrets
import zipfile

import keras
import numpy as np

from gamornet.core.cache import ModelCache
from gamornet.core.network import DENSE_INIT_STDDEV, WEIGHTED_LAYERS, network_layers, widths_of
from gamornet.keras_backend.layers import LocalResponseNormalization, PixelScaling, pixel_scaling_config
from gamornet.weights import ModelWeights, read_checkpoint, read_hdf5
from gamornet.weights.paths import ZIP_MAGIC, file_magic, fingerprint, model_kind, strip_checkpoint_suffix

__all__ = [
    "build_keras_model",
    "read_weights",
    "check_keras_archive",
    "apply_weights",
    "load_keras_model",
    "model_lrn_flavor",
    "model_widths",
    "weighted_layers",
    "clear_model_cache",
    "CUSTOM_OBJECTS",
    "dropout_seed",
    "check_checkpoint_backend",
]

#: Classes to pass to ``keras.models.load_model`` for GaMorNet files.
CUSTOM_OBJECTS = {"LocalResponseNormalization": LocalResponseNormalization, "PixelScaling": PixelScaling}


def dropout_seed(seed: int | None, layer_number: int) -> int:
    """The seed of a dropout layer's random generator: 31 bits drawn from ``(seed, layer_number)``.

    Keras on PyTorch seeds its generator with ``seed + counter`` (the counter
    advancing once per call), so generators seeded ``s`` and ``s + 2`` would
    repeat each other's masks two steps apart; seeds drawn from a
    :class:`numpy.random.SeedSequence` lie far apart.  ``seed=None`` draws a
    fresh seed: every dropout layer gets a seed, so its random state lives in
    its generator on every backend (an unseeded dropout on PyTorch draws from
    the global torch generator, which a resumed run cannot restore).
    """
    if seed is None:
        return secrets.randbelow(2**31)
    return int(np.random.SeedSequence([int(seed), int(layer_number)]).generate_state(1)[0] & 0x7FFFFFFF)


def build_keras_model(input_shape, lrn: str = "keras", preprocessing: dict | None = None, seed=None,
                      widths=None) -> keras.Model:
    """Build GaMorNet as a Keras 3 functional model.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` (already resolved from an alias).
    lrn : {"keras", "tflearn"}
        Flavour of the local response normalisation; it must match the
        flavour the weights were trained with.
    preprocessing : dict, optional
        Configuration of a :class:`gamornet.keras_backend.layers.PixelScaling` layer
        put in front of the network (stored with the model).
    seed : int, optional
        Seed of the weight initialisers and of the dropout layers'
        generators (:func:`dropout_seed`; without it they are drawn at random).
    widths : sequence of 7 int, optional
        Filters of the 5 convolutions and units of the 2 hidden dense layers
        (:func:`gamornet.core.network.network_layers`); default: the published
        network.  A saved model of other widths loads back with its own.

    Returns
    -------
    keras.Model
    """
    if lrn not in ("keras", "tflearn"):
        raise ValueError(f"`lrn` must be 'keras' or 'tflearn'. Received: lrn={lrn!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    if preprocessing:
        x = PixelScaling(**preprocessing, name="preprocessing")(x)
    for i, spec in enumerate(network_layers(widths)):
        layer_seed = None if seed is None else seed + i
        if spec.kind == "conv":
            layer = keras.layers.Conv2D(
                spec.filters,
                spec.kernel,
                strides=spec.strides,
                padding=spec.padding,
                activation=spec.activation,
                kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "uniform", seed=layer_seed),
                name=spec.name,
            )
        elif spec.kind == "maxpool":
            layer = keras.layers.MaxPooling2D(spec.kernel, strides=spec.strides, padding=spec.padding, name=spec.name)
        elif spec.kind == "lrn":
            layer = LocalResponseNormalization(flavor=lrn, name=spec.name)
        elif spec.kind == "flatten":
            layer = keras.layers.Flatten(name=spec.name)
        elif spec.kind == "dense":
            layer = keras.layers.Dense(
                spec.units,
                activation=spec.activation,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=DENSE_INIT_STDDEV[lrn], seed=layer_seed),
                name=spec.name,
            )
        elif spec.kind == "dropout":
            layer = keras.layers.Dropout(spec.rate, seed=dropout_seed(seed, i), name=spec.name)
        else:  # pragma: no cover - guarded by the network description
            raise AssertionError(spec.kind)
        x = layer(x)
    # Outputs in float32 even under a mixed-precision policy.
    outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="gamornet")


def weighted_layers(model: keras.Model) -> list:
    """The 8 weighted layers of a GaMorNet Keras model, in order."""
    names = [spec.name for spec in WEIGHTED_LAYERS]
    try:
        return [model.get_layer(name) for name in names]
    except ValueError:
        layers = [layer for layer in model.layers if layer.weights]
        if len(layers) != len(names):
            raise ValueError(f"Expected a GaMorNet model with 8 weighted layers; this one has {len(layers)}.") from None
        return layers


def model_widths(model: keras.Model) -> tuple[int, ...]:
    """The widths of a built model's hidden weighted layers (see :func:`build_keras_model`)."""
    return widths_of((tuple(layer.weights[0].shape), tuple(layer.weights[1].shape)) for layer in weighted_layers(model))


def model_lrn_flavor(model: keras.Model) -> str:
    """The LRN flavour of a built model."""
    for layer in model.layers:
        if isinstance(layer, LocalResponseNormalization):
            return layer.flavor
    raise ValueError("The model has no LocalResponseNormalization layer; it is not a GaMorNet model.")


def check_keras_archive(path, name: str = "model_load_path") -> None:
    """Check that ``path`` is a readable Keras 3 ``.keras`` archive, before Keras opens it.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    name : str
        Argument name used in error messages.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        If ``path`` is a directory, an empty file, a zip archive cut short
        (an interrupted copy, download or save), another kind of file, or a
        zip archive without a Keras model in it.
    """
    path = os.fspath(path)
    received = f"Received: {name}={path!r}"
    if os.path.isdir(path):
        raise ValueError(f"`{name}` must be a model file (.keras, .h5, .hdf5) or a TFLearn checkpoint prefix, not a "
                         f"directory. {received} (a directory)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}` does not exist. {received}")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"`{name}` is an empty file (0 bytes), not a Keras model. {received}")
    if not zipfile.is_zipfile(path):
        if file_magic(path).startswith(ZIP_MAGIC):
            raise ValueError(f"`{name}` is a truncated .keras file: a zip archive without its end ({size} bytes; "
                             f"an interrupted copy, download or save?). {received}")
        raise ValueError(f"`{name}` is not a .keras file: Keras 3 models are zip archives and this file is not one "
                         f"({size} bytes). {received}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"`{name}` is a damaged .keras archive ({exc}). {received}") from None
    if "config.json" not in names:
        raise ValueError(f"`{name}` is a zip archive but not a Keras model (no config.json; it holds "
                         f"{', '.join(names[:5]) or 'nothing'}). {received}")


def _load_keras_archive(path: str) -> keras.Model:
    """``keras.saving.load_model`` of a checked archive; failures name ``model_load_path``."""
    check_keras_archive(path)
    try:
        return keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"`model_load_path` could not be read as a Keras model ({type(exc).__name__}: {exc}). "
                         f"Received: model_load_path={path!r}") from exc


def read_weights(path: str, lrn: str | None = None) -> ModelWeights:
    """Read the weights of a saved GaMorNet model.

    Parameters
    ----------
    path : str
        A ``.keras`` file, an ``.h5`` / ``.hdf5`` file written by Keras 2 or 3
        (full model or weights only), or a TFLearn checkpoint prefix (with or
        without one of its extensions).
    lrn : {"keras", "tflearn"}, optional
        Override the LRN flavour the file implies (:attr:`ModelWeights.lrn`;
        a model built from the result uses it).

    Returns
    -------
    ModelWeights

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        If ``path`` is a directory or a file that holds no GaMorNet model
        (empty, truncated, another format), naming ``model_load_path``.
    """
    path = os.fspath(path)
    kind = model_kind(path)
    if kind == "checkpoint":
        check_checkpoint_backend(path)
        weights = read_checkpoint(path)
    elif os.path.isdir(path):
        check_keras_archive(path)  # raises: a directory
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"`model_load_path` does not exist. Received: model_load_path={path!r}")
    elif kind == "keras":
        model = _load_keras_archive(path)
        try:
            arrays = [tuple(layer.get_weights()) for layer in weighted_layers(model)]
            flavor = model_lrn_flavor(model)
        except ValueError as exc:
            raise ValueError(f"`model_load_path` does not hold a GaMorNet model: {exc} "
                             f"Received: model_load_path={path!r}") from None
        weights = ModelWeights(arrays, flavor, pixel_scaling_config(model), path, model)
    else:
        weights = read_hdf5(path)  # Keras 2 / Keras 3 HDF5, whatever the extension
    if lrn is not None:
        weights.lrn = lrn
    return weights


def check_checkpoint_backend(path, name: str = "model_load_path") -> None:
    """Refuse a TFLearn checkpoint unless Keras runs on TensorFlow.

    Reading a checkpoint needs TensorFlow.  On the JAX and PyTorch backends
    GaMorNet never imports TensorFlow, even where it is installed: it would
    add its own memory pools (on a GPU it reserves most of the memory the
    other framework works in) and its own threads to the process.

    Raises
    ------
    RuntimeError
        On another Keras backend, naming ``gamornet convert``.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"`{name}` is a TFLearn checkpoint, and reading one needs TensorFlow, which GaMorNet does not import "
            f"while Keras runs on the {backend!r} backend. Convert it once with TensorFlow "
            "(KERAS_BACKEND=tensorflow): `gamornet convert PREFIX model.keras`; the .keras file loads on every "
            f"Keras backend. Received: {name}={os.fspath(path)!r}"
        )


def apply_weights(model: keras.Model, weights: ModelWeights, layers_bools=None, input_shape=None) -> None:
    """Copy weights into a built model, layer by layer.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_keras_model`.
    weights : ModelWeights
        What :func:`read_weights` returned.
    layers_bools : sequence of 8 bools, optional
        Copy only the layers marked True (default: all).
    input_shape : tuple, optional
        Input shape of ``model``, for the error message.

    Raises
    ------
    ValueError
        If a copied layer's shapes differ, e.g. dense weights of an SDSS model
        into a CANDELS-shaped model.
    """
    layers_bools = layers_bools or (True,) * len(WEIGHTED_LAYERS)
    for spec, layer, arrays, use in zip(WEIGHTED_LAYERS, weighted_layers(model), weights.arrays, layers_bools):
        if not use:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(np.shape(a)) for a in arrays]
        if expected != received:
            raise ValueError(
                f"The weights in {weights.source!r} do not fit layer {spec.number} ({spec.name}) of a model with "
                f"input_shape={input_shape}: expected {expected}, found {received}. Was the model trained for "
                "another input shape?"
            )
        layer.set_weights([np.asarray(a) for a in arrays])


#: Models kept for reuse by :func:`load_keras_model` (the two most recently used).
_MODELS = ModelCache(2)


def clear_model_cache() -> None:
    """Forget the models kept for reuse by :func:`load_keras_model`."""
    _MODELS.clear()


def load_keras_model(path: str, input_shape, lrn: str | None = None, reuse: bool = True) -> keras.Model:
    """A ready-to-predict Keras model from a saved file.

    The network is built for ``input_shape`` and the weights are read
    straight into it.  A ``.keras`` model of that input shape and of the LRN
    flavour asked for is used as it is; with another ``lrn`` than the file's,
    the network is built with the LRN asked for and the weights copied in
    (its predictions then differ: weights are trained for one flavour).
    With ``reuse`` a model loaded earlier from the same, unchanged file
    (same path, modification time and size) is returned again.
    """
    path = os.fspath(path)
    if model_kind(path) == "checkpoint":
        path = strip_checkpoint_suffix(path)
    key = (fingerprint(path), tuple(input_shape), lrn)
    cached = _MODELS.get(key) if reuse else None
    if cached is not None:
        return cached
    weights = read_weights(path, lrn=lrn)
    whole = weights.model
    if (whole is not None and model_lrn_flavor(whole) == weights.lrn
            and tuple(whole.input_shape[1:]) == tuple(input_shape)):
        model = whole
    else:
        model = build_keras_model(input_shape, lrn=weights.lrn, preprocessing=weights.preprocessing,
                                  widths=weights.widths())
        apply_weights(model, weights, input_shape=tuple(input_shape))
    if reuse:
        _MODELS.put(key, model)
    return model


