"""``report.html``: one self-contained page (figures embedded as PNG data) describing an adaptation."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from gamornet.adapt.files import (
    CONFUSION_FILE,
    CV_SUMMARY_FILE,
    FINAL_DIR,
    MISTAKES_FILE,
    OOF_FILE,
    REPORT_FILE,
    SELECTION_FILE,
    SWEEP_FILE,
    read_json,
)
from gamornet.adapt.runs import run_metrics
from gamornet.core.files import atomic_path
from gamornet.core.network import CLASS_NAMES

__all__ = ["write_report", "learning_curve_png", "MAX_MISTAKES_LISTED"]

#: Most confident out-of-fold mistakes listed in the report's table.
MAX_MISTAKES_LISTED = 30

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}td.t{text-align:left}
tr.chosen{background:#e8f4e8}img{max-width:100%}iframe{width:100%;height:40em;border:1px solid #bbb}"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else _e(value)


def _table(headers: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cells = "".join(f'<td class="t">{_e(v)}</td>' if isinstance(v, str) else f"<td>{_num(v)}</td>" for v in row)
        cls = f' class="{_e(classes[k])}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _png_tag(data: bytes, alt: str, cls: str, run: str | None = None) -> str:
    extra = f' data-run="{_e(run)}"' if run is not None else ""
    return (f'<img class="{cls}"{extra} alt="{_e(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def learning_curve_png(rows: list[dict], title: str) -> bytes:
    """PNG of a run's loss and accuracy per epoch, training and validation (rows of its ``metrics.csv``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.0), dpi=90)
    FigureCanvasAgg(fig)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for key, style, label in ((metric, "b-o", "training"), (f"val_{metric}", "r-s", "validation")):
            if rows and all(key in r for r in rows):
                ax.plot(epochs, [r[key] for r in rows], style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _run_folders(selection: dict, out: Path) -> list[str]:
    """Run folders (relative to ``out``) in the order of the starts and folds, then the final run."""
    runs = []
    for start in selection["starts"]:
        folds = start.get("folds")
        runs.extend([f"{start['run']}/fold_{f['fold']}" for f in folds] if folds else [start["run"]])
    if (out / FINAL_DIR).is_dir():
        runs.append(FINAL_DIR)
    return runs


def _selection_section(selection: dict) -> str:
    cv = selection.get("folds") is not None
    if cv:
        headers = ["start", "model", "mean accuracy", "std", "pooled out-of-fold accuracy", "chosen"]
        rows = [[s["name"], s["model"], s["mean_accuracy"], s["std_accuracy"], s["pooled_accuracy"],
                 "yes" if s["name"] == selection["chosen"] else ""] for s in selection["starts"]]
    else:
        headers = ["start", "model", "best validation accuracy", "validation loss", "best epoch", "epochs", "chosen"]
        rows = [[s["name"], s["model"], s["best_val_accuracy"], s["val_loss"], s["best_epoch"], s["epochs"],
                 "yes" if s["name"] == selection["chosen"] else ""] for s in selection["starts"]]
    classes = ["chosen" if s["name"] == selection["chosen"] else "" for s in selection["starts"]]
    return (f"<h2>Starting models</h2><p>{_e(selection['message'])}</p><p>Criterion: {_e(selection['criterion'])}; "
            f"{_e(selection['ties'])}. Trained model: <code>{_e(selection['trained_model_from'])}</code>, copied to "
            f"<code>trained_model.keras</code>.</p>{_table(headers, rows, classes)}")


def _folds_section(cv: dict) -> str:
    parts = [f"<h2>Cross-validation ({_e(cv['folds'])} folds)</h2><p>Accuracy: {_e(cv['accuracy'])}. Purity and "
             "completeness per class use each start's threshold policy.</p>"]
    headers = ["fold", "validation galaxies", "accuracy", "best val. accuracy", "best epoch",
               *[f"{c} purity" for c in CLASS_NAMES], *[f"{c} completeness" for c in CLASS_NAMES]]
    for name, start in cv["starts"].items():
        rows = [[f["fold"], f["n_validation"], f["accuracy"], f["best_val_accuracy"], f["best_epoch"],
                 *[f["purity"][c] for c in CLASS_NAMES], *[f["completeness"][c] for c in CLASS_NAMES]]
                for f in start["folds"]]
        for label in ("mean", "std"):
            s = start[label]
            rows.append([label, "", s["accuracy"], "", "", *[s["purity"][c] for c in CLASS_NAMES],
                         *[s["completeness"][c] for c in CLASS_NAMES]])
        parts.append(f"<h3>{_e(name)} (policy {_e(start['policy'])})</h3>{_table(headers, rows)}")
    return "".join(parts)


def _figures_section(out: Path, table, policy: str) -> str:
    from gamornet.evaluate import confusion_matrix, plot_confusion_matrix, plot_threshold_sweep, threshold_sweep

    probs = np.column_stack([np.asarray(table[f"p_{c}"], dtype=np.float64) for c in CLASS_NAMES])
    true = np.asarray(table["true_label"]).astype(str)
    plot_confusion_matrix(confusion_matrix(true, probs, policy), out / CONFUSION_FILE,
                          title=f"Out-of-fold confusion matrix ({policy}; columns sum to 1)")
    plot_threshold_sweep(threshold_sweep(probs, true), out / SWEEP_FILE, title="Out-of-fold accuracy vs threshold")
    return ("<h2>Out-of-fold predictions</h2>"
            + _png_tag((out / CONFUSION_FILE).read_bytes(), "out-of-fold confusion matrix", "figure")
            + _png_tag((out / SWEEP_FILE).read_bytes(), "out-of-fold threshold sweep", "figure"))


def _mistakes_section(table, gallery: str | None) -> str:
    probs = np.column_stack([np.asarray(table[f"p_{c}"], dtype=np.float64) for c in CLASS_NAMES])
    pred, true = np.asarray(table["label"]).astype(str), np.asarray(table["true_label"]).astype(str)
    wrong = np.flatnonzero(pred != true)
    order = wrong[np.argsort(-probs[wrong].max(axis=1), kind="stable")][:MAX_MISTAKES_LISTED]
    rows = [[str(table["id"][i]), int(table["fold"][i]), true[i], pred[i], *probs[i].tolist()] for i in order]
    listing = _table(["id", "fold", "true", "predicted", *[f"p_{c}" for c in CLASS_NAMES]], rows)
    if gallery is None:
        shown = "<p>The gallery of the mistakes is not available (gamornet.gallery.make_gallery is missing).</p>"
    else:
        shown = (f'<p><a href="{_e(gallery)}">Gallery of the mistakes</a></p>'
                 f'<iframe src="{_e(gallery)}" title="gallery of the mistakes"></iframe>')
    return (f"<h2>Mistakes</h2><p>{wrong.size} of {len(table)} galaxies predicted another class than their label; "
            f"the {len(order)} most confident:</p>{listing}{shown}")


def _gallery(out: Path, table, images) -> str | None:
    """Write the gallery of the out-of-fold mistakes; its file name (None without images or galleries).

    The gallery finds images by the ids prediction gives them (``images.npy:N``
    for row N of a stack, N for an array): the table and the truth catalogue
    it is given carry those ids, the galaxies' own ids in ``galaxy_id``.
    """
    if images is None:
        return None
    try:
        from gamornet.gallery import make_gallery
    except ImportError:
        return None
    from astropy.table import Table

    from gamornet.predict.inputs import list_images

    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        images = os.path.join(images, "images.npy")  # a gamornet simulate folder: its stack
    refs, _ = list_images(images)
    image_ids = {k if ref.index is None else ref.index: str(ref.id) for k, ref in enumerate(refs)}
    shown = table.copy(copy_data=True)
    shown["galaxy_id"] = table["id"]
    shown["id"] = [image_ids[int(r)] for r in table["row"]]
    truth = Table({"id": shown["id"], "label": table["true_label"]})
    make_gallery(shown, images=images, output=out / MISTAKES_FILE, catalog=truth, sections=("mistakes",),
                 progress=False)
    return MISTAKES_FILE


def write_report(output, images=None) -> Path:
    """Write ``output/report.html`` from the files of the adaptation in ``output``.

    Parameters
    ----------
    output : str or os.PathLike
        The adaptation's folder (with ``selection.json``).
    images : str, os.PathLike or numpy.ndarray, optional
        DATA, for the gallery of the out-of-fold mistakes
        (:func:`gamornet.gallery.make_gallery`; none without it).

    Returns
    -------
    pathlib.Path
        The report's path.
    """
    out = Path(output)
    selection = read_json(out / SELECTION_FILE)
    parts = [_selection_section(selection)]
    if (out / CV_SUMMARY_FILE).is_file() and selection.get("folds"):
        from gamornet.core.tables import read_table

        cv = read_json(out / CV_SUMMARY_FILE)
        table = read_table(out / OOF_FILE, "oof_predictions")
        parts += [_folds_section(cv), _figures_section(out, table, cv["starts"][cv["chosen"]]["policy"]),
                  _mistakes_section(table, _gallery(out, table, images))]
    parts.append("<h2>Learning curves</h2>")
    for run in _run_folders(selection, out):
        rows = run_metrics(out / run)
        parts.append(f"<h3>{_e(run)}</h3>" + (_png_tag(learning_curve_png(rows, run), f"learning curves of {run}",
                                                        "curve", run) if rows else "<p>No epochs logged.</p>"))
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>GaMorNet adaptation: '
            f"{_e(os.path.basename(os.path.abspath(out)))}</title><style>{_STYLE}</style></head><body>"
            f"<h1>GaMorNet adaptation report</h1><p>Folder: <code>{_e(os.path.abspath(out))}</code></p>"
            + "".join(parts) + "</body></html>\n")
    path = out / REPORT_FILE
    with atomic_path(path, suffix=".html") as tmp, open(tmp, "w", encoding="utf8") as f:
        f.write(page)
    return path
