"""Benchmarks of GaMorNet: speed against the hardware's ceiling, memory and import time.

Run ``python -m benchmarks`` from a checkout or ``gamornet bench`` (the same
code); ``--quick`` for a short run, ``--json FILE`` to keep the figures.

Everything is measured in one run on one machine, and every speed is also
given as a ratio to its reference measured in the same run, so figures from
a busy machine can still be judged.  Each figure is the median of repeated
runs (``runs`` in the JSON holds them all); the inference speeds are taken in
interleaved rounds, so a ratio compares runs made under the same load.

What is measured, for each survey shape (SDSS 167x167x1, CANDELS 83x83x1):

- the ceiling: float32 ``tf.matmul`` of two 4096 x 4096 matrices (GFLOP/s),
  and the raw compiled forward pass, ``tf.function(model)`` on a fixed batch
  of 64 already in TensorFlow memory (images/s, and effective GFLOP/s from
  :func:`gamornet.network.forward_flops`);
- :func:`gamornet.keras_module.gamornet_predict_keras` and
  :func:`gamornet.tflearn_module.gamornet_predict_tflearn` on an in-memory
  array, model already loaded (ratio to the raw forward pass); model loading
  apart: the first load of a ``.keras`` and of a legacy ``.h5`` file, the
  reuse-cache hit, and the first and a repeated predict call of one batch;
- ``gamornet predict`` end to end (the command line's ``main`` in-process,
  writing an ECSV table) on a directory of simulated FITS cutouts and on a
  ``.npy`` stack (ratio to the raw forward pass), with a breakdown of where
  the time goes (listing, validation, reading, forward, table);
- training images/s of :func:`gamornet.keras_module.gamornet_train_keras`
  and :func:`gamornet.tflearn_module.gamornet_train_tflearn` on the same
  simulated images (batch 64, SGD with momentum 0.9, validation on 64
  images every epoch), each backend in a fresh process: the mean of ``k``
  epochs after a warm-up epoch, with the CPU time per image (ratio Keras /
  TFLearn);
- the same network in PyTorch, built from :data:`gamornet.network.LAYERS`
  (:func:`build_torch_model`) with the Keras model's weights, in a
  subprocess: forward pass and training step (only if torch is installed);
- peak resident memory (``VmHWM``) of ``predict_files`` on N and 10N
  FITS files, each in a fresh subprocess, and the import time of
  ``gamornet``, ``gamornet.keras_module``, ``gamornet.tflearn_module`` and
  ``gamornet.batch_predict``, each in fresh subprocesses;
- bfloat16 inference: the model built under the Keras policy
  ``mixed_bfloat16`` with the same weights (images/s, ratio to float32), and
  the fraction of simulated galaxies whose label changes versus float32, for
  a randomly initialised model (seed 0).

JSON layout (``--json``): ``figures`` maps a group (``"common"``, ``"SDSS"``,
``"CANDELS"``) to figures keyed by the names of :data:`COMMON_FIGURES` and
:data:`SURVEY_FIGURES`; each figure has ``value`` (the median), ``unit``,
``runs``, ``reference`` and ``ratio`` (value / reference's value, see
:data:`REFERENCES`), ``note`` and ``error`` (why there is no value).
``targets`` lists the checks of :data:`TARGETS` with ``status`` PASS, MISS
or n/a; ``profiles`` holds, per survey, the stages of file prediction
(``files_fits``, ``files_npy``) and the CPU time per training image
(``train_keras``, ``train_tflearn``), and the seconds of each part of the
run (``section_seconds``); ``machine`` and ``settings`` say where and how it
ran.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import io
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gamornet import __version__
from gamornet.bench_cli import add_arguments
from gamornet.network import LAYERS, LRN_SETTINGS, WEIGHTED_LAYERS, feature_map_shape, forward_flops

__all__ = [
    "SURVEYS",
    "MODES",
    "COMMON_FIGURES",
    "SURVEY_FIGURES",
    "REFERENCES",
    "TARGETS",
    "IMPORT_MODULES",
    "Settings",
    "settings_for",
    "Figure",
    "machine_info",
    "measure_prediction_memory",
    "build_torch_model",
    "run_benchmarks",
    "format_table",
    "add_arguments",
    "run_from_args",
    "main",
]

#: Input shapes of the two surveys.
SURVEYS: dict[str, tuple[int, int, int]] = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}
#: Benchmark sizes: ``full`` (both surveys), ``quick`` (CANDELS, under 3 minutes on 2 cores), ``tiny`` (smoke run).
MODES: tuple[str, ...] = ("full", "quick", "tiny")
#: Modules whose import time is measured, each in fresh subprocesses.
IMPORT_MODULES: tuple[str, ...] = ("gamornet", "gamornet.keras_module", "gamornet.tflearn_module",
                                   "gamornet.batch_predict")
BATCH_SIZE = 64
MATMUL_SIZE = 4096

#: Figures measured once per run: name -> (label, unit).
COMMON_FIGURES: dict[str, tuple[str, str]] = {
    "matmul_gflops": ("tf.matmul 4096^2 float32 (ceiling)", "GFLOP/s"),
    "import_gamornet_s": ("import gamornet", "s"),
    "import_keras_module_s": ("import gamornet.keras_module", "s"),
    "import_tflearn_module_s": ("import gamornet.tflearn_module", "s"),
    "import_batch_predict_s": ("import gamornet.batch_predict", "s"),
}

#: Figures measured for each survey shape: name -> (label, unit).
SURVEY_FIGURES: dict[str, tuple[str, str]] = {
    "raw_forward_images_per_s": ("raw forward, tf.function(model), batch 64", "img/s"),
    "raw_forward_gflops": ("raw forward, effective", "GFLOP/s"),
    "predict_keras_images_per_s": ("gamornet_predict_keras, in memory", "img/s"),
    "predict_tflearn_images_per_s": ("gamornet_predict_tflearn, in memory", "img/s"),
    "model_load_keras_first_s": ("load_keras_model .keras, first load", "s"),
    "model_load_h5_first_s": ("load_keras_model legacy .h5, first load", "s"),
    "model_load_keras_cached_s": ("load_keras_model, reuse-cache hit", "s"),
    "predict_keras_first_call_s": ("gamornet_predict_keras 1 batch, first call", "s"),
    "predict_keras_repeat_call_s": ("gamornet_predict_keras 1 batch, repeat call", "s"),
    "predict_tflearn_first_call_s": ("gamornet_predict_tflearn 1 batch, first call", "s"),
    "predict_tflearn_repeat_call_s": ("gamornet_predict_tflearn 1 batch, repeat call", "s"),
    "files_fits_images_per_s": ("gamornet predict, FITS directory", "img/s"),
    "files_npy_images_per_s": ("gamornet predict, .npy stack", "img/s"),
    "train_tflearn_images_per_s": ("gamornet_train_tflearn", "img/s"),
    "train_keras_images_per_s": ("gamornet_train_keras", "img/s"),
    "torch_forward_images_per_s": ("PyTorch forward, batch 64", "img/s"),
    "torch_train_images_per_s": ("PyTorch training step, batch 64", "img/s"),
    "torch_max_abs_difference": ("PyTorch vs Keras probabilities, max |diff|", ""),
    "bf16_forward_images_per_s": ("raw forward, mixed_bfloat16", "img/s"),
    "bf16_label_change_fraction": ("bfloat16 vs float32: argmax label changed", "fraction"),
    "bf16_policy_label_change_fraction": ("bfloat16 vs float32: policy label changed", "fraction"),
    "bf16_max_abs_difference": ("bfloat16 vs float32 probabilities, max |diff|", ""),
    "memory_n_peak_rss_mb": ("predict_files peak RSS, N FITS files", "MB"),
    "memory_10n_peak_rss_mb": ("predict_files peak RSS, 10N FITS files", "MB"),
}

#: Ratios: figure -> (group of the reference, "common" or "survey"; reference figure).
REFERENCES: dict[str, tuple[str, str]] = {
    "raw_forward_gflops": ("common", "matmul_gflops"),
    "predict_keras_images_per_s": ("survey", "raw_forward_images_per_s"),
    "predict_tflearn_images_per_s": ("survey", "raw_forward_images_per_s"),
    "files_fits_images_per_s": ("survey", "raw_forward_images_per_s"),
    "files_npy_images_per_s": ("survey", "raw_forward_images_per_s"),
    "train_keras_images_per_s": ("survey", "train_tflearn_images_per_s"),
    "torch_forward_images_per_s": ("survey", "raw_forward_images_per_s"),
    "torch_train_images_per_s": ("survey", "train_keras_images_per_s"),
    "bf16_forward_images_per_s": ("survey", "raw_forward_images_per_s"),
    "memory_10n_peak_rss_mb": ("survey", "memory_n_peak_rss_mb"),
}

#: Targets: (group, figure, field compared, operator, threshold).
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("common", "import_gamornet_s", "value", "<", 1.0),
    ("survey", "predict_keras_images_per_s", "ratio", ">=", 0.90),
    ("survey", "files_fits_images_per_s", "ratio", ">=", 0.75),
    ("survey", "files_npy_images_per_s", "ratio", ">=", 0.75),
    ("survey", "train_keras_images_per_s", "ratio", ">=", 1.0),
    ("survey", "memory_10n_peak_rss_mb", "ratio", "<=", 1.2),
)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (image counts are per survey).

    Attributes
    ----------
    mode : str
        ``"full"``, ``"quick"`` or ``"tiny"``.
    surveys : tuple of str
        Survey shapes measured.
    repeats : int
        Timed repeats of each speed figure (the median is reported).
    forward_batches : dict
        Batches of 64 per timed repeat of the raw, bfloat16 and PyTorch forward passes.
    n_predict : dict
        Images per call of the predict functions.
    n_files : dict
        FITS files / ``.npy`` images of the end-to-end prediction.
    n_train : dict
        Training images per epoch.
    train_epochs : int
        Timed epochs ``k`` (runs of ``1 + k`` and 1 epochs are compared).
    train_repeats : int
        Repeats of that pair of training runs.
    torch_train_steps : dict
        PyTorch training steps per timed repeat.
    n_memory : dict
        N of the memory figures (N and 10N FITS files).
    import_repeats : int
        Fresh subprocesses per module import (``gamornet`` itself: 3 more).
    load_repeats : int
        Repeats of the model-loading figures.
    """

    mode: str
    surveys: tuple[str, ...]
    repeats: int
    forward_batches: dict
    n_predict: dict
    n_files: dict
    n_train: dict
    train_epochs: int
    train_repeats: int
    torch_train_steps: dict
    n_memory: dict
    import_repeats: int
    load_repeats: int


def settings_for(mode: str = "full", surveys: str | None = None) -> Settings:
    """Settings of a benchmark mode.

    Parameters
    ----------
    mode : {"full", "quick", "tiny"}
        ``full``: both surveys, 5 repeats.  ``quick``: CANDELS only by
        default, fewer images and repeats (under 3 minutes on 2 cores).
        ``tiny``: a few images, one repeat: checks that everything runs.
    surveys : {"SDSS", "CANDELS", "both"}, optional
        Override the surveys of the mode.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}. Received: mode={mode!r}")
    if surveys is None:
        chosen = ("SDSS", "CANDELS") if mode == "full" else ("CANDELS",)
    elif surveys == "both":
        chosen = ("SDSS", "CANDELS")
    elif surveys in SURVEYS:
        chosen = (surveys,)
    else:
        raise ValueError(f"`surveys` must be 'SDSS', 'CANDELS' or 'both'. Received: surveys={surveys!r}")

    def per(sdss: int, candels: int) -> dict:
        return {"SDSS": sdss, "CANDELS": candels}

    if mode == "full":
        return Settings(mode, chosen, repeats=5, forward_batches=per(8, 16), n_predict=per(512, 1024),
                        n_files=per(512, 1024), n_train=per(512, 1024), train_epochs=3, train_repeats=2,
                        torch_train_steps=per(4, 8), n_memory=per(256, 256), import_repeats=3, load_repeats=3)
    if mode == "quick":
        return Settings(mode, chosen, repeats=3, forward_batches=per(2, 4), n_predict=per(128, 256),
                        n_files=per(128, 256), n_train=per(128, 256), train_epochs=2, train_repeats=1,
                        torch_train_steps=per(1, 2), n_memory=per(64, 64), import_repeats=1, load_repeats=1)
    return Settings(mode, chosen, repeats=1, forward_batches=per(1, 1), n_predict=per(64, 64), n_files=per(64, 64),
                    n_train=per(64, 64), train_epochs=1, train_repeats=1, torch_train_steps=per(1, 1),
                    n_memory=per(8, 8), import_repeats=1, load_repeats=1)


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured figure.

    Attributes
    ----------
    value : float or None
        Median of ``runs`` (None when it could not be measured: see ``error``).
    unit : str
    runs : list of float
        Every timed repeat.
    reference : str or None
        ``group/name`` of the figure ``ratio`` divides by.
    ratio : float or None
        ``value / reference value``.
    note : str
        How it was measured, when that is not obvious.
    error : str or None
        Why there is no value (an exception, or ``skipped: ...``).
    """

    label: str
    unit: str
    value: float | None = None
    runs: list = field(default_factory=list)
    reference: str | None = None
    ratio: float | None = None
    note: str = ""
    error: str | None = None


class _Results:
    """Figures by group, in the order of the specs, plus profiles."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.figures: dict[str, dict[str, Figure]] = {"common": {}}
        for survey in settings.surveys:
            self.figures[survey] = {}
        self.profiles: dict[str, dict] = {}

    @staticmethod
    def _spec(group: str, name: str) -> tuple[str, str]:
        return (COMMON_FIGURES if group == "common" else SURVEY_FIGURES)[name]

    def add(self, group: str, name: str, runs, note: str = "") -> Figure:
        runs = [float(r) for r in np.atleast_1d(runs)]
        label, unit = self._spec(group, name)
        fig = Figure(label, unit, statistics.median(runs) if runs else None, runs, note=note)
        self.figures[group][name] = fig
        _log(f"[{group}] {label}: {_fmt(fig.value)} {unit}")
        return fig

    def fail(self, group: str, names, reason: str) -> None:
        for name in names:
            if name not in self.figures[group]:
                label, unit = self._spec(group, name)
                self.figures[group][name] = Figure(label, unit, error=reason)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.3g}" if magnitude < 10 else f"{value:.1f}"
    return f"{value:.3g}" if magnitude >= 1e-3 else f"{value:.1e}"


@contextlib.contextmanager
def _section(results: _Results, group: str, names, title: str):
    """Run a block of measurements; on an error, its figures not yet measured get the error."""
    start = time.perf_counter()
    _log(f"--- {group}: {title}")
    try:
        yield
    except Exception as exc:  # a broken part must not stop the other measurements
        reason = f"{type(exc).__name__}: {exc}"
        _log(f"[{group}] {title} failed: {reason}\n{traceback.format_exc(limit=6)}")
        results.fail(group, names, reason)
    finally:
        results.profiles.setdefault("section_seconds", {})[f"{group}: {title}"] = time.perf_counter() - start


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _rates(n_images: int, times: list[float]) -> list[float]:
    return [n_images / t for t in times]


@contextlib.contextmanager
def _quiet():
    """Silence stdout (TFLearn's training log) and Python warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- machine


def _cpuinfo() -> dict:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": []}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["model"] = value.strip()
            elif key == "flags":
                info["flags"] = value.split()
                break
    return info


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The machine and software a run measured: CPU, cores, memory, load, versions."""
    cpu = _cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
    memory_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_gb = int(f.readline().split()[1]) / 1024**2
    tensorflow = _version("tensorflow-cpu") or _version("tensorflow")
    return {
        "cpu": cpu["model"],
        "cpu_features": [flag for flag in wanted if flag in cpu["flags"]],
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "gamornet": __version__,
            "numpy": np.__version__,
            "tensorflow": tensorflow,
            "keras": _version("keras"),
            "tflearn": _version("tflearn"),
            "torch": _version("torch"),
            "astropy": _version("astropy"),
        },
    }


# --------------------------------------------------------------------------- subprocesses


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_package_root(), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run_child(kind: str, payload: dict, timeout: float = 900) -> dict:
    """Run ``python -m gamornet.benchmark --child KIND JSON`` in a fresh process; its last stdout line is JSON."""
    cmd = [sys.executable, "-m", "gamornet.benchmark", "--child", kind, json.dumps(payload)]
    proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _import_seconds(module: str) -> float:
    code = ("import time; _t = time.perf_counter(); import " + module +
            "; print(time.perf_counter() - _t)")
    proc = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space (MB).

    ``VmHWM`` where ``/proc`` has it: a child's ``ru_maxrss`` also counts the
    memory of the parent it was started from.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux, bytes on macOS


def _child_memory(payload: dict) -> dict:
    """Peak memory of ``predict_files`` on a directory of FITS files, in this fresh process."""
    from gamornet.batch_predict import predict_files

    start = time.perf_counter()
    table = predict_files(payload["inputs"], payload["model"], input_shape=tuple(payload["shape"]),
                          batch_size=payload["batch_size"], progress=False, output=payload["output"],
                          overwrite=True)
    return {"images": len(table), "seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb()}


def measure_prediction_memory(inputs: str, model: str, input_shape, batch_size: int = BATCH_SIZE,
                              output: str | None = None) -> dict:
    """Peak resident memory of :func:`gamornet.batch_predict.predict_files`, run in a fresh subprocess.

    Parameters
    ----------
    inputs : str
        A directory of FITS files, a ``.npy`` stack, or anything else
        ``predict_files`` accepts as one path.
    model : str
        Model file (``.keras``, ``.h5``) or published model name.
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    batch_size : int
        Images per forward pass.
    output : str, optional
        Table to write (default: a temporary ``.ecsv``, removed afterwards).

    Returns
    -------
    dict
        ``peak_rss_mb`` (``VmHWM`` of the subprocess), ``images``,
        ``seconds`` (the whole ``predict_files`` call, model load included).
    """
    from gamornet.utils import check_input_shape

    with tempfile.TemporaryDirectory(prefix="gamornet-memory-") as tmp:
        return _run_child("memory", {"inputs": os.fspath(inputs), "model": os.fspath(model),
                                     "shape": list(check_input_shape(input_shape)), "batch_size": int(batch_size),
                                     "output": output or os.path.join(tmp, "table.ecsv")})


# --------------------------------------------------------------------------- PyTorch


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_torch_model(input_shape: tuple[int, int, int]):
    """GaMorNet in PyTorch, built from :data:`gamornet.network.LAYERS` (Keras-flavour LRN).

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
        layers [2, 5, 8, 9, 10, 13, 15, 17] (see :func:`_torch_weighted`).
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


def _torch_weighted(model) -> list:
    from torch import nn

    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(WEIGHTED_LAYERS)
    return layers


def _torch_set_weights(model, arrays) -> None:
    """Copy Keras-layout ``(kernel, bias)`` pairs into the torch model."""
    import torch

    with torch.no_grad():
        for layer, (kernel, bias) in zip(_torch_weighted(model), arrays):
            kernel = np.asarray(kernel)
            kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            layer.bias.copy_(torch.from_numpy(np.asarray(bias)))


def _child_torch(payload: dict) -> dict:
    """PyTorch forward and training speed, in this fresh process (TensorFlow is never imported)."""
    import torch
    import torch.nn.functional as F

    shape = tuple(payload["shape"])
    with np.load(payload["data"]) as data:
        arrays = [(data[f"kernel_{i}"], data[f"bias_{i}"]) for i in range(len(WEIGHTED_LAYERS))]
        images, labels, reference = data["images"], data["labels"], data["probabilities"]
    torch.manual_seed(0)
    model = build_torch_model(shape)
    _torch_set_weights(model, arrays)
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

        forward_times = _timed(forward, repeats, warmup=1)
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
    train_times = _timed(train, repeats)
    n = x.shape[0]
    return {"forward": _rates(batches * n, forward_times), "train": _rates(steps * n, train_times),
            "max_abs_difference": float(np.max(np.abs(probabilities - reference))),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


# --------------------------------------------------------------------------- one survey


@dataclass
class _Workspace:
    survey: str
    shape: tuple
    directory: str
    images: np.ndarray  # simulated galaxies (n_sim, H, W, 1)
    onehot: np.ndarray
    fits_files: list
    keras_path: str = ""
    h5_path: str = ""
    tflearn_prefix: str = ""
    model: Any = None
    model16: Any = None
    file_inputs: dict = field(default_factory=dict)


def _tile(images: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(images, np.arange(n) % len(images), axis=0))


def _link_files(files: list, directory: str, n: int) -> str:
    """A directory of ``n`` FITS files, hard links (or copies) cycling through ``files``."""
    os.makedirs(directory)
    for i in range(n):
        target = os.path.join(directory, f"g{i:07d}.fits")
        try:
            os.link(files[i % len(files)], target)
        except OSError:
            shutil.copyfile(files[i % len(files)], target)
    return directory


def _prepare(survey: str, settings: Settings, tmp: str) -> _Workspace:
    from astropy.table import Table

    from gamornet.convert import write_tflearn_checkpoint
    from gamornet.keras_model import build_keras_model
    from gamornet.simulate import simulate_to_disk

    shape = SURVEYS[survey]
    n_sim = max(settings.n_files[survey], settings.n_memory[survey], BATCH_SIZE)
    start = time.perf_counter()
    sim = os.fspath(simulate_to_disk(os.path.join(tmp, "sim"), n_sim, survey, seed=0, fits=True, progress=False))
    catalog = Table.read(os.path.join(sim, "catalog.ecsv"))
    images = np.load(os.path.join(sim, "images.npy"))
    onehot = np.eye(3, dtype=np.float32)[np.asarray(catalog["class_index"], dtype=int)]
    fits_dir = os.path.join(sim, "fits")
    fits_files = sorted(os.path.join(fits_dir, f) for f in os.listdir(fits_dir) if f.endswith(".fits"))
    _log(f"[{survey}] simulated {n_sim} galaxies (FITS and .npy) in {time.perf_counter() - start:.1f} s")
    ws = _Workspace(survey, shape, tmp, images, onehot, fits_files)
    ws.model = build_keras_model(shape, seed=0)
    ws.keras_path = os.path.join(tmp, "model.keras")
    ws.model.save(ws.keras_path)
    with _quiet():
        ws.h5_path = os.path.join(tmp, "model.h5")
        ws.model.save(ws.h5_path)
        ws.tflearn_prefix = write_tflearn_checkpoint(ws.model, os.path.join(tmp, "tflearn", "model"), shape)
    return ws


def _inference_rounds(ws: _Workspace, settings: Settings, results: _Results) -> None:
    """The inference speeds, measured in interleaved rounds so that each ratio compares like with like.

    Every round runs the raw forward pass, both predict functions, the
    bfloat16 forward pass and ``gamornet predict`` on both file kinds once;
    each figure is the median over the rounds.  Everything is loaded,
    compiled and run once before the first round.
    """
    import tensorflow as tf

    from gamornet.batch_predict import predict_files
    from gamornet.cli import main as cli_main
    from gamornet.keras_model import build_keras_model
    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.tflearn_module import gamornet_predict_tflearn
    from gamornet.training import mixed_precision_policy

    survey, shape = ws.survey, ws.shape
    batches = settings.forward_batches[survey]
    x = tf.constant(_tile(ws.images, BATCH_SIZE))
    arr = _tile(ws.images, settings.n_predict[survey])
    n_files = settings.n_files[survey]
    out = os.path.join(ws.directory, "files_out.ecsv")

    def compiled_loop(model) -> Callable[[], None]:
        compiled = tf.function(lambda t: model(t, training=False))

        def run():
            for _ in range(batches):
                compiled(x).numpy()

        return run

    def bf16_loop() -> Callable[[], None]:
        with mixed_precision_policy("bfloat16"):
            ws.model16 = build_keras_model(shape, seed=0)
        ws.model16.set_weights(ws.model.get_weights())
        return compiled_loop(ws.model16)

    def tflearn_predict() -> None:
        with _quiet():
            gamornet_predict_tflearn(arr, ws.tflearn_prefix, shape, progress=False)

    def files_setup(kind: str) -> Callable[[], None]:
        if kind == "fits":
            inputs = _link_files(ws.fits_files, os.path.join(ws.directory, "files_fits"), n_files)
        else:
            inputs = os.path.join(ws.directory, "files.npy")
            np.save(inputs, _tile(ws.images, n_files))
        ws.file_inputs[kind] = inputs
        predict_files(ws.images[:BATCH_SIZE], ws.keras_path, input_shape=shape, progress=False)  # load, compile

        def run():
            code = cli_main(["predict", inputs, "--model", ws.keras_path, "--input-shape", survey, "--output", out,
                             "--overwrite", "--quiet"])
            if code != 0:
                raise RuntimeError(f"gamornet predict exited with {code}")

        return run

    plan: list[tuple[str, Callable[[], Callable[[], None]], int, str]] = [
        ("raw_forward_images_per_s", lambda: compiled_loop(ws.model), batches * BATCH_SIZE,
         "tf.function(model) on one batch of 64 already in TensorFlow memory"),
        ("predict_keras_images_per_s",
         lambda: lambda: gamornet_predict_keras(arr, ws.keras_path, shape, progress=False), len(arr),
         f"{len(arr)} images per call, model loaded (reuse cache)"),
        ("predict_tflearn_images_per_s", lambda: tflearn_predict, len(arr),
         f"{len(arr)} images per call, network kept for reuse (TFLearn's depth LRN)"),
        ("bf16_forward_images_per_s", bf16_loop, batches * BATCH_SIZE,
         "model built under the keras policy mixed_bfloat16, same weights as float32"),
        ("files_fits_images_per_s", lambda: files_setup("fits"), n_files,
         f"{n_files} FITS files, `gamornet predict DIR ... --output table.ecsv` in-process, model loaded"),
        ("files_npy_images_per_s", lambda: files_setup("npy"), n_files,
         f"{n_files}-image .npy stack, `gamornet predict STACK.npy ... --output table.ecsv` in-process"),
    ]
    runners: dict[str, Callable[[], None]] = {}
    for name, setup, _, _ in plan:
        with _section(results, survey, [name], f"warm-up of {name}"):
            runner = setup()
            runner()
            runners[name] = runner
    times: dict[str, list[float]] = {name: [] for name in runners}
    _log(f"--- {survey}: {settings.repeats} interleaved rounds of {', '.join(runners)}")
    for _ in range(settings.repeats):
        for name in list(runners):
            try:
                times[name] += _timed(runners[name], 1)
            except Exception as exc:  # a broken part must not stop the others
                _log(f"[{survey}] {name} failed: {type(exc).__name__}: {exc}")
                results.fail(survey, [name], f"{type(exc).__name__}: {exc}")
                runners.pop(name)
    for name, _, n, note in plan:
        if name in runners:
            results.add(survey, name, _rates(n, times[name]), note=note)
    raw = results.figures[survey].get("raw_forward_images_per_s")
    if raw is not None and raw.runs:
        flops = forward_flops(shape)
        results.add(survey, "raw_forward_gflops", [r * flops / 1e9 for r in raw.runs],
                    note=f"{flops / 1e9:.2f} GFLOP per image (gamornet.network.forward_flops)")
    else:
        results.fail(survey, ["raw_forward_gflops"], "no raw forward figure")


def _profile_sections(ws: _Workspace, results: _Results) -> None:
    for kind, inputs in ws.file_inputs.items():
        with _section(results, ws.survey, [], f"profile of gamornet predict on {kind}"):
            profile = _profile_files(ws, inputs)
            measured = results.figures[ws.survey].get(f"files_{kind}_images_per_s")
            profile["end_to_end_s"] = (profile["images"] / measured.value if measured is not None and measured.value
                                       else None)
            results.profiles.setdefault(ws.survey, {})[f"files_{kind}"] = profile


def _profile_files(ws: _Workspace, inputs: str) -> dict:
    """Seconds of each stage of file prediction, run one after the other in this thread."""
    from astropy.table import Table

    from gamornet import io as gio
    from gamornet.keras_model import load_keras_model
    from gamornet.keras_module import _forward_function
    from gamornet.network import CLASS_NAMES
    from gamornet.thresholds import classify_probabilities

    stages: dict[str, float] = {}
    start = time.perf_counter()
    refs, _ = gio.list_images(inputs)
    stages["list_s"] = time.perf_counter() - start
    start = time.perf_counter()
    good, _ = gio.scan_images(refs, ws.shape)
    stages["validate_s"] = time.perf_counter() - start
    reader = gio.ImageReader(ws.shape)
    start = time.perf_counter()
    batches = [reader.read(good[s : s + BATCH_SIZE]) for s in range(0, len(good), BATCH_SIZE)]
    stages["read_s"] = time.perf_counter() - start
    forward = _forward_function(load_keras_model(ws.keras_path, ws.shape))
    start = time.perf_counter()
    probs = np.concatenate([forward(b.images) for b in batches])
    stages["forward_s"] = time.perf_counter() - start
    start = time.perf_counter()
    table = Table({"id": [str(i) for b in batches for i in b.ids]})
    for j, name in enumerate(CLASS_NAMES):
        table[f"p_{name}"] = probs[:, j]
    table["label"] = classify_probabilities(probs, "keras_candels" if ws.survey == "CANDELS" else "keras_sdss")
    table.write(os.path.join(ws.directory, "profile.ecsv"), format="ascii.ecsv", overwrite=True)
    stages["table_s"] = time.perf_counter() - start
    stages["images"] = len(good)
    return stages


def _load_sections(ws: _Workspace, settings: Settings, results: _Results) -> None:
    from gamornet.keras_model import clear_model_cache, load_keras_model
    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.tflearn_module import clear_tflearn_models, gamornet_predict_tflearn

    survey, shape, repeats = ws.survey, ws.shape, settings.load_repeats
    one = ws.images[:BATCH_SIZE]
    for name, path in (("model_load_keras_first_s", ws.keras_path), ("model_load_h5_first_s", ws.h5_path)):
        with _section(results, survey, [name], name):
            times = []
            for _ in range(repeats):
                clear_model_cache()
                gc.collect()
                times += _timed(lambda path=path: load_keras_model(path, shape), 1)
            results.add(survey, name, times, note="read the file, build the model, set the weights")
    with _section(results, survey, ["model_load_keras_cached_s"], "reuse-cache hit"):
        load_keras_model(ws.keras_path, shape)
        results.add(survey, "model_load_keras_cached_s", _timed(lambda: load_keras_model(ws.keras_path, shape), 5))

    def keras_call():
        gamornet_predict_keras(one, ws.keras_path, shape, progress=False)

    def tflearn_call():
        with _quiet():
            gamornet_predict_tflearn(one, ws.tflearn_prefix, shape, progress=False)

    for flavor, call, clear in (("keras", keras_call, clear_model_cache), ("tflearn", tflearn_call,
                                                                           clear_tflearn_models)):
        names = [f"predict_{flavor}_first_call_s", f"predict_{flavor}_repeat_call_s"]
        with _section(results, survey, names, f"gamornet_predict_{flavor} first and repeat call"):
            first, repeat = [], []
            for _ in range(repeats):
                clear()
                gc.collect()
                first += _timed(call, 1)
                repeat += _timed(call, 1)
            what = ("read the file, build the model, trace, predict" if flavor == "keras"
                    else "build the TFLearn graph, restore the checkpoint, predict")
            results.add(survey, names[0], first, note=f"{what} (TensorFlow already imported and warm)")
            results.add(survey, names[1], repeat, note="same model_load_path: reuse-cache hit")
    clear_tflearn_models()


def _child_train(payload: dict) -> dict:
    """Seconds of each training epoch of one backend, in this fresh process.

    Keras: :func:`gamornet_train_keras` for ``1 + k`` epochs with an epoch
    timer passed as ``callbacks``.  TFLearn: :func:`gamornet_train_tflearn`
    for the warm-up epoch, then ``k`` more epochs of the ``tflearn.DNN`` it
    returns, fitted with the arguments the module uses plus an epoch timer.
    Either way every epoch shuffles, trains and validates.
    """
    x, y = np.load(payload["x"]), np.load(payload["y"])
    vx, vy = x[:BATCH_SIZE].copy(), y[:BATCH_SIZE].copy()
    shape, k = tuple(payload["shape"]), int(payload["epochs"])
    common = dict(files_save_path=os.devnull, batch_size=BATCH_SIZE, lr=1e-4, momentum=0.9, save_model=False)
    seconds: list[tuple[float, float, float]] = []  # (wall, CPU, system CPU) of each epoch
    if payload["backend"] == "keras":
        import keras

        from gamornet.keras_module import gamornet_train_keras

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = _clocks()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(_since(self.start))

        gamornet_train_keras(x, y, vx, vy, shape, epochs=1 + k, verbose=0, seed=0, callbacks=[Timer()], **common)
    else:
        from gamornet.tflearn_compat import import_tflearn
        from gamornet.tflearn_module import gamornet_train_tflearn

        tflearn = import_tflearn()

        class TFLearnTimer(tflearn.callbacks.Callback):
            def on_epoch_begin(self, training_state):
                self.start = _clocks()

            def on_epoch_end(self, training_state):
                seconds.append(_since(self.start))

        with _quiet():
            start = _clocks()
            dnn = gamornet_train_tflearn(x, y, vx, vy, shape, epochs=1, show_metric=False, **common)
            seconds.append(_since(start))  # warm-up, dropped
            dnn.fit(x, y, n_epoch=k, validation_set=(vx, vy), show_metric=False, batch_size=BATCH_SIZE,
                    shuffle=True, snapshot_epoch=True, run_id="gamornet", callbacks=[TFLearnTimer()])
    return {"epoch_seconds": [t[0] for t in seconds], "epoch_cpu_seconds": [t[1] for t in seconds],
            "epoch_system_seconds": [t[2] for t in seconds], "images": len(x)}


def _clocks() -> tuple[float, float, float]:
    """Wall time, CPU time (user + system, all threads) and system CPU time of this process."""
    t = os.times()
    return time.perf_counter(), t.user + t.system, t.system


def _since(start: tuple[float, float, float]) -> tuple[float, float, float]:
    now = _clocks()
    return now[0] - start[0], now[1] - start[1], now[2] - start[2]


def _training_sections(ws: _Workspace, settings: Settings, results: _Results) -> None:
    survey = ws.survey
    n, k = settings.n_train[survey], settings.train_epochs
    names = ["train_tflearn_images_per_s", "train_keras_images_per_s"]
    with _section(results, survey, names, "training data"):
        x_path, y_path = os.path.join(ws.directory, "train_x.npy"), os.path.join(ws.directory, "train_y.npy")
        np.save(x_path, _tile(ws.images, n))
        np.save(y_path, _tile(ws.onehot, n))
    note = (f"{n} images per epoch, batch 64, SGD momentum 0.9, 64 validation images; the mean of {k} epochs after "
            "a warm-up epoch, each backend in a fresh process")
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(settings.train_repeats):
        for name in names:
            with _section(results, survey, [name], name):
                out = _run_child("train", {"backend": name.split("_")[1], "x": x_path, "y": y_path,
                                           "shape": list(ws.shape), "epochs": k})
                images = k * out["images"]
                rates[name].append(images / sum(out["epoch_seconds"][1:]))
                cpu[name].append((1e3 * sum(out["epoch_cpu_seconds"][1:]) / images,
                                  1e3 * sum(out["epoch_system_seconds"][1:]) / images))
    for name in names:
        if rates[name]:
            per_image = {"cpu_ms_per_image": statistics.median(c for c, _ in cpu[name]),
                         "system_ms_per_image": statistics.median(s for _, s in cpu[name])}
            results.profiles.setdefault(survey, {})[name.replace("_images_per_s", "")] = per_image
            results.add(survey, name, rates[name], note=f"{note}; CPU {per_image['cpu_ms_per_image']:.1f} ms/image "
                                                        f"(system {per_image['system_ms_per_image']:.1f})")


def _bf16_labels(ws: _Workspace, results: _Results) -> None:
    from gamornet.keras_module import predict_probabilities
    from gamornet.thresholds import classify_probabilities

    names = ["bf16_label_change_fraction", "bf16_policy_label_change_fraction", "bf16_max_abs_difference"]
    with _section(results, ws.survey, names, "bfloat16 labels"):
        if ws.model16 is None:
            raise RuntimeError("the bfloat16 model could not be built")
        p32 = predict_probabilities(ws.model, ws.images)
        p16 = predict_probabilities(ws.model16, ws.images)
        what = f"{len(ws.images)} simulated {ws.survey} galaxies, randomly initialised model (seed 0)"
        results.add(ws.survey, names[0], [np.mean(p32.argmax(1) != p16.argmax(1))], note=what)
        policy = "keras_candels" if ws.survey == "CANDELS" else "keras_sdss"
        changed = classify_probabilities(p32, policy) != classify_probabilities(p16, policy)
        results.add(ws.survey, names[1], [np.mean(changed)], note=f"{what}; policy {policy}")
        results.add(ws.survey, names[2], [np.max(np.abs(p32 - p16))], note=what)
        ws.model16 = None


def _torch_sections(ws: _Workspace, settings: Settings, results: _Results) -> None:
    names = ["torch_forward_images_per_s", "torch_train_images_per_s", "torch_max_abs_difference"]
    if _version("torch") is None:
        results.fail(ws.survey, names, "skipped: torch is not installed")
        _log(f"[{ws.survey}] PyTorch: skipped (not installed)")
        return
    from gamornet.keras_model import weighted_layers
    from gamornet.keras_module import predict_probabilities

    with _section(results, ws.survey, names, "PyTorch"):
        images = _tile(ws.images, BATCH_SIZE)
        data = os.path.join(ws.directory, "torch_data.npz")
        arrays = {}
        for i, layer in enumerate(weighted_layers(ws.model)):
            arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.get_weights()
        np.savez(data, images=images, labels=_tile(ws.onehot, BATCH_SIZE).argmax(1),
                 probabilities=predict_probabilities(ws.model, images), **arrays)
        del arrays
        out = _run_child("torch", {"data": data, "shape": list(ws.shape), "repeats": settings.repeats,
                                   "forward_batches": settings.forward_batches[ws.survey],
                                   "train_steps": settings.torch_train_steps[ws.survey]})
        os.remove(data)
        note = f"torch {out['torch']}, {out['threads']} threads, channels_last, subprocess"
        results.add(ws.survey, names[0], out["forward"], note=note + ", inference_mode")
        results.add(ws.survey, names[1], out["train"], note=note + ", SGD momentum 0.9, cross-entropy")
        results.add(ws.survey, names[2], [out["max_abs_difference"]], note="same weights, one batch")


def _memory_sections(ws: _Workspace, settings: Settings, results: _Results) -> None:
    names = ["memory_n_peak_rss_mb", "memory_10n_peak_rss_mb"]
    with _section(results, ws.survey, names, "file-prediction peak memory"):
        n = settings.n_memory[ws.survey]
        for name, count in zip(names, (n, 10 * n)):
            directory = _link_files(ws.fits_files, os.path.join(ws.directory, f"memory_{count}"), count)
            out = measure_prediction_memory(directory, ws.keras_path, ws.shape)
            results.add(ws.survey, name, [out["peak_rss_mb"]],
                        note=f"{count} FITS files, predict_files in a fresh process "
                             f"({out['images'] / out['seconds']:.0f} img/s including load), VmHWM")
            shutil.rmtree(directory, ignore_errors=True)


def _survey(survey: str, settings: Settings, results: _Results) -> None:
    with tempfile.TemporaryDirectory(prefix=f"gamornet-bench-{survey}-") as tmp:
        ws = None
        with _section(results, survey, list(SURVEY_FIGURES), "setup"):
            ws = _prepare(survey, settings, tmp)
        if ws is None:
            return
        _inference_rounds(ws, settings, results)
        _bf16_labels(ws, results)
        _profile_sections(ws, results)
        _load_sections(ws, settings, results)
        _training_sections(ws, settings, results)
        _torch_sections(ws, settings, results)
        _memory_sections(ws, settings, results)
        from gamornet.keras_model import clear_model_cache

        clear_model_cache()
        ws.model = None
        gc.collect()


# --------------------------------------------------------------------------- the run


def _matmul(settings: Settings, results: _Results) -> None:
    with _section(results, "common", ["matmul_gflops"], "matmul ceiling"):
        import tensorflow as tf

        a = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE), seed=1)
        b = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE), seed=2)
        product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
        product().numpy()  # trace
        calls = max(1, min(5, round(0.5 / _timed(lambda: product().numpy(), 1)[0])))  # about 0.5 s per repeat
        times = _timed(lambda: [product().numpy() for _ in range(calls)], max(settings.repeats, 3))
        results.add("common", "matmul_gflops", [calls * 2 * MATMUL_SIZE**3 / t / 1e9 for t in times],
                    note=f"{calls} product(s) per timed repeat")


def _imports(settings: Settings, results: _Results) -> None:
    for module in IMPORT_MODULES:
        name = "import_" + module.split(".")[-1] + "_s"
        with _section(results, "common", [name], f"import {module}"):
            repeats = settings.import_repeats + (2 if module == "gamornet" else 0)
            results.add("common", name, [_import_seconds(module) for _ in range(repeats)],
                        note="fresh subprocess each time, interpreter start excluded")


def _finish(results: _Results) -> list[dict]:
    """Ratios to the references, then the targets."""
    for group, figures in results.figures.items():
        if group == "common":
            continue
        for name, (ref_group, ref_name) in REFERENCES.items():
            fig = figures.get(name)
            ref = results.figures["common" if ref_group == "common" else group].get(ref_name)
            if fig is None or ref is None:
                continue
            fig.reference = f"{'common' if ref_group == 'common' else group}/{ref_name}"
            if fig.value is not None and ref.value:
                fig.ratio = fig.value / ref.value
    targets = []
    for ref_group, name, attr, op, threshold in TARGETS:
        groups = ["common"] if ref_group == "common" else [g for g in results.figures if g != "common"]
        for group in groups:
            fig = results.figures[group].get(name)
            value = None if fig is None else getattr(fig, attr)
            if value is None:
                status = "n/a"
            else:
                ok = {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[op]
                status = "PASS" if ok else "MISS"
            targets.append({"group": group, "figure": name, "field": attr, "operator": op, "threshold": threshold,
                            "value": value, "status": status})
    return targets


def run_benchmarks(settings: Settings) -> dict:
    """Run every measurement of ``settings``; returns the JSON-able report (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    machine = machine_info()
    results = _Results(settings)
    _log(f"GaMorNet benchmark ({settings.mode}; {', '.join(settings.surveys)}) on {machine['cpu']}, "
         f"{machine['cores_available']} cores, load average {machine['load_average']}")
    _imports(settings, results)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # TFLearn's deprecation notes
    _matmul(settings, results)
    for survey in settings.surveys:
        _survey(survey, settings, results)
    results.fail("common", COMMON_FIGURES, "not measured")
    for survey in settings.surveys:
        results.fail(survey, SURVEY_FIGURES, "not measured")
    for group, figures in results.figures.items():  # the documented order
        spec = COMMON_FIGURES if group == "common" else SURVEY_FIGURES
        results.figures[group] = {name: figures[name] for name in spec if name in figures}
    targets = _finish(results)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "format": 1,
        "mode": settings.mode,
        "settings": asdict(settings),
        "machine": machine,
        "figures": {g: {n: asdict(f) for n, f in figs.items()} for g, figs in results.figures.items()},
        "targets": targets,
        "profiles": results.profiles,
        "peak_rss_mb": _peak_rss_mb(),
        "elapsed_s": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- output


def _target_text(group: str, name: str, report: dict) -> tuple[str, str]:
    for target in report["targets"]:
        if target["group"] == group and target["figure"] == name:
            threshold = f"{target['operator']} {target['threshold']:g}"
            return (threshold + (" s" if target["field"] == "value" else "")), target["status"]
    return "", ""


def format_table(report: dict) -> str:
    """The report as a plain-text table (one block per group, then the file-prediction profiles)."""
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"GaMorNet benchmark, {report['mode']} mode, {report['elapsed_s']:.0f} s",
        f"{m['cpu']}, {m['cores_available']} cores ({', '.join(m['cpu_features'])}), {m['memory_gb']} GB; load "
        f"average {', '.join(f'{x:.2f}' for x in m['load_average'] or [])} at start, "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end') or [])} at end",
        f"Python {m['python']}, numpy {v['numpy']}, tensorflow {v['tensorflow']}, keras {v['keras']}, "
        f"tflearn {v['tflearn']}, torch {v['torch']}, gamornet {v['gamornet']}",
        "",
    ]
    header = f"{'figure':<48} {'value':>9} {'unit':<9} {'ratio':>6}  {'of':<32} {'target':<8} status"
    for group, figures in report["figures"].items():
        title = "common" if group == "common" else f"{group} {'x'.join(map(str, SURVEYS[group]))}"
        lines += [f"[{title}]", header, "-" * len(header)]
        for name, fig in figures.items():
            ratio = "" if fig["ratio"] is None else f"{fig['ratio']:.2f}"
            ref = ""
            if fig["reference"]:
                ref_group, ref_name = fig["reference"].split("/")
                ref = (COMMON_FIGURES if ref_group == "common" else SURVEY_FIGURES)[ref_name][0]
                ref = ref.split(",")[0] if len(ref) > 32 else ref
            value = _fmt(fig["value"]) if fig["error"] is None else ("skipped" if fig["error"].startswith("skipped")
                                                                    else "ERROR")
            target, status = _target_text(group, name, report)
            lines.append(f"{fig['label']:<48} {value:>9} {fig['unit']:<9} {ratio:>6}  {ref[:32]:<32} {target:<8} "
                         f"{status}".rstrip())
        lines.append("")
    errors = [(g, n, f["error"]) for g, figs in report["figures"].items() for n, f in figs.items()
              if f["error"] and not f["error"].startswith("skipped")]
    for group, name, error in errors:
        lines.append(f"ERROR {group}/{name}: {error.splitlines()[0][:200]}")
    for survey, profiles in report["profiles"].items():
        if survey == "section_seconds":
            continue
        for kind, stages in profiles.items():
            if kind.startswith("train_"):
                lines.append(f"profile {survey} {kind}: CPU time {stages['cpu_ms_per_image']:.1f} ms per image, "
                             f"of which system (kernel) {stages['system_ms_per_image']:.1f} ms")
                continue
            parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in stages.items() if k.endswith("_s") and v is not None)
            lines.append(f"profile {survey} {kind} ({stages.get('images')} images, seconds, stages run one after "
                         f"the other): {parts}")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- command line


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed options; print the table (stdout), write the JSON."""
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    report = run_benchmarks(settings_for(mode, args.survey))
    text = format_table(report)
    print(text, end="", flush=True)
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks`` (also ``python -m gamornet.benchmark``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, payload = args.child[0], json.loads(args.child[1])
        result = {"memory": _child_memory, "torch": _child_torch, "train": _child_train}[kind](payload)
        print(json.dumps(result))
        return 0
    return run_from_args(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
