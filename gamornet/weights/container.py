"""The weights of a saved GaMorNet model, whatever wrote them: :class:`ModelWeights`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gamornet.core.network import INPUT_SHAPES, WEIGHTED_LAYERS, weight_shapes, widths_of

__all__ = ["ModelWeights", "infer_input_shape"]


@dataclass
class ModelWeights:
    """Weights of a saved GaMorNet model, independent of the input shape it was built for.

    Attributes
    ----------
    arrays : list of (kernel, bias)
        The 8 weighted layers in order [2, 5, 8, 9, 10, 13, 15, 17];
        kernels ``(kh, kw, in, out)`` and ``(in, out)``, the layout Keras
        and TFLearn share.
    lrn : str
        LRN flavour the weights were trained with (``"keras"`` or ``"tflearn"``).
    preprocessing : dict or None
        Pixel scaling stored with the model (see
        :data:`gamornet.core.network.PREPROCESSING_KEYS`).
    source : str
        Where the weights came from.
    model : object or None
        The backend's model itself, when the file held a whole model that a
        backend loaded (a Keras 3 ``.keras`` file).
    """

    arrays: list
    lrn: str = "keras"
    preprocessing: dict | None = None
    source: str = ""
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.arrays) != len(WEIGHTED_LAYERS) or any(len(pair) != 2 for pair in self.arrays):
            raise ValueError(
                f"`model_load_path`={self.source!r} does not hold GaMorNet weights: expected 8 layers with a kernel "
                f"and a bias, found {len(self.arrays)} weighted layers."
            )

    def shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """``(kernel shape, bias shape)`` of the 8 layers."""
        return [tuple(tuple(int(d) for d in np.shape(a)) for a in pair) for pair in self.arrays]

    def widths(self) -> tuple[int, ...]:
        """Widths of the hidden weighted layers (see :func:`gamornet.core.network.network_layers`)."""
        return widths_of(self.shapes())

    def mismatches(self, input_shape) -> list[str]:
        """What does not fit a network of ``input_shape`` and of the weights' widths (empty when all 8 layers fit)."""
        problems = []
        for spec, expected, found in zip(WEIGHTED_LAYERS, weight_shapes(tuple(input_shape), self.widths()),
                                         self.shapes()):
            if tuple(expected) != tuple(found):
                problems.append(f"layer {spec.number} ({spec.name}): expected {list(expected)}, found {list(found)}")
        return problems


def infer_input_shape(weights: ModelWeights) -> tuple[int, int, int]:
    """The preset input shape (SDSS or CANDELS) whose layer shapes the weights fit.

    Only the first dense layer depends on the image size, and several sizes
    give it the same shape; outside the two presets pass ``input_shape``.

    Raises
    ------
    ValueError
        If neither preset fits.
    """
    received = weights.shapes()
    channels = received[0][0][2] if len(received[0][0]) == 4 else None
    for h, w, _ in INPUT_SHAPES.values():
        if channels and not weights.mismatches((h, w, channels)):
            return (h, w, channels)
    raise ValueError(
        "`input_shape` is needed: the weights fit neither the SDSS (167, 167, C) nor the CANDELS (83, 83, C) "
        f"network (first dense kernel {received[5][0]}). Received: input_shape=None"
    )
