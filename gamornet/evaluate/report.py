"""Prediction tables scored against catalogues: true labels, matching rows, the policy, the report files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from gamornet import __version__
from gamornet.core.files import atomic_path, make_output_dir
from gamornet.core.labels import labels_from_bt
from gamornet.core.tables import file_sha256, read_table
from gamornet.core.thresholds import (
    POLICIES,
    POLICY_FILE,
    ThresholdPolicy,
    check_probabilities,
    get_policy,
    policy_from_meta,
    save_policy,
)
from gamornet.evaluate.choose import check_target, choose_thresholds, class_scores
from gamornet.evaluate.plots import plot_confusion_matrix, plot_threshold_sweep
from gamornet.evaluate.scores import as_class_labels, confusion_matrix, summary, threshold_sweep

__all__ = ["PROBABILITY_COLUMNS", "DEFAULT_POLICY", "true_labels", "evaluate_tables", "table_policy", "write_report"]

PROBABILITY_COLUMNS: tuple[str, str, str] = ("p_disk", "p_indeterminate", "p_bulge")
#: Policy used for a table without ``policy`` metadata (e.g. a ``.csv`` table without its sidecar) when none is given.
DEFAULT_POLICY = "keras_sdss"


def true_labels(table, name: str = "table") -> np.ndarray:
    """True class names of a table's rows: its ``label`` column, or else its ``bt`` column.

    ``label`` holds class names (any case); ``bt`` bulge-to-total ratios,
    turned into classes by :func:`gamornet.core.labels.labels_from_bt`
    (disk below 0.45, bulge above 0.55, indeterminate from one to the other).

    Parameters
    ----------
    table : astropy.table.Table
        A catalogue (e.g. the ``catalog.ecsv`` of ``gamornet simulate``).
    name : str
        Name of the table in error messages.

    Returns
    -------
    numpy.ndarray of str, shape (len(table),)

    Raises
    ------
    ValueError
        Without either column, or for values that are not class names or
        ratios in [0, 1].
    """
    if "label" in table.colnames:
        return as_class_labels(np.asarray(table["label"]).astype(str), f"{name} label")
    if "bt" in table.colnames:
        return labels_from_bt(table["bt"], f"{name} bt")
    raise ValueError(f"{name} needs a `label` or `bt` column. Received: columns {table.colnames}")


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
    True labels come from the catalogue's ``label`` or ``bt`` column
    (:func:`true_labels`).  ``policy`` is not used here (see
    :func:`table_policy`).

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
    true = true_labels(catalog, "CATALOG")
    if "id" in predictions.colnames and "id" in catalog.colnames:
        true = true[_catalog_rows(predictions["id"], catalog["id"])]
    elif len(true) != len(probs):
        raise ValueError(f"without `id` columns PREDICTIONS and CATALOG must have the same rows. Received: "
                         f"{len(probs)} and {len(true)} rows")
    return probs, true


def table_policy(predictions, policy: str | ThresholdPolicy | None = None) -> ThresholdPolicy:
    """The threshold policy to score a prediction table with.

    ``policy`` if given; else the policy :func:`gamornet.predict_files`
    records in the table's metadata (``policy`` and ``policy_thresholds``:
    the policy its labels were made with, a policy file's included; see
    :func:`gamornet.core.thresholds.policy_from_meta`); else
    :data:`DEFAULT_POLICY`.

    Raises
    ------
    ValueError
        If the metadata names a policy that is not a published one without
        recording its thresholds, so that ``policy`` must be given.
    """
    if policy is not None:
        return get_policy(policy)
    recorded = policy_from_meta(predictions.meta)
    if recorded is not None:
        return recorded
    name = {str(k).lower(): v for k, v in predictions.meta.items()}.get("policy")
    if name is None:
        return get_policy(DEFAULT_POLICY)
    raise ValueError(f"PREDICTIONS were labelled with the threshold policy {name!r}, whose thresholds the table "
                     f"does not record: pass --policy (one of {sorted(POLICIES)}, or a policy .json file). "
                     f"Received: policy={name!r}")


def _save_chosen(rule: ThresholdPolicy, probs, true, target: tuple[str, float], tables: dict, path: Path) -> dict:
    """Write the chosen ``rule`` to ``path`` with its provenance; what the report says of it."""
    kind, value = target
    achieved = class_scores(probs, true, rule)
    provenance = {
        "method": f"gamornet.evaluate.choose_thresholds: per class, the {'lowest' if kind == 'purity' else 'highest'}"
                  f" threshold (of the distinct probabilities >= 0.5) with {kind} >= the target",
        f"target_{kind}": value,
        "n_galaxies": len(probs),
        "achieved": achieved,
        **{k: os.path.abspath(v) for k, v in tables.items()},
        **{f"{k}_sha256": file_sha256(v) for k, v in tables.items()},
        "gamornet_version": __version__,
    }
    save_policy(rule, path, **provenance)
    return {f"target_{kind}": value, "policy_file": str(path),
            "thresholds": {"disk_min": rule.disk_min, "bulge_min": rule.bulge_min}, "achieved": achieved}


def write_report(predictions, catalog, output, policy: str | ThresholdPolicy | None = None,
                 target_purity: float | None = None, target_completeness: float | None = None) -> dict[str, Any]:
    """Score a predictions table against a catalogue and write the report files into ``output``.

    Files: ``confusion_matrix.png``, ``threshold_sweep.png``,
    ``threshold_sweep.ecsv`` and ``summary.json``, each written atomically;
    with a target, also ``policy.json``.

    Parameters
    ----------
    predictions, catalog : str or os.PathLike
        Tables (see :func:`evaluate_tables`) in any format
        :func:`gamornet.core.tables.read_table` reads: those
        :func:`gamornet.predict_files` writes (``.ecsv``, ``.csv`` with its
        metadata sidecar, ``.fits``, ``.parquet``) and any other astropy reads.
    output : str or os.PathLike
        Report folder (created if missing).
    policy : str, os.PathLike or ThresholdPolicy, optional
        Default: the policy recorded in ``predictions`` (:func:`table_policy`).
    target_purity, target_completeness : float, optional
        At most one, in (0, 1], and not with ``policy``: choose the thresholds
        on these galaxies (:func:`choose_thresholds`), write them with their
        provenance to ``output/policy.json``
        (:func:`gamornet.core.thresholds.save_policy`), and score with them.

    Returns
    -------
    dict
        The summary (NaN as None) with ``policy``, and ``policy_recorded``:
        whether the table recorded its policy (True with a target).  With a
        target also ``chosen``: ``target_purity`` or ``target_completeness``,
        ``policy_file``, ``thresholds`` and ``achieved`` (per class: threshold,
        purity, completeness, n_called, n_true).
    """
    target = None
    if target_purity is not None or target_completeness is not None:
        target = check_target(target_purity, target_completeness)
        if policy is not None:
            raise ValueError(f"give a policy or a target to choose one, not both. Received: policy={policy!r}, "
                             f"target_{target[0]}={target[1]!r}")
    if policy is not None:
        get_policy(policy)  # a bad name fails before any file is read
    predicted = read_table(predictions, "PREDICTIONS")
    rule = table_policy(predicted, policy) if target is None else None
    probs, true = evaluate_tables(predicted, read_table(catalog, "CATALOG"))
    if target is not None:  # an unreachable target fails before anything is written
        rule = choose_thresholds(probs, true, **{f"target_{target[0]}": target[1]})
    out = Path(make_output_dir(output))
    chosen = None if target is None else _save_chosen(
        rule, probs, true, target, {"predictions": predictions, "catalog": catalog}, out / POLICY_FILE)
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
    recorded = policy is not None or target is not None or "policy" in {str(k).lower() for k in predicted.meta}
    extra = {} if chosen is None else {"chosen": chosen}
    return {**clean, "policy": rule.name, "policy_recorded": recorded, **extra}
