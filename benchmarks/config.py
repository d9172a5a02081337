"""What the benchmark measures: surveys, figures, references, targets, and the sizes of each mode."""

from __future__ import annotations

from dataclasses import dataclass

#: Input shapes of the two surveys.
SURVEYS: dict[str, tuple[int, int, int]] = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}
#: Benchmark sizes: ``full`` (both surveys), ``quick`` (CANDELS, under 3 minutes on 2 cores), ``tiny`` (smoke run).
MODES: tuple[str, ...] = ("full", "quick", "tiny")
#: Modules whose import time is measured, each in fresh subprocesses.
IMPORT_MODULES: tuple[str, ...] = ("gamornet", "gamornet.keras_module", "gamornet.tflearn_module",
                                   "gamornet.predict")
BATCH_SIZE = 64
MATMUL_SIZE = 4096

#: Figures measured once per run: name -> (label, unit).
COMMON_FIGURES: dict[str, tuple[str, str]] = {
    "matmul_gflops": ("tf.matmul 4096^2 float32 (ceiling)", "GFLOP/s"),
    "import_gamornet_s": ("import gamornet", "s"),
    "import_keras_module_s": ("import gamornet.keras_module", "s"),
    "import_tflearn_module_s": ("import gamornet.tflearn_module", "s"),
    "import_predict_s": ("import gamornet.predict", "s"),
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


def add_arguments(parser) -> None:
    """The options of ``python -m benchmarks`` (and ``gamornet bench``)."""
    parser.add_argument("--quick", action="store_true",
                        help="short run: CANDELS only unless --survey, fewer images and repeats (< 3 min, 2 cores)")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest run (a few images, one repeat): checks that every measurement works")
    parser.add_argument("--json", metavar="FILE", help="also write every figure, ratio and target as JSON")
    parser.add_argument("--survey", choices=("SDSS", "CANDELS", "both"), default=None,
                        help="survey shapes to measure (default: both; CANDELS with --quick / --tiny)")
