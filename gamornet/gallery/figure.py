"""A gallery as one matplotlib figure: a row of thumbnails per section, for papers and notebooks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gamornet.core.files import atomic_path
from gamornet.gallery.sections import Section

__all__ = ["MAX_COLUMNS", "write_figure"]

#: Thumbnails per row of the figure at most.
MAX_COLUMNS = 10


def write_figure(sections: Sequence[Section], pixels: Mapping[int, np.ndarray], labels: Mapping[int, str],
                 path: str | os.PathLike, title: str) -> Path:
    """PNG grid: one row per section (subsection), its first thumbnails (``pixels[row]``, 8-bit), written atomically.

    Each row is named by its section and count; each thumbnail by its label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    leaves = [leaf for section in sections for leaf in section.leaves()]
    columns = max(1, min(MAX_COLUMNS, max((len(leaf.rows) for leaf in leaves), default=1)))
    fig = Figure(figsize=(1.3 * columns + 1.2, 1.4 * len(leaves) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(leaves), columns, squeeze=False)
    for i, leaf in enumerate(leaves):
        for j in range(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            row = int(leaf.rows[j]) if j < len(leaf.rows) else None
            if row is not None and pixels.get(row) is not None:
                ax.imshow(pixels[row], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                ax.set_title(labels[row], fontsize=7)
            else:
                ax.set_axis_off()
        axes[i, 0].set_axis_on()
        name = leaf.title.replace(", labelled ", "\nas ")
        axes[i, 0].set_ylabel(f"{name}\n({leaf.count})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
