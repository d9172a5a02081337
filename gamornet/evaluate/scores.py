"""Scores of classifications against true labels: confusion matrix, summary, threshold sweep."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gamornet.core.network import CLASS_NAMES
from gamornet.core.thresholds import ThresholdPolicy, check_probabilities, classify_probabilities, get_policy

__all__ = ["ConfusionMatrix", "DEFAULT_THRESHOLDS", "as_class_labels", "confusion_matrix", "indeterminate_fraction",
           "summary", "threshold_sweep"]

DEFAULT_THRESHOLDS: np.ndarray = np.round(np.linspace(0.35, 0.95, 13), 2)


class ConfusionMatrix(NamedTuple):
    """Counts and predicted-class-normalised fractions; rows true class, columns predicted class."""

    counts: np.ndarray
    fractions: np.ndarray
    classes: tuple[str, str, str] = CLASS_NAMES


def as_class_labels(labels, name: str = "labels", policy: str | ThresholdPolicy | None = None) -> np.ndarray:
    """Class names (``disk`` / ``indeterminate`` / ``bulge``) from names, indices, one-hot rows or probabilities.

    Parameters
    ----------
    labels : array_like
        Strings (any case), integers 0/1/2, or ``(N, 3)`` rows.
    name : str
        Argument name for error messages.
    policy : str or ThresholdPolicy, optional
        Without a policy, ``(N, 3)`` rows must be one-hot; with one, they are
        probabilities classified by the policy.

    Raises
    ------
    ValueError
        For unknown names, out-of-range indices or a wrong shape.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind in "USO":
        names = np.char.lower(np.char.strip(arr.astype(str)))
        bad = ~np.isin(names, CLASS_NAMES)
        if arr.ndim != 1 or bad.any():
            shown = names[bad][:5].tolist() if arr.ndim == 1 else f"shape {arr.shape}"
            raise ValueError(f"`{name}` must be a 1-D array of {list(CLASS_NAMES)}. Received: {shown}")
        return names.astype("<U13")
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 2):
            raise ValueError(f"`{name}` class indices must be 0, 1 or 2. Received: {np.unique(arr)[:10].tolist()}")
        return np.asarray(CLASS_NAMES, dtype="<U13")[arr]
    if arr.ndim == 2 and arr.shape[1] == 3 and arr.dtype.kind in "iufb":
        if policy is not None:
            return classify_probabilities(arr, policy)
        onehot = np.isin(arr, (0, 1)).all(axis=1) & (arr.sum(axis=1) == 1)
        if not onehot.all():
            rows = np.flatnonzero(~onehot)[:3]
            raise ValueError(f"`{name}` rows must be one-hot. Received: rows {rows.tolist()} = {arr[rows].tolist()}")
        return np.asarray(CLASS_NAMES, dtype="<U13")[np.argmax(arr, axis=1)]
    raise ValueError(
        f"`{name}` must be class names, class indices or (N, 3) rows. Received: dtype={arr.dtype}, shape={arr.shape}"
    )


def _pair(true_labels, predictions, policy) -> tuple[np.ndarray, np.ndarray]:
    true = as_class_labels(true_labels, "true_labels")
    pred = as_class_labels(predictions, "predictions", policy=policy)
    if true.shape != pred.shape:
        raise ValueError(
            f"`true_labels` and `predictions` must describe the same galaxies. Received: {len(true)} true labels "
            f"and {len(pred)} predictions"
        )
    return true, pred


def confusion_matrix(true_labels, predicted_labels, policy: str | ThresholdPolicy = "keras_sdss") -> ConfusionMatrix:
    """Confusion matrix: ``counts[i, j]`` = galaxies of true class ``i`` predicted ``j``.

    Classes are ordered (disk, indeterminate, bulge).  ``fractions`` divides
    each column by its total (galaxies predicted that class), so columns sum
    to 1; columns with no galaxies are NaN.  ``policy`` is used only when
    ``predicted_labels`` are probabilities.
    """
    true, pred = _pair(true_labels, predicted_labels, policy)
    index = {c: k for k, c in enumerate(CLASS_NAMES)}
    counts = np.zeros((3, 3), dtype=np.int64)
    np.add.at(counts, ([index[c] for c in true], [index[c] for c in pred]), 1)
    totals = counts.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(totals > 0, counts / totals, np.nan)
    return ConfusionMatrix(counts, fractions)


def indeterminate_fraction(predicted_labels, policy: str | ThresholdPolicy = "keras_sdss") -> float:
    """Fraction of galaxies predicted ``indeterminate``."""
    pred = as_class_labels(predicted_labels, "predicted_labels", policy=policy)
    return float(np.mean(pred == CLASS_NAMES[1])) if pred.size else math.nan


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def summary(true_labels, predictions, policy: str | ThresholdPolicy = "keras_sdss") -> dict[str, Any]:
    """The paper's headline numbers.

    Returns
    -------
    dict
        ``n``; ``n_classified`` (predicted disk or bulge);
        ``indeterminate_fraction`` (predicted indeterminate / n);
        ``completeness`` (``n_classified / n``); ``accuracy`` (fraction of the
        classified galaxies whose true class is the predicted one, so true
        indeterminates predicted disk or bulge count as errors);
        ``disk_precision`` / ``bulge_precision`` (true disk among predicted
        disk, true bulge among predicted bulge); ``disk_recall`` /
        ``bulge_recall`` (predicted disk among true disk, etc.); ``policy``
        (name, or ``None`` for label input) and ``counts`` (the confusion
        matrix as nested lists).  Undefined ratios are NaN.
    """
    matrix = confusion_matrix(true_labels, predictions, policy)
    c = matrix.counts
    n = int(c.sum())
    classified = int(c[:, 0].sum() + c[:, 2].sum())
    is_probabilities = np.asarray(predictions).ndim == 2
    return {
        "n": n,
        "n_classified": classified,
        "indeterminate_fraction": _ratio(c[:, 1].sum(), n),
        "completeness": _ratio(classified, n),
        "accuracy": _ratio(c[0, 0] + c[2, 2], classified),
        "disk_precision": _ratio(c[0, 0], c[:, 0].sum()),
        "bulge_precision": _ratio(c[2, 2], c[:, 2].sum()),
        "disk_recall": _ratio(c[0, 0], c[0].sum()),
        "bulge_recall": _ratio(c[2, 2], c[2].sum()),
        "policy": get_policy(policy).name if is_probabilities else None,
        "counts": c.tolist(),
    }


def threshold_sweep(probabilities, true_labels, thresholds=DEFAULT_THRESHOLDS):
    """Accuracy and completeness as a symmetric threshold ``t`` rises.

    A galaxy is disk if ``P_disk >= t`` and ``P_disk > P_bulge``, bulge if
    ``P_bulge >= t`` and ``P_bulge > P_disk``, else indeterminate (for
    ``t > 0.5`` this is simply ``P >= t``).

    Returns
    -------
    astropy.table.Table
        One row per threshold: ``threshold``, ``n_disk``, ``n_indeterminate``,
        ``n_bulge``, ``indeterminate_fraction``, ``completeness``,
        ``accuracy`` (on the classified galaxies), ``disk_precision``,
        ``bulge_precision``.
    """
    from astropy.table import Table

    p = check_probabilities(probabilities)
    true = as_class_labels(true_labels, "true_labels")
    if len(true) != len(p):
        raise ValueError(f"`true_labels` must have one label per row of `probabilities`. Received: {len(true)} labels "
                         f"for {len(p)} rows")
    t_values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t_values.ndim != 1 or t_values.size == 0 or not np.all((t_values >= 0) & (t_values <= 1)):
        raise ValueError(f"`thresholds` must be probabilities in [0, 1]. Received: thresholds={thresholds!r}")
    rows = []
    for t in t_values:
        pred = np.full(len(p), CLASS_NAMES[1], dtype="<U13")
        pred[(p[:, 0] >= t) & (p[:, 0] > p[:, 2])] = CLASS_NAMES[0]
        pred[(p[:, 2] >= t) & (p[:, 2] > p[:, 0])] = CLASS_NAMES[2]
        s = summary(true, pred)
        c = np.asarray(s["counts"])
        rows.append((t, c[:, 0].sum(), c[:, 1].sum(), c[:, 2].sum(), s["indeterminate_fraction"], s["completeness"],
                     s["accuracy"], s["disk_precision"], s["bulge_precision"]))
    names = ("threshold", "n_disk", "n_indeterminate", "n_bulge", "indeterminate_fraction", "completeness",
             "accuracy", "disk_precision", "bulge_precision")
    return Table(rows=rows, names=names, dtype=[float, int, int, int, float, float, float, float, float])
