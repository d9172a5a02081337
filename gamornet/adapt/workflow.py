"""Adapting GaMorNet to an astronomer's labels: several starting models, optional cross-validation.

:func:`adapt` runs one transfer-learning run per starting model on the same
data, split and seed, keeps the start that validates best, and writes the
files described in its docstring; :func:`resume_adapt` continues an
interrupted adaptation (finished runs are not trained again, the interrupted
one continues from its last completed epoch).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gamornet.adapt.files import (
    CV_SUMMARY_FILE,
    FINAL_DIR,
    OOF_FILE,
    RUNS_DIR,
    SELECTION_FILE,
    SETTINGS_FILE,
    copy_file,
    read_json,
    write_json,
)
from gamornet.adapt.folds import check_folds, stratified_folds
from gamornet.adapt.report import write_report
from gamornet.adapt.runs import (
    TL_OPTIONS,
    best_epoch,
    check_models,
    fetch_starts,
    predict_rows,
    start_names,
    start_policy,
    train_run,
)
from gamornet.adapt.summary import ACCURACY_DEFINITION, aggregate, oof_table, scores
from gamornet.core.files import make_output_dir
from gamornet.core.network import CLASS_NAMES
from gamornet.core.run_files import FINAL_MODEL_FILE, STATE_FILE
from gamornet.core.tables import write_table
from gamornet.core.validation import check_input_shape, check_positive_int

__all__ = ["AdaptResult", "adapt", "resume_adapt", "FINALS"]

#: Where the final model of a cross-validated adaptation comes from.
FINALS: tuple[str, ...] = ("all", "best-fold")
_SINGLE_CRITERION = "highest validation accuracy (val_accuracy of metrics.csv, at the best epoch of each run)"
_CV_CRITERION = "highest mean cross-validated accuracy (" + ACCURACY_DEFINITION + ", averaged over the folds)"
_TIES = "equal values: the first start given"


@dataclass
class AdaptResult:
    """What :func:`adapt` produced.

    Attributes
    ----------
    output : pathlib.Path
        The output folder.
    trained_model : pathlib.Path
        ``output/trained_model.keras``.
    chosen : str
        Name of the start kept.
    message : str
        Which start was chosen and why (as printed).
    selection : dict
        The content of ``selection.json``.
    cv_summary : dict or None
        The content of ``cv_summary.json`` (None without folds).
    oof_predictions : astropy.table.Table or None
        The out-of-fold predictions of the chosen start (None without folds).
    report : pathlib.Path
        ``output/report.html``.
    """

    output: Path
    trained_model: Path
    chosen: str
    message: str
    selection: dict
    cv_summary: dict | None
    oof_predictions: Any
    report: Path


@dataclass
class _Data:
    source: Any  # gamornet.data.ArraySource of all the labelled images
    ids: np.ndarray
    true: np.ndarray  # class names
    shape: tuple
    images: Any  # what the gallery is given: DATA's path, or the array


def _say(verbose, text: str) -> None:
    if verbose:
        print(text, flush=True)


# --------------------------------------------------------------------------- checks and data


def _check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(TL_OPTIONS))
    if unknown:
        raise TypeError(f"adapt() got unknown transfer-learning options {unknown}; known: {list(TL_OPTIONS)}. "
                        f"Received: {', '.join(f'{k}={options[k]!r}' for k in unknown)}")
    options = {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in options.items()}
    try:
        json.dumps(options)
    except TypeError:
        raise TypeError(f"The transfer-learning options must be plain values (numbers, strings, lists, dicts) so that "
                        f"a resumed adaptation can reuse them. Received: {options!r}") from None
    return options


def _check_settings(models, folds, final, seed, validation_fraction, input_shape, options) -> dict:
    """The recorded settings of an adaptation, every argument checked (nothing is read or trained yet)."""
    models = check_models(models)
    if folds is not None:
        check_folds(folds, [])
    if final not in FINALS:
        raise ValueError(f"`final` must be one of {list(FINALS)}. Received: final={final!r}")
    if final != "all" and folds is None:
        raise ValueError(f"`final='{final}'` needs cross-validation (`folds`). Received: final={final!r}, folds=None")
    if seed is None:
        seed = secrets.randbelow(2**31)
    check_positive_int(seed, "seed", minimum=0)
    if folds is None and (isinstance(validation_fraction, bool) or not isinstance(validation_fraction, (int, float))
                          or not 0 < validation_fraction < 1):
        raise ValueError(f"`validation_fraction` must be in (0, 1) (without folds the starts are compared on a "
                         f"validation set). Received: validation_fraction={validation_fraction!r}")
    shape = None if input_shape is None else list(check_input_shape(input_shape))
    return {"format": 1, "models": models, "starts": start_names(models), "folds": folds, "final": final,
            "seed": int(seed), "validation_fraction": float(validation_fraction), "input_shape": shape,
            "options": _check_options(options)}


def _ids(data, catalog, n: int) -> np.ndarray:
    """Galaxy ids: the catalogue's ``id`` column (a ``gamornet simulate`` folder's by default), else the row."""
    from astropy.table import Table

    table = catalog if hasattr(catalog, "colnames") else None
    if catalog is None and isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        catalog = os.path.join(data, "catalog.ecsv")
    if isinstance(catalog, (str, os.PathLike)) and os.path.isfile(catalog):
        table = Table.read(os.fspath(catalog))
    if table is not None and "id" in table.colnames and len(table) == n:
        return np.asarray(table["id"])
    return np.arange(n)


def _open_data(data, catalog, input_shape) -> _Data:
    """Open DATA and its labels (all checked; images memory-mapped when on disk)."""
    from gamornet import data as gdata

    if isinstance(data, (str, os.PathLike)):
        source = gdata.open_training_data(data, catalog, "data")
        images = os.path.abspath(data)
    else:
        array = data if isinstance(data, np.ndarray) else np.asarray(data)
        if array.ndim != 4:
            raise ValueError(f"`data` must be a gamornet simulate folder, a .npy stack or an array (N, H, W, C). "
                             f"Received: data of shape {array.shape}")
        source = gdata.as_source(array, catalog, tuple(array.shape[1:]), "training")
        images = array
    shape = check_input_shape(tuple(input_shape)) if input_shape is not None else tuple(source.image_shape)
    if tuple(source.image_shape) != shape:
        raise ValueError(f"`data` images must have the input shape {shape}. Received: shape={source.image_shape}")
    true = np.asarray(CLASS_NAMES)[np.argmax(source.labels, axis=1)]
    return _Data(source, _ids(data, catalog, len(source)), true, shape, images)


def _fingerprint(d: _Data) -> dict:
    return {"n_images": len(d.source), "labels_sha256": hashlib.sha256(
        np.ascontiguousarray(d.source.labels, dtype=np.float32).tobytes()).hexdigest()}


def _input_record(value) -> str | None:
    return os.path.abspath(value) if isinstance(value, (str, os.PathLike)) else None


# --------------------------------------------------------------------------- public functions


def adapt(data, catalog=None, models=("SDSS_sim", "SDSS_tl"), output="adapted", *, folds: int | None = None,
          final: str = "all", seed: int | None = None, validation_fraction: float = 0.1, input_shape=None,
          verbose=1, callbacks=None, **tl_options) -> AdaptResult:
    """Transfer-learn from several starting models (optionally cross-validated) and keep the best.

    One transfer-learning run per start, on the same data, the same split and
    the same seed, as the GaMorNet handbook advises for data near the
    published models' (start from both the simulation-only and the final
    model and keep the one of highest validation accuracy).

    - Without ``folds``: a random ``validation_fraction`` of the galaxies
      validates (the split of ``gamornet tl``); the run of each start is
      ``output/runs/<start>/``; the start of highest validation accuracy
      (``val_accuracy`` of its ``metrics.csv``, best epoch) is kept and its
      ``trained_model.keras`` copied to ``output/trained_model.keras``.
    - With ``folds=K``: the galaxies are dealt to K folds stratified by label
      (:func:`gamornet.adapt.stratified_folds`, seeded); for each start, run
      ``output/runs/<start>/fold_<k>/`` trains on the other K-1 folds and
      validates on fold k, and its out-of-fold predictions are fold k's
      galaxies predicted by that run's final model (the one saved as its
      ``trained_model.keras``; with ``early_stopping``, the weights of its
      best epoch).  The start of highest mean cross-validated accuracy is
      kept; the final model is then trained on all the galaxies from that
      start with the same settings (``final="all"``, in ``output/final/``)
      or is the kept start's best fold's model (``final="best-fold"``).

    Files in ``output``: ``adapt.json`` (the settings, for
    :func:`resume_adapt`), ``runs/``, ``trained_model.keras``,
    ``selection.json`` (each start's validation figures, the start chosen and
    the criterion), ``report.html`` (learning curves, tables, figures; opens
    from disk) and, with folds, ``oof_predictions.ecsv`` (every labelled
    galaxy once: ``id``, ``row``, ``fold``, ``start``, ``p_disk``,
    ``p_indeterminate``, ``p_bulge``, ``label`` predicted with the start's
    default threshold policy, ``true_label``; of the chosen start, each
    start's own in ``runs/<start>/``), ``cv_summary.json`` (per fold and
    mean / standard deviation of each start), ``confusion_matrix.png``,
    ``threshold_sweep.png`` and ``mistakes.html`` (a gallery of the
    out-of-fold mistakes, from :func:`gamornet.gallery.make_gallery`).

    Parameters
    ----------
    data : str, os.PathLike or numpy.ndarray
        A ``gamornet simulate`` folder, a ``.npy`` stack (read memory-mapped)
        or an array ``(N, H, W, C)``.
    catalog : str, os.PathLike, astropy.table.Table or array_like, optional
        The labels (a table with a ``label`` column, class names or one-hot
        rows; see :func:`gamornet.data.load_labels`); default a folder's
        ``catalog.ecsv``.  Its ``id`` column, if any, names the galaxies in the
        tables (else the row number).
    models : sequence of str
        Starting models: published names (``SDSS_sim``, ``SDSS_tl``,
        ``CANDELS_sim``, ``CANDELS_tl``) or model files.  A start's folder is
        its published name or file stem, made unique.
    output : str or os.PathLike
        Output folder; one that already holds a run is refused.
    folds : int, optional
        Number of cross-validation folds (>= 2, at most the number of
        galaxies of any class present).
    final : {"all", "best-fold"}
        With folds: where the final model comes from.
    seed : int, optional
        Seed of the split or folds, of the initialisation of layers not
        loaded, of shuffling and augmentation (default random, recorded).
    validation_fraction : float
        Without folds: part of the galaxies kept for validation.
    input_shape : str or tuple, optional
        Default: the images' shape.
    verbose : {0, 1, 2}
        Progress of each run (as for :func:`gamornet.keras_module.gamornet_tl_keras`)
        and the messages of the adaptation (0: silent).
    callbacks : list of keras.callbacks.Callback, optional
        Extra callbacks of every run (not recorded: a resumed adaptation runs without them).
    **tl_options
        Options of :func:`gamornet.keras_module.gamornet_tl_keras` (``epochs``,
        ``lr``, ``batch_size``, ``load_layers_bools``, ``trainable_bools``,
        ``early_stopping``, ...; see :data:`gamornet.adapt.runs.TL_OPTIONS`),
        the same for every run, recorded.

    Returns
    -------
    AdaptResult

    Raises
    ------
    ValueError, TypeError, FileNotFoundError, FileExistsError
        Before anything is trained: for an unknown starting model, a fold
        count out of range, missing labels, an unknown option, or an output
        folder that already holds a run.
    """
    settings = _check_settings(models, folds, final, seed, validation_fraction, input_shape, tl_options)
    d = _open_data(data, catalog, settings["input_shape"])
    check_folds(folds, np.argmax(d.source.labels, axis=1))
    out = Path(output)
    for name in (SETTINGS_FILE, STATE_FILE):
        if (out / name).is_file():
            raise FileExistsError(f"`output` already holds a run (continue it with resume_adapt / gamornet tl "
                                  f"--resume {out}, or choose another folder). Received: output={os.fspath(output)!r}")
    fetch_starts(settings["models"], verbose)
    make_output_dir(out)
    settings.update(data=_input_record(data), catalog=_input_record(catalog),
                    catalog_in_memory=catalog is not None and _input_record(catalog) is None, **_fingerprint(d))
    write_json(out / SETTINGS_FILE, settings)
    return _execute(d, settings, out, verbose, callbacks)


def resume_adapt(output, data=None, catalog=None, *, epochs: int | None = None, verbose=1,
                 callbacks=None) -> AdaptResult:
    """Continue the adaptation in ``output`` with its recorded settings.

    Finished runs are not trained again; an interrupted run continues from
    its last completed epoch (see ``resume`` of
    :func:`gamornet.keras_module.gamornet_tl_keras`), so the result equals
    that of an uninterrupted adaptation.

    Parameters
    ----------
    output : str or os.PathLike
        Folder of an adaptation (holding ``adapt.json``).
    data, catalog : optional
        Needed only where the adaptation was given in-memory arrays or
        tables; default the recorded paths.  They must hold the same labels.
    epochs : int, optional
        Raise the number of epochs of every run.
    verbose, callbacks
        As for :func:`adapt`.
    """
    out = Path(output)
    if not (out / SETTINGS_FILE).is_file():
        raise FileNotFoundError(f"`output` must be the folder of an adaptation (with {SETTINGS_FILE}). "
                                f"Received: output={os.fspath(output)!r}")
    settings = read_json(out / SETTINGS_FILE)
    data = settings["data"] if data is None else data
    if data is None or (catalog is None and settings.get("catalog_in_memory")):
        raise ValueError(f"The adaptation in {out} was given in-memory data or labels: pass them again. "
                         f"Received: data={'None' if data is None else 'given'}, catalog={catalog!r}")
    catalog = settings["catalog"] if catalog is None else catalog
    if epochs is not None:
        check_positive_int(epochs, "epochs")
        settings["options"]["epochs"] = int(epochs)
    d = _open_data(data, catalog, settings["input_shape"])
    if _fingerprint(d) != {k: settings.get(k) for k in ("n_images", "labels_sha256")}:
        raise ValueError(f"The data and labels must be those the adaptation in {out} started with. Received: "
                         f"{len(d.source)} images (recorded: {settings.get('n_images')}), labels that differ")
    fetch_starts(settings["models"], verbose)
    write_json(out / SETTINGS_FILE, settings)
    return _execute(d, settings, out, verbose, callbacks)


# --------------------------------------------------------------------------- the runs


def _execute(d: _Data, s: dict, out: Path, verbose, callbacks) -> AdaptResult:
    if s["folds"]:
        selection, cv, table = _cross_validate(d, s, out, verbose, callbacks)
    else:
        selection, cv, table = _single_split(d, s, out, verbose, callbacks), None, None
    copy_file(out / selection["trained_model_from"], out / FINAL_MODEL_FILE)
    write_json(out / SELECTION_FILE, selection)
    report = write_report(out, images=d.images)
    _say(verbose, selection["message"])
    _say(verbose, f"Trained model: {out / FINAL_MODEL_FILE}; report: {report}")
    return AdaptResult(out, out / FINAL_MODEL_FILE, selection["chosen"], selection["message"],
                       read_json(out / SELECTION_FILE), cv, table, report)


def _others(entries: list[dict], chosen: int, key: str, std: str | None = None) -> str:
    parts = [f"{e['name']} {e[key]:.4f}" + (f" ± {e[std]:.4f}" if std and e[std] is not None else "")
             for k, e in enumerate(entries) if k != chosen]
    return f" (others: {', '.join(parts)})" if parts else ""


def _single_split(d: _Data, s: dict, out: Path, verbose, callbacks) -> dict:
    train, val = d.source.split(s["validation_fraction"], s["seed"])
    entries = []
    for i, (model, name) in enumerate(zip(s["models"], s["starts"])):
        _say(verbose, f"Start {i + 1}/{len(s['models'])}: {name} (transfer learning from {model})")
        train_run(model, d.source, train.indices, val.indices, out / RUNS_DIR / name, d.shape, s["options"],
                  s["seed"], verbose, callbacks)
        entries.append({"name": name, "model": model, "run": f"{RUNS_DIR}/{name}",
                        **best_epoch(out / RUNS_DIR / name)})
    k = int(np.argmax([e["best_val_accuracy"] for e in entries]))
    chosen = entries[k]
    message = (f"Chosen start: {chosen['name']}, of highest validation accuracy {chosen['best_val_accuracy']:.4f} "
               f"(epoch {chosen['best_epoch']}){_others(entries, k, 'best_val_accuracy')}.")
    return {"chosen": chosen["name"], "chosen_model": chosen["model"], "criterion": _SINGLE_CRITERION,
            "ties": _TIES, "folds": None, "final": None, "validation_fraction": s["validation_fraction"],
            "n_training": len(train), "n_validation": len(val), "seed": s["seed"], "starts": entries,
            "trained_model_from": f"{RUNS_DIR}/{chosen['name']}/{FINAL_MODEL_FILE}", "message": message}


def _cv_start(d: _Data, s: dict, out: Path, model: str, name: str, fold_of: np.ndarray, verbose, callbacks):
    """The K runs of one start; returns its cross-validation summary and out-of-fold table."""
    policy = start_policy(model, d.shape)
    probs = np.zeros((len(d.source), 3), dtype=np.float32)
    entries = []
    for k in range(1, s["folds"] + 1):
        run = out / RUNS_DIR / name / f"fold_{k}"
        val_rows, train_rows = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        _say(verbose, f"{name}, fold {k}/{s['folds']}: training on {train_rows.size}, validating on "
                      f"{val_rows.size} galaxies")
        path = train_run(model, d.source, train_rows, val_rows, run, d.shape, s["options"], s["seed"], verbose,
                         callbacks)
        probs[val_rows] = predict_rows(path, d.source, val_rows, d.shape)
        entries.append({"fold": k, "run": f"{RUNS_DIR}/{name}/fold_{k}", "n_training": int(train_rows.size),
                        "n_validation": int(val_rows.size), **best_epoch(run),
                        **scores(d.true[val_rows], probs[val_rows], policy)})
    mean, std = aggregate(entries)
    table = oof_table(d.ids, fold_of, name, probs, policy, d.true)
    write_table(table, out / RUNS_DIR / name / OOF_FILE, "output")
    summary = {"model": model, "policy": policy, "folds": entries, "mean": mean, "std": std,
               "pooled": scores(d.true, probs, policy)}
    return summary, table


def _cross_validate(d: _Data, s: dict, out: Path, verbose, callbacks) -> tuple[dict, dict, Any]:
    fold_of = stratified_folds(np.argmax(d.source.labels, axis=1), s["folds"], s["seed"])
    per_start, tables = {}, {}
    for model, name in zip(s["models"], s["starts"]):
        per_start[name], tables[name] = _cv_start(d, s, out, model, name, fold_of, verbose, callbacks)
    entries = [{"name": n, "model": v["model"], "run": f"{RUNS_DIR}/{n}", "policy": v["policy"],
                "mean_accuracy": v["mean"]["accuracy"], "std_accuracy": v["std"]["accuracy"],
                "pooled_accuracy": v["pooled"]["accuracy"],
                "folds": [{k: f[k] for k in ("fold", "accuracy", "best_val_accuracy", "val_loss", "best_epoch")}
                          for f in v["folds"]]} for n, v in per_start.items()]
    k = int(np.argmax([e["mean_accuracy"] for e in entries]))
    chosen = entries[k]
    name = chosen["name"]
    if s["final"] == "all":
        _say(verbose, f"Final model: {name} trained on all {len(d.source)} labelled galaxies")
        train_run(chosen["model"], d.source, np.arange(len(d.source)), None, out / FINAL_DIR, d.shape, s["options"],
                  s["seed"], verbose, callbacks)
        source, how = f"{FINAL_DIR}/{FINAL_MODEL_FILE}", f"trained on all {len(d.source)} labelled galaxies"
    else:
        b = int(np.argmax([f["accuracy"] for f in per_start[name]["folds"]])) + 1
        source, how = f"{RUNS_DIR}/{name}/fold_{b}/{FINAL_MODEL_FILE}", f"the model of fold {b}, its best fold"
    write_table(tables[name], out / OOF_FILE, "output")
    cv = {"folds": s["folds"], "seed": s["seed"], "accuracy": ACCURACY_DEFINITION, "std": "sample (ddof 1)",
          "chosen": name, "starts": per_start}
    write_json(out / CV_SUMMARY_FILE, cv)
    message = (f"Chosen start: {name}, of highest mean cross-validated accuracy {chosen['mean_accuracy']:.4f} "
               f"± {chosen['std_accuracy']:.4f} over {s['folds']} folds"
               f"{_others(entries, k, 'mean_accuracy', 'std_accuracy')}; final model: {how}.")
    selection = {"chosen": name, "chosen_model": chosen["model"], "criterion": _CV_CRITERION, "ties": _TIES,
                 "folds": s["folds"], "final": s["final"], "seed": s["seed"], "starts": entries,
                 "trained_model_from": source, "message": message}
    return selection, read_json(out / CV_SUMMARY_FILE), tables[name]
