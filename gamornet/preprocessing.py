"""Pixel scaling stored inside a model, so saved models take raw images.

GaMorNet 0.4.3 applied no preprocessing and the published models expect
none.  Models trained by this library may carry a :class:`PixelScaling` layer
in front of the network; it travels with the saved file and is applied
automatically whenever the model predicts.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["PixelScaling", "STRETCHES"]

STRETCHES: tuple[str, ...] = ("linear", "asinh", "per_image", "max")


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

    CONFIG_KEYS = ("stretch", "offset", "scale")

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
