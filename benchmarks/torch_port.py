"""GaMorNet in PyTorch, built from the same description of the network, for a side-by-side comparison."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.report import rates, timed
from gamornet.core.network import LAYERS, LRN_SETTINGS, WEIGHTED_LAYERS, feature_map_shape

# --------------------------------------------------------------------------- PyTorch


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_torch_model(input_shape: tuple[int, int, int]):
    """GaMorNet in PyTorch, built from :data:`gamornet.core.network.LAYERS` (Keras-flavour LRN).

    The model takes NCHW float32 batches and returns logits (apply a softmax
    for probabilities).  Padding follows TensorFlow's ``same`` rule for the
    input shape (asymmetric where TensorFlow pads more at the end); the LRN
    is the Keras flavour: ``x / (k + alpha * S)^beta`` with ``S`` the sum over
    channels of the ``size`` x ``size`` spatial mean of ``x^2``
    (``avg_pool2d`` with ``count_include_pad=False``); the flatten step uses
    NHWC order so Keras weights fit the dense layers.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.

    Returns
    -------
    torch.nn.Sequential
        Its 8 ``Conv2d`` / ``Linear`` modules, in order, are the weighted
        layers [2, 5, 8, 9, 10, 13, 15, 17] (see :func:`torch_weighted`).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Pad(nn.Module):
        def __init__(self, pads: tuple[int, int, int, int], value: float):
            super().__init__()
            self.pads, self.value = pads, value

        def forward(self, x):
            return F.pad(x, self.pads, value=self.value)

    class KerasLRN(nn.Module):
        def __init__(self, size: float, alpha: float, beta: float, k: float):
            super().__init__()
            self.size, self.alpha, self.beta, self.k = int(size), alpha, beta, k

        def forward(self, x):
            mean = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=False)
            return x / torch.pow(self.k + self.alpha * mean.sum(dim=1, keepdim=True), self.beta)

    class FlattenNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh}
    modules: list = []
    h, w, channels = input_shape
    for spec, out in zip(LAYERS, feature_map_shape(input_shape)):
        if spec.kind in ("conv", "maxpool"):
            (top, bottom), (left, right) = (_same_padding(h, spec.kernel, spec.strides),
                                            _same_padding(w, spec.kernel, spec.strides))
            symmetric = top == bottom and left == right and top <= spec.kernel // 2 and left <= spec.kernel // 2
            padding = (top, left) if symmetric else 0
            if not symmetric:
                modules.append(Pad((left, right, top, bottom), 0.0 if spec.kind == "conv" else -math.inf))
            if spec.kind == "conv":
                modules.append(nn.Conv2d(channels, spec.filters, spec.kernel, spec.strides, padding=padding))
                modules.append(activations[spec.activation]())
            else:
                modules.append(nn.MaxPool2d(spec.kernel, spec.strides, padding=padding))
            h, w, channels = out
        elif spec.kind == "lrn":
            modules.append(KerasLRN(**LRN_SETTINGS["keras"]))
        elif spec.kind == "flatten":
            modules.append(FlattenNHWC())
            channels = out[0]
        elif spec.kind == "dense":
            modules.append(nn.Linear(channels, spec.units))
            if spec.activation in activations:
                modules.append(activations[spec.activation]())
            channels = spec.units
        elif spec.kind == "dropout":
            modules.append(nn.Dropout(spec.rate))
        else:  # pragma: no cover - guarded by the network description
            raise AssertionError(spec.kind)
    return nn.Sequential(*modules)


def torch_weighted(model) -> list:
    from torch import nn

    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(WEIGHTED_LAYERS)
    return layers


def torch_set_weights(model, arrays) -> None:
    """Copy Keras-layout ``(kernel, bias)`` pairs into the torch model."""
    import torch

    with torch.no_grad():
        for layer, (kernel, bias) in zip(torch_weighted(model), arrays):
            kernel = np.asarray(kernel)
            kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            layer.bias.copy_(torch.from_numpy(np.asarray(bias)))


def child_torch(payload: dict) -> dict:
    """PyTorch forward and training speed, in this fresh process (TensorFlow is never imported)."""
    import torch
    import torch.nn.functional as F

    shape = tuple(payload["shape"])
    with np.load(payload["data"]) as data:
        arrays = [(data[f"kernel_{i}"], data[f"bias_{i}"]) for i in range(len(WEIGHTED_LAYERS))]
        images, labels, reference = data["images"], data["labels"], data["probabilities"]
    torch.manual_seed(0)
    model = build_torch_model(shape)
    torch_set_weights(model, arrays)
    model = model.to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64))
    batches, repeats = payload["forward_batches"], payload["repeats"]
    model.eval()
    with torch.inference_mode():
        probabilities = torch.softmax(model(x), dim=1).numpy()

        def forward():
            for _ in range(batches):
                model(x)

        forward_times = timed(forward, repeats, warmup=1)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    steps = payload["train_steps"]

    def train():
        for _ in range(steps):
            step()

    step()  # warm-up
    train_times = timed(train, repeats)
    n = x.shape[0]
    return {"forward": rates(batches * n, forward_times), "train": rates(steps * n, train_times),
            "max_abs_difference": float(np.max(np.abs(probabilities - reference))),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
