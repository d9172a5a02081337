"""Batch loop, progress bar and output format shared by both backends' predict functions."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import progressbar

__all__ = ["CURRENT_STDERR", "progress_bar", "predict_in_batches", "format_predictions"]


class _CurrentStderr:
    """Stream writing to whatever ``sys.stderr`` is when it writes.

    progressbar2 resolves ``sys.stderr`` once, when it is first imported, so a
    bar would keep writing to a stream that notebooks or test runners have
    since replaced; every bar of the package writes here instead.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def __getattr__(self, name: str):
        return getattr(sys.stderr, name)


#: The stream every progress bar of the package writes to.
CURRENT_STDERR = _CurrentStderr()


def progress_bar(total: int, enabled: bool = True, label: str = "Predicting") -> progressbar.ProgressBar:
    """A progressbar2 bar counting images (a silent one when ``enabled`` is False)."""
    if not enabled:
        return progressbar.NullBar(max_value=total)
    widgets = [
        f"{label}: ",
        progressbar.Percentage(),
        " ",
        progressbar.Bar(),
        " ",
        progressbar.Counter(format="%(value)d/%(max_value)d"),
        " ",
        progressbar.FileTransferSpeed(unit="img"),
        " ",
        progressbar.ETA(),
    ]
    return progressbar.ProgressBar(max_value=total, widgets=widgets, fd=CURRENT_STDERR)


def predict_in_batches(
    forward: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch_size: int,
    progress: bool = True,
    label: str = "Predicting",
) -> np.ndarray:
    """Run ``forward`` over ``images`` batch by batch, the last batch possibly partial.

    Parameters
    ----------
    forward : callable
        Maps a float32 batch ``(b, H, W, C)`` to probabilities ``(b, 3)``.
    images : numpy.ndarray
        Already validated float32 images (may be memory-mapped).
    batch_size : int
        Images per call of ``forward``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    numpy.ndarray, shape (N, 3), float32
    """
    n = images.shape[0]
    out = np.empty((n, 3), dtype=np.float32)
    bar = progress_bar(n, progress, label)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out[start:stop] = forward(np.ascontiguousarray(images[start:stop], dtype=np.float32))
        bar.update(stop)
    bar.finish()
    return out


def format_predictions(probabilities: np.ndarray, individual_arrays: bool):
    """``(N, 3)`` array, or its three columns (disk, indeterminate, bulge) when ``individual_arrays``."""
    if individual_arrays:
        return probabilities[:, 0], probabilities[:, 1], probabilities[:, 2]
    return probabilities
