"""Scores of out-of-fold predictions: per fold, mean and standard deviation, and the out-of-fold table."""

from __future__ import annotations

import numpy as np

from gamornet.core.network import CLASS_NAMES
from gamornet.evaluate import confusion_matrix, summary

__all__ = ["ACCURACY_DEFINITION", "scores", "aggregate", "oof_table"]

#: What ``accuracy`` means in the cross-validation summary (the criterion that chooses between starts).
ACCURACY_DEFINITION = ("fraction of the fold's galaxies whose highest probability is their true class (the "
                       "val_accuracy Keras logs), by the fold's final model")


def scores(true_names: np.ndarray, probabilities: np.ndarray, policy: str) -> dict:
    """Scores of predictions against true labels.

    Returns
    -------
    dict
        ``n``; ``accuracy`` (see :data:`ACCURACY_DEFINITION`); ``purity`` and
        ``completeness`` of each class for the labels of ``policy`` (purity:
        true class among those predicted it; completeness: predicted class
        among those truly of it; None where undefined), from
        :func:`gamornet.evaluate.confusion_matrix`; ``summary``:
        :func:`gamornet.evaluate.summary` with ``policy``.
    """
    true = np.asarray(true_names).astype(str)
    probs = np.asarray(probabilities, dtype=np.float64)
    argmax = np.asarray(CLASS_NAMES)[np.argmax(probs, axis=1)]
    counts = confusion_matrix(true, probs, policy).counts
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.diag(counts) / counts.sum(axis=0)
        completeness = np.diag(counts) / counts.sum(axis=1)
    return {"n": int(true.size), "accuracy": float(np.mean(argmax == true)) if true.size else float("nan"),
            "purity": dict(zip(CLASS_NAMES, purity.tolist())),
            "completeness": dict(zip(CLASS_NAMES, completeness.tolist())),
            "summary": summary(true, probs, policy)}


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the defined values (NaN where none / fewer than 2)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return mean, std


def aggregate(folds: list[dict]) -> tuple[dict, dict]:
    """Mean and standard deviation over folds of ``accuracy``, per-class ``purity`` / ``completeness`` and the
    summary's ``accuracy`` / ``completeness``: two dicts of the same keys (folds where a value is undefined left
    out)."""
    mean: dict = {"purity": {}, "completeness": {}}
    std: dict = {"purity": {}, "completeness": {}}
    mean["accuracy"], std["accuracy"] = _stats([f["accuracy"] for f in folds])
    for key in ("purity", "completeness"):
        for c in CLASS_NAMES:
            mean[key][c], std[key][c] = _stats([f[key][c] for f in folds])
    for key in ("accuracy", "completeness"):
        mean[f"policy_{key}"], std[f"policy_{key}"] = _stats([f["summary"][key] for f in folds])
    return mean, std


def oof_table(ids, folds: np.ndarray, start: str, probabilities: np.ndarray, policy: str, true_names: np.ndarray):
    """The out-of-fold table: one row per labelled galaxy, in the order of DATA.

    Columns ``id``, ``row`` (row of DATA), ``fold``, ``start``, ``p_disk``,
    ``p_indeterminate``, ``p_bulge``, ``label`` (predicted with ``policy``,
    recorded in the table's ``policy`` metadata as
    :func:`gamornet.predict_files` does) and ``true_label``.
    """
    from astropy.table import Table

    from gamornet.core.thresholds import classify_probabilities

    probs = np.asarray(probabilities, dtype=np.float32)
    table = Table(meta={"policy": policy, "start": start, "kind": "out-of-fold predictions"})
    table["id"] = ids
    table["row"] = np.arange(len(probs), dtype=np.int64)
    table["fold"] = np.asarray(folds, dtype=np.int64)
    table["start"] = np.full(len(probs), start)
    for j, name in enumerate(CLASS_NAMES):
        table[f"p_{name}"] = probs[:, j]
    table["label"] = classify_probabilities(probs, policy)
    table["true_label"] = np.asarray(true_names).astype(str)
    return table
