"""Scoring classifications against true labels, as in Ghosh et al. (2020).

- :func:`confusion_matrix`: rows are the **true** class, columns the
  **predicted** class, both in the order (disk, indeterminate, bulge).  Besides
  the counts it gives the fractions normalised by predicted class: column ``j``
  of ``fractions`` is the distribution of true classes among galaxies predicted
  ``j`` (each column sums to 1; an empty column is NaN).  So
  ``fractions[0, 0]`` is the disk precision and ``fractions[2, 2]`` the bulge
  precision quoted in the paper (Ghosh et al. 2020).
- :func:`summary`: the paper's headline numbers.
- :func:`threshold_sweep`: accuracy versus completeness as a symmetric
  probability threshold rises (the trade-off of the paper's Figs. 8-9).

True labels may be class names or one-hot rows; predictions may be class names
or ``(N, 3)`` probabilities ``[P_disk, P_indeterminate, P_bulge]``, which are
turned into names with :func:`gamornet.core.thresholds.classify_probabilities` and
a policy.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gamornet.core.files import atomic_path, make_output_dir
from gamornet.core.network import CLASS_NAMES
from gamornet.core.tables import read_table
from gamornet.core.thresholds import POLICIES, ThresholdPolicy, check_probabilities, classify_probabilities, get_policy

__all__ = [
    "ConfusionMatrix",
    "as_class_labels",
    "confusion_matrix",
    "indeterminate_fraction",
    "summary",
    "threshold_sweep",
    "plot_confusion_matrix",
    "plot_threshold_sweep",
    "evaluate_tables",
    "table_policy",
    "write_report",
]

PROBABILITY_COLUMNS: tuple[str, str, str] = ("p_disk", "p_indeterminate", "p_bulge")
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


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion_matrix(matrix: ConfusionMatrix, path: str | os.PathLike, title: str | None = None) -> Path:
    """PNG of a confusion matrix: colour and text give the column (predicted-class) fractions, with counts."""
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(matrix.fractions), vmin=0, vmax=1, cmap="Blues")
    for i in range(3):
        for j in range(3):
            frac = matrix.fractions[i, j]
            text = "n/a" if np.isnan(frac) else f"{100 * frac:.1f}%"
            ax.text(j, i, f"{text}\n({matrix.counts[i, j]})", ha="center", va="center",
                    color="white" if np.nan_to_num(frac) > 0.6 else "black")
    ax.set_xticks(range(3), matrix.classes)
    ax.set_yticks(range(3), matrix.classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (columns sum to 1)", fontsize=10)
    fig.colorbar(image, ax=ax, label="fraction of predicted class")
    fig.tight_layout()
    return _save_png(fig, path)


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG through a temporary file renamed into place (never a truncated PNG)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def plot_threshold_sweep(sweep, path: str | os.PathLike, title: str | None = None) -> Path:
    """PNG of a :func:`threshold_sweep` table: accuracy, precisions and indeterminate fraction versus threshold."""
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    t = np.asarray(sweep["threshold"])
    for column, style in (("accuracy", "k-o"), ("disk_precision", "b--"), ("bulge_precision", "r--"),
                          ("indeterminate_fraction", "g-s")):
        ax.plot(t, np.asarray(sweep[column]), style, label=column.replace("_", " "), markersize=4)
    ax.set_xlabel("probability threshold")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Accuracy vs completeness")
    fig.tight_layout()
    return _save_png(fig, path)


# --------------------------------------------------------------------------- command line


def _true_labels_of(catalog) -> np.ndarray:
    if "label" in catalog.colnames:
        return as_class_labels(np.asarray(catalog["label"]).astype(str), "CATALOG label")
    if "bt" in catalog.colnames:
        bt = np.asarray(catalog["bt"], dtype=float)
        return np.asarray(CLASS_NAMES, dtype="<U13")[np.where(bt < 0.45, 0, np.where(bt <= 0.55, 1, 2))]
    raise ValueError(f"CATALOG needs a `label` or `bt` column. Received: columns {catalog.colnames}")


def _catalog_rows(pred_ids, catalog_ids) -> np.ndarray:
    """Catalogue row of each prediction id (equal ids, or a simulated set's file naming; see evaluate_tables)."""
    from gamornet.simulate import galaxy_id

    where = {str(v): k for k, v in enumerate(catalog_ids)}
    rows, absent = [], []
    for value in (str(v) for v in pred_ids):
        row = where.get(value)
        if row is None:
            index = galaxy_id(value)
            row = None if index is None else where.get(str(index))
        if row is None:
            absent.append(value)
        rows.append(row)
    if absent:
        raise ValueError(f"PREDICTIONS ids missing from CATALOG. Received: {len(absent)} such ids, e.g. "
                         f"{absent[:5]} (CATALOG ids e.g. {[str(v) for v in catalog_ids[:3]]})")
    return np.asarray(rows, dtype=np.int64)


def evaluate_tables(predictions, catalog, policy: str | ThresholdPolicy | None = None):
    """Probabilities and true labels of matching rows (joined on ``id`` when both tables have it).

    A prediction id matches the catalogue row of the same id; failing that,
    the ids :func:`gamornet.predict_files` gives the images of a simulated
    set (``gal_NNNNNN.fits``, ``images.npy:N``, with or without a directory)
    match catalogue id ``N`` (see :func:`gamornet.simulate.galaxy_id`).
    ``policy`` is not used here (see :func:`table_policy`).

    Raises
    ------
    ValueError
        For missing probability columns, rows that are not probabilities,
        prediction ids absent from the catalogue, or tables of different
        lengths without ids.
    """
    missing = [c for c in PROBABILITY_COLUMNS if c not in predictions.colnames]
    if missing:
        raise ValueError(f"PREDICTIONS needs columns {list(PROBABILITY_COLUMNS)}. Received: columns "
                         f"{predictions.colnames}")
    probs = np.column_stack([np.asarray(predictions[c], dtype=float) for c in PROBABILITY_COLUMNS])
    check_probabilities(probs, "PREDICTIONS probabilities")
    true = _true_labels_of(catalog)
    if "id" in predictions.colnames and "id" in catalog.colnames:
        true = true[_catalog_rows(predictions["id"], catalog["id"])]
    elif len(true) != len(probs):
        raise ValueError(f"without `id` columns PREDICTIONS and CATALOG must have the same rows. Received: "
                         f"{len(probs)} and {len(true)} rows")
    return probs, true


#: Policy used for a table without ``policy`` metadata (e.g. a ``.csv`` table without its sidecar) when none is given.
DEFAULT_POLICY = "keras_sdss"


def table_policy(predictions, policy: str | ThresholdPolicy | None = None) -> ThresholdPolicy:
    """The threshold policy to score a prediction table with.

    ``policy`` if given; else the ``policy`` metadata :func:`gamornet.predict_files`
    writes (the policy its labels were made with); else :data:`DEFAULT_POLICY`.

    Raises
    ------
    ValueError
        If the metadata names a policy that is not a published one (thresholds
        chosen by the user), so that ``policy`` must be given.
    """
    if policy is not None:
        return get_policy(policy)
    meta = {str(k).lower(): v for k, v in predictions.meta.items()}
    name = meta.get("policy")
    if name is None:
        return get_policy(DEFAULT_POLICY)
    if str(name) not in POLICIES:
        raise ValueError(f"PREDICTIONS were labelled with the threshold policy {name!r}, whose thresholds the table "
                         f"does not record: pass --policy (one of {sorted(POLICIES)}). Received: policy={name!r}")
    return get_policy(str(name))


def write_report(predictions, catalog, output, policy: str | ThresholdPolicy | None = None) -> dict[str, Any]:
    """Score a predictions table against a catalogue and write the report files into ``output``.

    Files: ``confusion_matrix.png``, ``threshold_sweep.png``,
    ``threshold_sweep.ecsv`` and ``summary.json``, each written atomically.

    Parameters
    ----------
    predictions, catalog : str or os.PathLike
        Tables (see :func:`evaluate_tables`) in any format
        :func:`gamornet.core.tables.read_table` reads: those
        :func:`gamornet.predict_files` writes (``.ecsv``, ``.csv`` with its
        metadata sidecar, ``.fits``, ``.parquet``) and any other astropy reads.
    output : str or os.PathLike
        Report folder (created if missing).
    policy : str or ThresholdPolicy, optional
        Default: the policy recorded in ``predictions`` (:func:`table_policy`).

    Returns
    -------
    dict
        The summary (NaN as None) with ``policy``, and ``policy_recorded``:
        whether the table recorded its policy.
    """
    if policy is not None:
        get_policy(policy)  # a bad name fails before any file is read
    predicted = read_table(predictions, "PREDICTIONS")
    rule = table_policy(predicted, policy)
    probs, true = evaluate_tables(predicted, read_table(catalog, "CATALOG"))
    out = Path(make_output_dir(output))
    result = summary(true, probs, rule)
    plot_confusion_matrix(confusion_matrix(true, probs, rule), out / "confusion_matrix.png",
                          title=f"Confusion matrix ({rule.name}; columns sum to 1)")
    sweep = threshold_sweep(probs, true)
    with atomic_path(out / "threshold_sweep.ecsv", suffix=".ecsv") as tmp:
        sweep.write(tmp, format="ascii.ecsv", overwrite=True)
    plot_threshold_sweep(sweep, out / "threshold_sweep.png")
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
    with atomic_path(out / "summary.json", suffix=".json") as tmp, open(tmp, "w") as f:
        f.write(json.dumps(clean, indent=2) + "\n")
    recorded = policy is not None or "policy" in {str(k).lower() for k in predicted.meta}
    return {**clean, "policy": rule.name, "policy_recorded": recorded}
