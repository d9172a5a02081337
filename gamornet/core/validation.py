"""Every argument check of the package, in one place.

Each public function of the package calls these first, so bad input is
refused before any heavy work with one message style: the argument's name,
what was expected and ``Received: name=value``.  Checks return the value in
the form the caller works with (a resolved input shape, float32 images, a
Python bool ...).  Variants are flags of one checker, never a second copy
(e.g. :func:`check_images` with ``sample=`` for memory-mapped stacks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np

from gamornet.core.network import BOOL_PRESETS, CLASS_NAMES, INPUT_SHAPES, WEIGHTED_LAYER_NUMBERS

__all__ = [
    "check_input_shape",
    "parse_input_shape",
    "check_bools",
    "check_positive_int",
    "check_flag",
    "check_number",
    "check_choice",
    "check_callable",
    "check_path",
    "check_stack_shape",
    "check_images",
    "check_finite",
    "check_finite_stack",
    "check_finite_batch",
    "pixels_checked_first",
    "FINITE_BLOCK",
    "check_labels",
    "labels_from_onehot",
    "check_optimizer_args",
    "check_predict_inputs",
    "check_training_inputs",
    "ENGINES",
    "PRECISIONS",
    "check_engine",
]

#: Prediction engines (:mod:`gamornet.engines`); ``"tflearn"`` only for TFLearn models.
ENGINES: tuple[str, ...] = ("auto", "keras", "openvino", "tflearn")
#: Arithmetic precisions of prediction.
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
#: Images checked for NaN / inf at a time (bounded temporary memory); an error names the bad ones of one such block.
FINITE_BLOCK = 4096


def check_input_shape(input_shape, name: str = "input_shape") -> tuple[int, int, int]:
    """Resolve ``"SDSS"``, ``"CANDELS"`` or a 3-tuple of positive ints.

    Raises
    ------
    ValueError
        For an unknown alias or a tuple that is not 3 positive integers.
    """
    if isinstance(input_shape, str):
        if input_shape in INPUT_SHAPES:
            return INPUT_SHAPES[input_shape]
        raise ValueError(
            f"`{name}` must be 'SDSS', 'CANDELS' or a tuple (height, width, channels). Received: {name}={input_shape!r}"
        )
    if (
        isinstance(input_shape, (tuple, list))
        and len(input_shape) == 3
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in input_shape)
    ):
        return tuple(int(v) for v in input_shape)
    raise ValueError(
        f"`{name}` must be 'SDSS', 'CANDELS' or a tuple of 3 positive ints (height, width, channels). "
        f"Received: {name}={input_shape!r}"
    )


def parse_input_shape(text: str, name: str = "input_shape") -> str | tuple[int, int, int]:
    """An input shape written on a command line: ``SDSS``, ``CANDELS`` (any case) or ``H,W,C`` / ``HxWxC``.

    Returns the alias itself for ``SDSS`` / ``CANDELS`` (so tables and run
    records keep the name), else the checked tuple.
    """
    upper = text.strip().upper()
    if upper in INPUT_SHAPES:
        return upper
    try:
        values = tuple(int(v) for v in upper.replace("X", ",").split(","))
    except ValueError:
        values = text  # refused below, with the text as received
    return check_input_shape(values, name)


def check_bools(value, name: str) -> tuple[bool, ...]:
    """Resolve a preset name or a sequence of exactly 8 Python bools.

    The bools refer, in order, to the weighted layers
    [2, 5, 8, 9, 10, 13, 15, 17] of the paper.  A copy is returned, so the
    caller's list is never changed.
    """
    n = len(WEIGHTED_LAYER_NUMBERS)
    if isinstance(value, str):
        if value in BOOL_PRESETS:
            return BOOL_PRESETS[value]
        raise ValueError(f"`{name}` must be one of {sorted(BOOL_PRESETS)} or {n} bools. Received: {name}={value!r}")
    if isinstance(value, (Sequence, np.ndarray)) and len(value) == n:
        items = list(value)
        if all(isinstance(v, (bool, np.bool_)) for v in items):
            return tuple(bool(v) for v in items)
    raise ValueError(
        f"`{name}` must be a preset name ({', '.join(sorted(BOOL_PRESETS))}) or exactly {n} bools for layers "
        f"{list(WEIGHTED_LAYER_NUMBERS)}. Received: {name}={value!r}"
    )


def check_positive_int(value, name: str, minimum: int = 1, allow_none: bool = False) -> int | None:
    """Check an integer argument such as ``batch_size`` or ``epochs`` (``>= minimum``; None with ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an integer >= {minimum}{extra}. Received: {name}={value!r}")
    return int(value)


def check_flag(value, name: str) -> bool:
    """Check a True / False argument (a Python or numpy bool); returns it as a Python bool.

    Raises
    ------
    ValueError
        For anything else (``"no"``, ``0``, ``None`` ...), naming the argument.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> float | None:
    """Check a finite real number, optionally within ``[low, high]`` (``low_open`` / ``high_open``: strict).

    Returns it as a Python float (None stays None with ``allow_none``).
    """
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)
    if ok:
        value = float(value)
        ok = (low is None or (value > low if low_open else value >= low)) and (
            high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = ""
        if low is not None or high is not None:
            left = "(" if low_open or low is None else "["
            right = ")" if high_open or high is None else "]"
            bounds = f" in {left}{'-inf' if low is None else low:g}, {'inf' if high is None else high:g}{right}"
        extra = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be a finite number{bounds}{extra}. Received: {name}={value!r}")
    return value


def check_choice(value, name: str, choices: Sequence, allow_none: bool = False):
    """Check that ``value`` is one of ``choices`` (or None with ``allow_none``); returns it."""
    if (value is None and allow_none) or (isinstance(value, (str, int, float, type(None))) and value in choices):
        return value
    options = ", ".join(repr(c) for c in choices) + (" or None" if allow_none else "")
    raise ValueError(f"`{name}` must be one of {options}. Received: {name}={value!r}")


def check_callable(value, name: str, allow_none: bool = True):
    """Check a callback argument: a callable (or None with ``allow_none``); returns it."""
    if (value is None and allow_none) or callable(value):
        return value
    raise TypeError(f"`{name}` must be a callable{' or None' if allow_none else ''}. Received: {name}={value!r}")


def check_path(value, name: str, *, kind: str | None = None, allow_none: bool = False) -> str | None:
    """Check a path argument; with ``kind`` ("file" / "dir") it must exist and be one.

    Returns the path as a ``str`` (None stays None with ``allow_none``).

    Raises
    ------
    TypeError
        If ``value`` is not a ``str`` or ``os.PathLike`` (or is empty).
    FileNotFoundError
        If ``kind`` is given and nothing exists at the path.
    ValueError
        If something of the other kind is there (a directory for a file ...).
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike){' or None' if allow_none else ''}. "
                        f"Received: {name}={value!r}")
    path = os.fspath(value)
    if kind is not None:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"`{name}` does not exist. Received: {name}={path!r}")
        is_dir = os.path.isdir(path)
        if kind == "file" and (is_dir or not os.path.isfile(path)):
            what = "a directory" if is_dir else "not a regular file (a broken link?)"
            raise ValueError(f"`{name}` must be a file; this is {what}. Received: {name}={path!r}")
        if kind == "dir" and not is_dir:
            raise ValueError(f"`{name}` must be a directory; this is a file. Received: {name}={path!r}")
    return path


def check_stack_shape(shape: tuple, name: str, input_shape=None, allow_empty: bool = False) -> None:
    """The shape rules of an image stack: ``(N, height, width, channels)``, images of ``input_shape``, N >= 1."""
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4:
        raise ValueError(
            f"`{name}` must be a 4-D array (N, height, width, channels). Received: shape={shape} ({len(shape)}-D)"
        )
    if shape[0] == 0 and not allow_empty:
        raise ValueError(f"`{name}` holds no images. Received: shape={shape}")
    if input_shape is not None:
        expected = check_input_shape(input_shape)
        if shape[1:] != expected:
            raise ValueError(
                f"`{name}` images must have the model's input shape {expected}. "
                f"Received: shape={shape[1:]} per image (array shape {shape})"
            )


def _check_pixel_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "O" or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"`{name}` must hold numbers (int or float pixels). Received: dtype={dtype}")
    if np.issubdtype(dtype, np.complexfloating) or dtype == np.bool_:
        raise TypeError(f"`{name}` must hold real int or float pixels. Received: dtype={dtype}")


def check_images(images, name: str = "img_array", input_shape=None, allow_empty: bool = False,
                 sample: int | None = None, finite: bool = True) -> np.ndarray:
    """Check an image stack; return it as float32 ``(N, height, width, channels)``.

    Integer arrays (as FITS files give) are cast to float32; no other
    preprocessing is applied.

    Parameters
    ----------
    images : array_like
        The images.
    name : str
        Argument name used in error messages.
    input_shape : str or tuple, optional
        If given, every image must have exactly this shape.
    allow_empty : bool
        Accept N = 0.
    sample : int, optional
        For stacks too large to read whole (memory-mapped ``.npy`` files):
        check the header and the pixels of ``sample`` images spread over the
        stack, and return ``images`` unchanged (the reader casts batch by
        batch).  By default every pixel is checked.
    finite : bool
        Check the pixels for NaN / inf (False: the caller checks them batch
        by batch, e.g. with :func:`check_finite_batch`).

    Raises
    ------
    TypeError
        For a non-numeric, bool or complex dtype.
    ValueError
        For a wrong number of dimensions, a shape that does not match
        ``input_shape``, an empty stack, or NaN / inf pixels.
    """
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    _check_pixel_dtype(arr.dtype, name)
    check_stack_shape(arr.shape, name, input_shape, allow_empty)
    if sample is not None:
        rows = np.unique(np.linspace(0, arr.shape[0] - 1, min(sample, arr.shape[0])).astype(int))
        check_finite(np.asarray(arr[rows], dtype=np.float32), name, rows)
        return arr
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if finite:
        check_finite_stack(arr, name)
    return arr


def check_finite(block: np.ndarray, name: str, rows: np.ndarray) -> None:
    """Raise ``ValueError`` naming the images of ``block`` (numbered by ``rows``) that hold NaN or inf."""
    if not np.isfinite(block).all():
        bad = rows[~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)]
        raise ValueError(f"`{name}` has NaN or inf pixels in image(s) {bad[:10].tolist()}; replace them (e.g. with "
                         f"the sky level) first. Received: {name} with {len(bad)} such image(s)")


def check_finite_stack(images: np.ndarray, name: str) -> None:
    """:func:`check_images`' NaN / inf check of a float32 stack, :data:`FINITE_BLOCK` images at a time.

    The error names the bad images (up to 10) of the first block holding one.
    """
    for start in range(0, images.shape[0], FINITE_BLOCK):  # bounded temporary memory for huge stacks
        stop = min(start + FINITE_BLOCK, images.shape[0])
        check_finite(images[start:stop], name, np.arange(start, stop))


def check_finite_batch(batch: np.ndarray, images: np.ndarray, start: int, name: str) -> None:
    """Check ``batch`` (``images[start:start + len(batch)]``) for NaN / inf, with :func:`check_finite_stack`'s error.

    Called on the batches of a stack in order, it raises the very error
    checking the whole stack up front raises, at the first batch holding a
    bad image: the block of :data:`FINITE_BLOCK` images around it is then
    checked again to name its bad images.
    """
    if np.isfinite(batch).all():
        return
    block = start // FINITE_BLOCK * FINITE_BLOCK
    stop = min(block + FINITE_BLOCK, images.shape[0])
    check_finite(np.asarray(images[block:stop], dtype=np.float32), name, np.arange(block, stop))
    check_finite(batch, name, np.arange(start, start + batch.shape[0]))  # ``images`` changed meanwhile


@contextlib.contextmanager
def pixels_checked_first(images: np.ndarray, name: str, checked: bool = False) -> Iterator[None]:
    """Errors raised inside give way to the NaN / inf error of ``images``, as when their pixels were checked first.

    For predictions that check pixels batch by batch: an argument or model
    error (a missing file ...) met before the batches run is raised only
    once every pixel is known to be finite.  ``checked``: nothing to do.
    """
    try:
        yield
    except Exception:
        if not checked:
            check_finite_stack(images, name)
        raise


def check_labels(labels, n_images: int, name: str = "training_labels") -> np.ndarray:
    """Check one-hot labels ``(N, 3)``: disk [1,0,0], indeterminate [0,1,0], bulge [0,0,1].

    Raises
    ------
    TypeError
        For a non-numeric dtype.
    ValueError
        For a shape other than ``(n_images, 3)`` or rows that are not one-hot.
    """
    arr = np.asarray(labels)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"`{name}` must be numeric one-hot rows. Received: dtype={arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != len(CLASS_NAMES) or arr.shape[0] != n_images:
        raise ValueError(
            f"`{name}` must have shape ({n_images}, 3), one one-hot row [disk, indeterminate, bulge] per image. "
            f"Received: shape={arr.shape}"
        )
    arr = arr.astype(np.float32)
    onehot = np.isin(arr, (0.0, 1.0)).all(axis=1) & (arr.sum(axis=1) == 1.0)
    if not onehot.all():
        bad = np.flatnonzero(~onehot)[:5]
        raise ValueError(
            f"`{name}` rows must be one-hot ([1,0,0] disk, [0,1,0] indeterminate, [0,0,1] bulge). "
            f"Received: rows {bad.tolist()} = {arr[bad].tolist()}"
        )
    return arr


def labels_from_onehot(labels) -> np.ndarray:
    """Class names (``disk`` / ``indeterminate`` / ``bulge``) of one-hot rows."""
    return np.asarray(CLASS_NAMES)[np.argmax(np.asarray(labels), axis=1)]


def check_optimizer_args(lr, momentum, decay, nesterov, loss) -> None:
    """Check the SGD settings shared by every training function."""
    for name, value, low in (("lr", lr, 0.0), ("momentum", momentum, 0.0), ("decay", decay, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
        if value < low or (name == "lr" and value == 0):
            raise ValueError(f"`{name}` must be {'> 0' if name == 'lr' else '>= 0'}. Received: {name}={value!r}")
    if momentum >= 1:
        raise ValueError(f"`momentum` must be < 1. Received: momentum={momentum!r}")
    check_flag(nesterov, "nesterov")
    if not (isinstance(loss, str) or callable(loss)):
        raise ValueError(f"`loss` must be a loss name or a callable. Received: loss={loss!r}")


def check_predict_inputs(img_array, input_shape, batch_size,
                         finite: bool = True) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """Check the arguments shared by every predict function.

    ``finite=False`` leaves the NaN / inf check to the batches (see
    :func:`check_finite_batch` and :func:`pixels_checked_first`).

    Returns
    -------
    tuple
        ``(input_shape, images, batch_size)``: the resolved shape, the images
        as float32 and the batch size as an int.
    """
    shape = check_input_shape(input_shape)
    return (shape, check_images(img_array, "img_array", shape, finite=finite),
            check_positive_int(batch_size, "batch_size"))


def check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels, input_shape):
    """Check in-memory training data: ``(input_shape, x, y, validation_x, validation_y)`` as float32 arrays."""
    shape = check_input_shape(input_shape)
    x = check_images(training_imgs, "training_imgs", shape)
    y = check_labels(training_labels, x.shape[0], "training_labels")
    vx = check_images(validation_imgs, "validation_imgs", shape)
    vy = check_labels(validation_labels, vx.shape[0], "validation_labels")
    return shape, x, y, vx, vy


def check_engine(engine, precision, flavor: str = "keras") -> tuple[str, str]:
    """Check the ``engine`` and ``precision`` of a prediction; returns them.

    ``engine`` is one of :data:`ENGINES` (``"tflearn"`` only with
    ``flavor="tflearn"``), ``precision`` one of :data:`PRECISIONS`;
    TFLearn itself computes in float32 only.
    """
    engines = tuple(e for e in ENGINES if e != "tflearn" or flavor == "tflearn")
    check_choice(engine, "engine", engines)
    check_choice(precision, "precision", PRECISIONS)
    if engine == "tflearn" and precision != "float32":
        raise ValueError(f"TFLearn computes in float32 only; for bfloat16 choose engine 'keras', 'openvino' or "
                         f"'auto'. Received: engine={engine!r}, precision={precision!r}")
    return engine, precision
