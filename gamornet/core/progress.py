"""Progress output: the bars of both backends' predict functions, training's epoch lines, rates.

A bar is drawn live only on a terminal (or a notebook); written to a file or
a pipe, progress is plain text without escape codes or carriage returns.
Rates read as people write them: ``1,300 img/s``, ``12.5 img/s``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import progressbar
import progressbar.env
import progressbar.widgets

from gamornet.core.prefetch import DEFAULT_DEPTH, BufferRing, Prefetch
from gamornet.core.validation import check_finite_batch

__all__ = ["CURRENT_STDERR", "CURRENT_STDOUT", "ImageRate", "format_rate", "format_duration", "epoch_line",
           "is_terminal", "progress_bar", "predict_in_batches", "format_predictions"]


class _CurrentStream:
    """Stream writing to whatever ``sys.<name>`` is when it writes.

    progressbar2 resolves ``sys.stderr`` once, when it is first imported, so a
    bar would keep writing to a stream that notebooks or test runners have
    since replaced; every bar of the package writes to one of these instead.
    """

    def __init__(self, name: str):
        self._name = name

    @property
    def _stream(self):
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


#: The stream the bars of predictions write to.
CURRENT_STDERR = _CurrentStream("stderr")
#: The stream training's progress writes to (where Keras writes its own).
CURRENT_STDOUT = _CurrentStream("stdout")


def is_terminal(stream) -> bool:
    """Whether a live bar may be drawn on ``stream``: a terminal or a notebook.

    progressbar2's rule: the environment variable ``PROGRESSBAR_IS_TERMINAL``
    (``1`` / ``0``) decides where it is set, else whether ``stream`` is a
    terminal (or Jupyter's output).
    """
    return bool(progressbar.env.is_terminal(stream))


def format_rate(count: float, seconds: float, unit: str = "img") -> str:
    """``count`` items in ``seconds`` as a rate people read at a glance.

    Three significant figures at most, thousands separated by commas:
    ``format_rate(2600, 2) == "1,300 img/s"``, ``format_rate(25, 2) ==
    "12.5 img/s"``, ``format_rate(1, 3) == "0.33 img/s"``; ``"-- img/s"``
    before anything is counted.
    """
    if not count or not seconds or seconds <= 0:
        return f"-- {unit}/s"
    rate = count / seconds
    if rate >= 99.95:
        text = f"{rate:,.0f}"
    elif rate >= 9.995:
        text = f"{rate:.1f}"
    else:
        text = f"{rate:.2f}"
    return f"{text} {unit}/s"


def format_duration(seconds: float) -> str:
    """A duration as ``"0.8 s"``, ``"42 s"``, ``"3 min 05 s"`` or ``"2 h 04 min"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def epoch_line(epoch: int, epochs: int, images: int, seconds: float, logs: Mapping | None = None,
               train_seconds: float | None = None) -> str:
    """One plain line summing up a training epoch (no escape codes, no carriage return).

    Parameters
    ----------
    epoch : int
        The epoch, counting from 0 (shown counting from 1).
    epochs : int
        Epochs of the run.
    images : int
        Training images of the epoch.
    seconds : float
        Duration of the epoch, validation included.
    logs : mapping, optional
        Metric values (``loss``, ``accuracy``, ``val_loss`` ...), shown to 4
        significant figures.
    train_seconds : float, optional
        Time spent on the training images (the rate's divisor; by default
        ``seconds``).

    Returns
    -------
    str
        e.g. ``"Epoch 3/100: 2,048 img in 1.6 s (1,300 img/s) - loss 0.6931 - accuracy 0.5"``.
    """
    rate = format_rate(images, seconds if train_seconds is None else train_seconds)
    parts = [f"Epoch {epoch + 1}/{epochs}: {images:,} img in {format_duration(seconds)} ({rate})"]
    for name, value in (logs or {}).items():
        try:
            parts.append(f"{name} {float(value):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{name} {value}")
    return " - ".join(parts)


class ImageRate(progressbar.widgets.WidgetBase):
    """progressbar2 widget: the bar's average rate as :func:`format_rate` writes it (``1,300 img/s``)."""

    def __init__(self, unit: str = "img", **kwargs):
        super().__init__(**kwargs)
        self.unit = unit

    def __call__(self, progress, data) -> str:
        return format_rate(data.get("value") or 0, data.get("total_seconds_elapsed") or 0, self.unit)


def progress_bar(total: int, enabled: bool = True, label: str = "Predicting", stream=None) -> progressbar.ProgressBar:
    """A progressbar2 bar counting images (a silent one when ``enabled`` is False).

    It writes to ``stream`` (default :data:`CURRENT_STDERR`): drawn live on
    a terminal; elsewhere progressbar2 writes plain lines (no colours).
    """
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
        ImageRate(),
        " ",
        progressbar.ETA(),
    ]
    return progressbar.ProgressBar(max_value=total, widgets=widgets, fd=CURRENT_STDERR if stream is None else stream)


def _prepared_batches(images: np.ndarray, batch_size: int, padded_rows: Callable[[int], int] | None,
                      check: str | None, ring: BufferRing) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, batch)`` for each batch of ``images``: checked, padded and made a contiguous float32 array.

    A batch already contiguous float32 and of the size it runs at is passed
    as a view (no copy); any other is copied into a buffer of ``ring``,
    followed by zero images up to ``padded_rows(n)`` rows.
    """
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        part = images[start:stop]
        n = stop - start
        rows = n if padded_rows is None else padded_rows(n)
        if rows == n and part.dtype == np.float32 and part.flags.c_contiguous:
            batch = np.ascontiguousarray(part, dtype=np.float32)
        else:
            batch = ring.take((rows, *images.shape[1:]))
            batch[:n] = part
            batch[n:] = 0
        if check is not None:
            check_finite_batch(batch[:n], images, start, check)
        yield start, stop, batch


def predict_in_batches(
    forward: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch_size: int,
    progress: bool = True,
    label: str = "Predicting",
    *,
    check: str | None = None,
    prefetch: int = DEFAULT_DEPTH,
) -> np.ndarray:
    """Run ``forward`` over ``images`` batch by batch, the last batch possibly partial.

    The next batches are prepared (NaN / inf check, padding, contiguous
    float32 copy) in a background thread while ``forward`` runs the current
    one (:class:`gamornet.core.prefetch.Prefetch`); ``forward`` still gets
    the same batches, in order, from the calling thread.

    Parameters
    ----------
    forward : callable
        Maps a float32 batch ``(b, H, W, C)`` to probabilities ``(b, 3)``.
        If it has a method ``padded_rows(n)``, a batch of ``n`` images is
        given to it with zero images up to that many rows (the padding it
        would do itself) and only its first ``n`` rows of output are kept.
    images : numpy.ndarray
        Float32 images (may be memory-mapped), of checked shape.
    batch_size : int
        Images per call of ``forward``.
    progress : bool
        Show a progress bar.
    label : str
        The bar's label.
    check : str, optional
        Check each batch for NaN / inf before it runs, raising the error of
        :func:`gamornet.core.validation.check_images` for argument
        ``check``; None: the pixels were checked already.
    prefetch : int
        Batches prepared ahead.

    Returns
    -------
    numpy.ndarray, shape (N, 3), float32
    """
    n = images.shape[0]
    out = np.empty((n, 3), dtype=np.float32)
    bar = progress_bar(n, progress, label)
    source = _prepared_batches(images, batch_size, getattr(forward, "padded_rows", None), check,
                               BufferRing(prefetch + 2))
    with Prefetch(source, prefetch, name="gamornet-predict") as batches:
        for start, stop, batch in batches:
            out[start:stop] = forward(batch)[: stop - start]
            bar.update(stop)
    bar.finish()
    return out


def format_predictions(probabilities: np.ndarray, individual_arrays: bool):
    """``(N, 3)`` array, or its three columns (disk, indeterminate, bulge) when ``individual_arrays``."""
    if individual_arrays:
        return probabilities[:, 0], probabilities[:, 1], probabilities[:, 2]
    return probabilities
