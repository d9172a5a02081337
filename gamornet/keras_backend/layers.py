"""GaMorNet's own Keras layers, written with backend-neutral ``keras.ops``.

:class:`LocalResponseNormalization` (both flavours) and :class:`PixelScaling`
(pixel scaling stored inside a model, so saved models take raw images).
Both are registered under the names old files carry, so such files load.

Local response normalisation
----------------------------

GaMorNet's two flavours normalise differently:

``flavor="keras"``
    ``x / (k + alpha * S)^beta`` where ``S`` is, at each pixel, the mean of
    ``x^2`` over a ``size`` x ``size`` spatial window (stride 1, same padding,
    padded cells not counted) summed over *all* channels.  The published
    Keras models were trained with it.
``flavor="tflearn"``
    ``tf.nn.local_response_normalization``: ``x / (k + alpha * D)^beta`` where
    ``D`` is the sum of ``x^2`` over ``2 * depth_radius + 1`` neighbouring
    channels.  The published TFLearn models were trained with it.

Pixel scaling
-------------
GaMorNet 0.4.3 applied no preprocessing and the published models expect
none.  Models trained by this library may carry a :class:`PixelScaling`
layer in front of the network; it travels with the saved file and is
applied whenever the model predicts.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from gamornet.core.network import LRN_SETTINGS, PREPROCESSING_KEYS, STRETCHES

__all__ = ["LocalResponseNormalization", "LRN_FLAVORS", "PixelScaling", "STRETCHES", "pixel_scaling_config"]

LRN_FLAVORS: tuple[str, ...] = tuple(LRN_SETTINGS)


@keras.saving.register_keras_serializable(package="gamornet", name="LocalResponseNormalization")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation of either GaMorNet flavour.

    Parameters
    ----------
    flavor : {"keras", "tflearn"}
        Which normalisation (see module docstring).  Old files carry no
        flavour and get ``"keras"``, the flavour of the published Keras models.
    alpha, beta, k : float, optional
        Scale, exponent and bias; default to :data:`gamornet.core.network.LRN_SETTINGS`.
    size : int, optional
        Spatial window of the Keras flavour.
    depth_radius : int, optional
        Half-width of the channel window of the TFLearn flavour.
    **kwargs
        Passed to :class:`keras.layers.Layer`.  Keys that Keras 2 wrote and
        Keras 3 no longer knows are dropped.
    """

    def __init__(self, flavor="keras", alpha=None, beta=None, k=None, size=None, depth_radius=None, **kwargs):
        for old_key in ("batch_input_shape", "input_shape", "n"):
            kwargs.pop(old_key, None)
        super().__init__(**kwargs)
        if flavor not in LRN_SETTINGS:
            raise ValueError(f"`flavor` must be one of {list(LRN_SETTINGS)}. Received: flavor={flavor!r}")
        defaults = LRN_SETTINGS[flavor]
        self.flavor = flavor
        self.alpha = float(defaults["alpha"] if alpha is None else alpha)
        self.beta = float(defaults["beta"] if beta is None else beta)
        self.k = float(defaults["k"] if k is None else k)
        self.size = int(defaults.get("size", 5) if size is None else size)
        self.depth_radius = int(defaults.get("depth_radius", 5) if depth_radius is None else depth_radius)
        self._band = None

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if self.flavor == "tflearn":
            # Channel window as a banded 0/1 matrix: a matmul sums the window exactly.
            idx = np.arange(channels)
            band = (np.abs(idx[:, None] - idx[None, :]) <= self.depth_radius).astype("float32")
            self._band = ops.convert_to_tensor(band)
        super().build(input_shape)

    def call(self, inputs):
        squared = ops.square(inputs)
        if self.flavor == "keras":
            window = (self.size, self.size)
            mean = ops.average_pool(squared, window, strides=(1, 1), padding="same", data_format="channels_last")
            scale = ops.sum(mean, axis=-1, keepdims=True)
        else:
            scale = ops.matmul(squared, ops.cast(self._band, squared.dtype))
        return inputs / ops.power(self.k + self.alpha * scale, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            flavor=self.flavor,
            alpha=self.alpha,
            beta=self.beta,
            k=self.k,
            size=self.size,
            depth_radius=self.depth_radius,
        )
        return config


@keras.saving.register_keras_serializable(package="gamornet", name="PixelScaling")
class PixelScaling(keras.layers.Layer):
    """Scale raw pixel values before the network.

    Parameters
    ----------
    stretch : {"linear", "asinh", "per_image"}
        ``linear``: ``(x - offset) / scale``; ``asinh``:
        ``asinh((x - offset) / scale)``, which keeps faint outskirts and bright
        centres in range; ``per_image``: each image minus its mean, divided by
        its standard deviation; ``max``: each image divided by its largest
        absolute pixel value, so every galaxy spans [-1, 1] whatever its
        brightness (``offset`` and ``scale`` unused by the last two).
    offset, scale : float
        Constants of the ``linear`` and ``asinh`` stretches.
    """

    CONFIG_KEYS = PREPROCESSING_KEYS

    def __init__(self, stretch: str = "linear", offset: float = 0.0, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if stretch not in STRETCHES:
            raise ValueError(f"`stretch` must be one of {list(STRETCHES)}. Received: stretch={stretch!r}")
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0. Received: scale={scale!r}")
        self.stretch, self.offset, self.scale = stretch, float(offset), float(scale)

    def call(self, inputs):
        if self.stretch == "per_image":
            mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
            std = ops.std(inputs, axis=(1, 2, 3), keepdims=True)
            return (inputs - mean) / (std + 1e-6)
        if self.stretch == "max":
            peak = ops.max(ops.abs(inputs), axis=(1, 2, 3), keepdims=True)
            return inputs / (peak + 1e-12)
        scaled = (inputs - self.offset) / self.scale
        return ops.arcsinh(scaled) if self.stretch == "asinh" else scaled

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(stretch=self.stretch, offset=self.offset, scale=self.scale)
        return config


def pixel_scaling_config(model) -> dict | None:
    """The pixel scaling (``stretch``, ``offset``, ``scale``) a Keras model carries, or None."""
    for layer in model.layers:
        if isinstance(layer, PixelScaling):
            return {k: v for k, v in layer.get_config().items() if k in PREPROCESSING_KEYS}
    return None
