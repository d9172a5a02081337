"""Names of the files and folders an adaptation writes into its output folder, and small JSON helpers."""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

from gamornet.core.files import atomic_path

__all__ = [
    "SETTINGS_FILE",
    "SELECTION_FILE",
    "CV_SUMMARY_FILE",
    "OOF_FILE",
    "REPORT_FILE",
    "MISTAKES_FILE",
    "SPLIT_FILE",
    "RUNS_DIR",
    "FINAL_DIR",
    "CONFUSION_FILE",
    "SWEEP_FILE",
    "write_json",
    "read_json",
    "json_clean",
    "copy_file",
]

#: Settings of the adaptation (what ``resume`` reads back).
SETTINGS_FILE = "adapt.json"
#: Each start's validation figures and the start chosen.
SELECTION_FILE = "selection.json"
#: Cross-validation figures, per fold and mean / standard deviation, of each start.
CV_SUMMARY_FILE = "cv_summary.json"
#: Out-of-fold predictions (of the chosen start; each start's own sit in its runs folder).
OOF_FILE = "oof_predictions.ecsv"
#: The report page and the gallery of the mistakes it links to.
REPORT_FILE = "report.html"
MISTAKES_FILE = "mistakes.html"
#: Rows of DATA a run trained and validated on, in each run folder.
SPLIT_FILE = "split.json"
#: Folder of the training runs (one per start, ``fold_<k>`` inside with folds) and of the final run.
RUNS_DIR = "runs"
FINAL_DIR = "final"
#: Figures of the out-of-fold predictions.
CONFUSION_FILE = "confusion_matrix.png"
SWEEP_FILE = "threshold_sweep.png"


def json_clean(value: Any) -> Any:
    """``value`` with NaN / inf floats as None and numpy scalars and arrays as Python values."""
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, data: Any) -> None:
    """Write ``data`` (cleaned by :func:`json_clean`) as indented JSON, atomically."""
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w", encoding="utf8") as f:
        f.write(json.dumps(json_clean(data), indent=1) + "\n")


def read_json(path) -> Any:
    """The JSON content of ``path``."""
    with open(os.fspath(path), encoding="utf8") as f:
        return json.load(f)


def copy_file(source, destination) -> None:
    """Copy ``source`` to ``destination`` atomically (a reader never sees a partial file)."""
    suffix = os.path.splitext(os.fspath(destination))[1]
    with atomic_path(destination, suffix=suffix) as tmp:
        shutil.copyfile(source, tmp)
