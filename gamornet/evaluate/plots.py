"""Figures of the scores: the confusion matrix and the threshold sweep, as PNG files written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gamornet.core.files import atomic_path
from gamornet.evaluate.scores import ConfusionMatrix

__all__ = ["plot_confusion_matrix", "plot_threshold_sweep"]


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
