"""The starting models and the transfer-learning runs of an adaptation.

One run is one call of :func:`gamornet.keras_module.gamornet_tl_keras` with
``resume=True`` in its own folder: a finished run is not trained again, an
interrupted one continues from its last completed epoch.  Keras is imported
only when a run trains or predicts.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from gamornet.adapt.files import SPLIT_FILE, read_json, write_json
from gamornet.core.network import INPUT_SHAPES
from gamornet.core.run_files import FINAL_MODEL_FILE, METRICS_FILE
from gamornet.data import ArraySource
from gamornet.published.cards import read_card
from gamornet.published.models import is_published_model, resolve_model_path
from gamornet.published.registry import get_model_info, model_names

__all__ = ["TL_OPTIONS", "check_models", "start_names", "start_policy", "fetch_starts", "train_run", "run_metrics",
           "best_epoch", "predict_rows"]

#: Keyword arguments of :func:`gamornet.keras_module.gamornet_tl_keras` an adaptation passes on (recorded, so that
#: a resumed adaptation trains with the same settings).
TL_OPTIONS: tuple[str, ...] = (
    "load_layers_bools", "trainable_bools", "epochs", "checkpoint_freq", "batch_size", "lr", "momentum", "decay",
    "nesterov", "loss", "augment", "schedule", "plateau_factor", "plateau_patience", "early_stopping",
    "mixed_precision", "optimizer", "keep_optimizer", "card",
)


def check_models(models) -> list[str]:
    """The starting models: published names as they are, files as absolute paths.

    Raises
    ------
    ValueError
        If ``models`` is empty or names neither a published model nor an
        existing file (or TFLearn checkpoint prefix).
    """
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    models = list(models) if isinstance(models, (list, tuple)) else None
    if not models:
        raise ValueError(f"`models` must be a non-empty list of published model names ({', '.join(model_names())}) "
                         f"or model files. Received: models={models!r}")
    out = []
    for model in models:
        if is_published_model(model):
            out.append(model)
            continue
        path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        if not path or not (os.path.isfile(path) or os.path.isfile(path + ".index")):
            raise ValueError(f"`models` must name published models ({', '.join(model_names())}) or existing model "
                             f"files; {model!r} is neither. Received: models={[str(m) for m in models]!r}")
        out.append(os.path.abspath(path))
    return out


def start_names(models) -> list[str]:
    """Folder name of each start: the published name or the file's stem (safe characters only), made unique.

    A name met again gets ``-2``, ``-3`` ... in the order given.
    """
    names: list[str] = []
    for model in models:
        base = model if is_published_model(model) else Path(os.fspath(model)).name
        if not is_published_model(model):
            base = base[: -len(".keras")] if base.endswith(".keras") else os.path.splitext(base)[0] or base
        base = re.sub(r"[^A-Za-z0-9._-]", "_", base).strip(".") or "start"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def start_policy(model: str, shape) -> str:
    """Default threshold policy of a start: the published model's, its card's, else by input shape."""
    if is_published_model(model):
        return get_model_info(model, "keras").policy
    card = read_card(model) if os.path.isfile(model) else None
    if card is not None and card.policy:
        return card.policy
    return "keras_candels" if tuple(shape) == INPUT_SHAPES["CANDELS"] else "keras_sdss"


def fetch_starts(models: list[str], verbose) -> None:
    """Fetch the published starting models into the cache now, before any training."""
    for model in models:
        if is_published_model(model):
            resolve_model_path(model, "keras", progress=bool(verbose))


def _check_split(directory: Path, train_rows: np.ndarray, val_rows: np.ndarray | None) -> None:
    """Record the rows of a run in ``split.json``; a run folder recording other rows is refused."""
    split = {"training": train_rows.tolist(), "validation": None if val_rows is None else val_rows.tolist()}
    path = directory / SPLIT_FILE
    if path.is_file():
        if read_json(path) != split:
            raise RuntimeError(f"Cannot continue the run in {directory}: its {SPLIT_FILE} records other training / "
                               "validation rows (DATA, the labels or the seed changed).")
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_json(path, split)


def train_run(model: str, source: ArraySource, train_rows, val_rows, directory: Path, shape, options: dict,
              seed: int, verbose, callbacks=None) -> Path:
    """Train (or continue, or just reload) one transfer-learning run; returns its ``trained_model.keras``.

    Parameters
    ----------
    model : str
        Starting model (published name or path).
    source : gamornet.data.ArraySource
        All the labelled images.
    train_rows, val_rows : numpy.ndarray
        Rows of ``source`` to train and to validate on (``val_rows`` None: no validation).
    directory : pathlib.Path
        The run folder.
    shape : tuple
        Input shape.
    options : dict
        Keyword arguments of :func:`~gamornet.keras_module.gamornet_tl_keras` (see :data:`TL_OPTIONS`).
    seed : int
        Seed of the initialisation of the layers not loaded, shuffling, augmentation.
    verbose, callbacks
        As for :func:`~gamornet.keras_module.gamornet_tl_keras`.
    """
    from gamornet.keras_module import gamornet_tl_keras

    train_rows = np.sort(np.asarray(train_rows, dtype=np.int64))
    val_rows = None if val_rows is None else np.sort(np.asarray(val_rows, dtype=np.int64))
    _check_split(directory, train_rows, val_rows)
    train = ArraySource(source.images, source.labels, train_rows, "training_imgs")
    val = None if val_rows is None else ArraySource(source.images, source.labels, val_rows, "validation_imgs")
    kwargs = dict(options)
    for key in ("load_layers_bools", "trainable_bools"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = list(kwargs[key])
    gamornet_tl_keras(train, None, val, None, shape, model_load_path=model, files_save_path=str(directory),
                      resume=True, seed=seed, verbose=verbose, save_model=True, callbacks=callbacks, **kwargs)
    return directory / FINAL_MODEL_FILE


def run_metrics(directory) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (empty if it has none); empty and ``NA`` values left out."""

    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in (None, "", "NA")} for row in csv.DictReader(f)]


def best_epoch(directory) -> dict:
    """The epoch of highest validation accuracy of a run (the first of equal ones), from its ``metrics.csv``.

    Returns
    -------
    dict
        ``best_val_accuracy``, ``val_loss`` (at that epoch), ``best_epoch``
        (counting from 1) and ``epochs`` (epochs trained).
    """
    rows = [r for r in run_metrics(directory) if "val_accuracy" in r]
    if not rows:
        raise RuntimeError(f"The run in {directory} has no validation accuracy in its metrics.csv.")
    k = int(np.argmax([r["val_accuracy"] for r in rows]))
    return {"best_val_accuracy": rows[k]["val_accuracy"], "val_loss": rows[k].get("val_loss"),
            "best_epoch": int(rows[k]["epoch"]) + 1, "epochs": len(rows)}


def predict_rows(model_path, source: ArraySource, rows, shape) -> np.ndarray:
    """Probabilities ``(len(rows), 3)`` of the images ``rows`` of ``source`` by the saved model ``model_path``."""
    from gamornet.keras_module import gamornet_predict_keras

    images = np.asarray(source.images[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
    return gamornet_predict_keras(images, os.fspath(model_path), shape, progress=False, reuse_model=False,
                                  engine="keras")
