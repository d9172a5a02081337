"""The one description of the GaMorNet architecture.

Every backend (Keras 3, TFLearn) builds its model from :data:`LAYERS`; nothing
about the architecture is written anywhere else.  Layer numbers are those of
Ghosh et al. (2020), Table 1: layer 1 is the input, the weighted layers are
2, 5, 8, 9, 10 (convolutions) and 13, 15, 17 (fully connected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = [
    "INPUT_SHAPES",
    "BOOL_PRESETS",
    "PREPROCESSING_KEYS",
    "STRETCHES",
    "LayerSpec",
    "LAYERS",
    "WEIGHTED_LAYERS",
    "WEIGHTED_LAYER_NUMBERS",
    "WIDTHS",
    "network_layers",
    "widths_of",
    "CLASS_NAMES",
    "LRN_SETTINGS",
    "feature_map_shape",
    "weight_shapes",
    "count_params",
    "forward_flops",
    "tflearn_variable_prefixes",
]

#: Output columns of the final softmax, in order.
CLASS_NAMES: tuple[str, str, str] = ("disk", "indeterminate", "bulge")

#: Input-shape aliases of the two surveys of the paper (height, width, channels).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}

_T, _F = True, False
#: Named presets for ``load_layers_bools`` / ``trainable_bools``, in the order
#: of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17].
BOOL_PRESETS: dict[str, tuple[bool, ...]] = {
    "load_bools_SDSS": (_T, _T, _T, _T, _T, _F, _F, _F),
    "load_bools_CANDELS": (_T, _T, _T, _T, _T, _T, _F, _F),
    "train_bools_SDSS": (_T,) * 8,
    "train_bools_CANDELS": (_F, _F, _F, _T, _T, _T, _T, _T),
}

#: Pixel scalings a model may carry in front of the network (a ``PixelScaling`` layer):
#: ``linear`` ``(x - offset) / scale``, ``asinh`` ``asinh((x - offset) / scale)``,
#: ``per_image`` (each image standardised), ``max`` (each image divided by its peak).
STRETCHES: tuple[str, ...] = ("linear", "asinh", "per_image", "max")
#: The settings that describe a pixel scaling, as stored with a model.
PREPROCESSING_KEYS: tuple[str, ...] = ("stretch", "offset", "scale")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network.

    Attributes
    ----------
    number : int
        Layer number in the paper (0 for the un-numbered flatten step).
    kind : str
        One of ``"conv"``, ``"maxpool"``, ``"lrn"``, ``"flatten"``,
        ``"dense"``, ``"dropout"``.
    name : str
        Name of the layer in built models.
    filters, kernel, strides : int, optional
        Convolution / pooling settings (square kernels and strides).
    units : int, optional
        Width of a dense layer.
    activation : str, optional
        ``"relu"``, ``"tanh"`` or ``"softmax"``.
    rate : float, optional
        Dropout rate (fraction of units dropped).
    padding : str
        ``"same"`` for every convolution and pooling layer.
    """

    number: int
    kind: str
    name: str
    filters: int | None = None
    kernel: int | None = None
    strides: int | None = None
    units: int | None = None
    activation: str | None = None
    rate: float | None = None
    padding: str = "same"

    @property
    def weighted(self) -> bool:
        """Whether the layer holds trainable weights (kernel and bias)."""
        return self.kind in ("conv", "dense")


LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec(2, "conv", "conv_1", filters=96, kernel=11, strides=4, activation="relu"),
    LayerSpec(3, "maxpool", "pool_1", kernel=3, strides=2),
    LayerSpec(4, "lrn", "lrn_1"),
    LayerSpec(5, "conv", "conv_2", filters=256, kernel=5, strides=1, activation="relu"),
    LayerSpec(6, "maxpool", "pool_2", kernel=3, strides=2),
    LayerSpec(7, "lrn", "lrn_2"),
    LayerSpec(8, "conv", "conv_3", filters=384, kernel=3, strides=1, activation="relu"),
    LayerSpec(9, "conv", "conv_4", filters=384, kernel=3, strides=1, activation="relu"),
    LayerSpec(10, "conv", "conv_5", filters=256, kernel=3, strides=1, activation="relu"),
    LayerSpec(11, "maxpool", "pool_3", kernel=3, strides=2),
    LayerSpec(12, "lrn", "lrn_3"),
    LayerSpec(0, "flatten", "flatten"),
    LayerSpec(13, "dense", "dense_1", units=4096, activation="tanh"),
    LayerSpec(14, "dropout", "dropout_1", rate=0.5),
    LayerSpec(15, "dense", "dense_2", units=4096, activation="tanh"),
    LayerSpec(16, "dropout", "dropout_2", rate=0.5),
    LayerSpec(17, "dense", "dense_3", units=len(CLASS_NAMES), activation="softmax"),
)

#: The 8 weighted layers, in the order of ``load_layers_bools`` / ``trainable_bools``.
WEIGHTED_LAYERS: tuple[LayerSpec, ...] = tuple(s for s in LAYERS if s.weighted)
WEIGHTED_LAYER_NUMBERS: tuple[int, ...] = tuple(s.number for s in WEIGHTED_LAYERS)

#: Widths of the hidden weighted layers of the published network: the filters of the 5 convolutions,
#: then the units of the 2 hidden dense layers (the output layer has one unit per class).
WIDTHS: tuple[int, ...] = tuple(s.filters if s.kind == "conv" else s.units for s in WEIGHTED_LAYERS[:-1])


def _check_widths(widths) -> tuple[int, ...]:
    try:
        checked = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        checked = ()
    if len(checked) != len(WIDTHS) or any(w < 1 for w in checked) or checked != tuple(widths):
        raise ValueError(f"`widths` must be {len(WIDTHS)} positive integers (the filters of the 5 convolutions, then "
                         f"the units of the 2 hidden dense layers), e.g. {WIDTHS}. Received: widths={widths!r}")
    return checked


def network_layers(widths=None) -> tuple[LayerSpec, ...]:
    """:data:`LAYERS`, with other widths of the hidden weighted layers.

    Parameters
    ----------
    widths : sequence of 7 int, optional
        Filters of the 5 convolutions, then units of the 2 hidden dense layers
        (default :data:`WIDTHS`, the published network: :data:`LAYERS` itself).
        Narrower networks keep every layer, kernel, stride and activation.
    """
    if widths is None or tuple(widths) == WIDTHS:
        return LAYERS
    new = iter(_check_widths(widths))
    layers = []
    for spec in LAYERS:
        if spec.kind == "conv":
            spec = replace(spec, filters=next(new))
        elif spec.kind == "dense" and spec.number != WEIGHTED_LAYERS[-1].number:
            spec = replace(spec, units=next(new))
        layers.append(spec)
    return tuple(layers)


def widths_of(shapes) -> tuple[int, ...]:
    """The widths (see :func:`network_layers`) of weights given as ``(kernel shape, bias shape)`` pairs."""
    return tuple(int(kernel[-1]) for kernel, _ in list(shapes)[: len(WIDTHS)])


#: Settings of the two local response normalisations (Ghosh et al. 2020).
#: ``keras``: x / (k + alpha * S)^beta with S = sum over all channels of the
#: ``size`` x ``size`` spatial mean of x^2.  ``tflearn``: ``tf.nn.lrn`` with a
#: window of ``2 * depth_radius + 1`` neighbouring channels.
LRN_SETTINGS: dict[str, dict[str, float]] = {
    "keras": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "tflearn": {"depth_radius": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
}

#: Standard deviation of the truncated-normal initialiser of dense kernels.
DENSE_INIT_STDDEV: dict[str, float] = {"keras": 0.05, "tflearn": 0.02}


def _same_out(size: int, stride: int) -> int:
    return math.ceil(size / stride)


def feature_map_shape(input_shape: tuple[int, int, int], widths=None) -> list[tuple[int, ...]]:
    """Output shape of every layer of :data:`LAYERS` for one image.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    widths : sequence of 7 int, optional
        Widths of the hidden weighted layers (:func:`network_layers`).

    Returns
    -------
    list of tuple
        One shape per entry of :data:`LAYERS`, without the batch axis.
    """
    h, w, c = input_shape
    shape: tuple[int, ...] = (h, w, c)
    shapes = []
    for spec in network_layers(widths):
        if spec.kind in ("conv", "maxpool"):
            h, w = _same_out(h, spec.strides), _same_out(w, spec.strides)
            c = spec.filters if spec.kind == "conv" else c
            shape = (h, w, c)
        elif spec.kind == "flatten":
            shape = (h * w * c,)
        elif spec.kind == "dense":
            shape = (spec.units,)
        shapes.append(shape)
    return shapes


def weight_shapes(input_shape: tuple[int, int, int], widths=None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Kernel and bias shapes of the 8 weighted layers (of widths ``widths``, see :func:`network_layers`).

    Kernels are ``(kh, kw, in, out)`` for convolutions and ``(in, out)`` for
    dense layers: the layout shared by Keras and TFLearn.
    """
    shapes = feature_map_shape(input_shape, widths)
    result = []
    previous: tuple[int, ...] = tuple(input_shape)
    for spec, out in zip(network_layers(widths), shapes):
        if spec.kind == "conv":
            result.append(((spec.kernel, spec.kernel, previous[-1], spec.filters), (spec.filters,)))
        elif spec.kind == "dense":
            result.append(((previous[0], spec.units), (spec.units,)))
        previous = out
    return result


def count_params(input_shape: tuple[int, int, int], widths=None) -> int:
    """Number of trainable parameters of the network for ``input_shape`` (and ``widths``)."""
    return sum(math.prod(k) + math.prod(b) for k, b in weight_shapes(input_shape, widths))


def forward_flops(input_shape: tuple[int, int, int], widths=None) -> float:
    """Floating-point operations (multiply and add counted apart) of one forward pass."""
    layers = network_layers(widths)
    shapes = feature_map_shape(input_shape, widths)
    total = 0.0
    for spec, out, (kernel, _) in zip(
        [s for s in layers if s.weighted],
        [o for s, o in zip(layers, shapes) if s.weighted],
        weight_shapes(input_shape, widths),
    ):
        macs = math.prod(out[:-1]) * math.prod(kernel) if spec.kind == "conv" else math.prod(kernel)
        total += 2.0 * macs
    return total


def tflearn_variable_prefixes() -> list[str]:
    """TFLearn's default scope names of the weighted layers, in order.

    ``Conv2D``, ``Conv2D_1`` ... ``Conv2D_4``, ``FullyConnected`` ...
    ``FullyConnected_2``; each holds variables ``W`` and ``b``.
    """
    names = []
    counters: dict[str, int] = {}
    for spec in WEIGHTED_LAYERS:
        base = "Conv2D" if spec.kind == "conv" else "FullyConnected"
        n = counters.get(base, 0)
        names.append(base if n == 0 else f"{base}_{n}")
        counters[base] = n + 1
    return names
