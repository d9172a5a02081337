"""Shared helpers of both backends: shapes, layer presets, input checks, thresholds.

Every public function of :mod:`gamornet.keras_module` and
:mod:`gamornet.tflearn_module` calls the checks here first, so bad input is
refused with the same message, naming the argument, before any heavy work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence

import numpy as np

from gamornet.network import CLASS_NAMES, WEIGHTED_LAYER_NUMBERS
from gamornet.registry import MODELS
from gamornet.thresholds import POLICIES, ThresholdPolicy, classify_probabilities, get_policy

__all__ = [
    "INPUT_SHAPES",
    "BOOL_PRESETS",
    "POLICIES",
    "ThresholdPolicy",
    "check_input_shape",
    "check_bools",
    "check_images",
    "check_labels",
    "check_positive_int",
    "classify_probabilities",
    "get_policy",
    "is_published_model",
    "resolve_model_path",
    "labels_from_onehot",
    "check_training_inputs",
    "check_predict_inputs",
    "check_optimizer_args",
    "resolve_save_dir",
    "atomic_path",
]

#: Input-shape aliases.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}

_T, _F = True, False
#: Named presets for ``load_layers_bools`` / ``trainable_bools``, in the order
#: of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17].
BOOL_PRESETS: dict[str, tuple[bool, ...]] = {
    "load_bools_SDSS": (_T, _T, _T, _T, _T, _F, _F, _F),
    "load_bools_CANDELS": (_T, _T, _T, _T, _T, _T, _F, _F),
    "train_bools_SDSS": (_T,) * 8,
    "train_bools_CANDELS": (_F, _F, _F, _T, _T, _T, _T, _T),
}


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


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Check an integer argument such as ``batch_size`` or ``epochs``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_images(images, name: str = "img_array", input_shape=None, allow_empty: bool = False) -> np.ndarray:
    """Check and convert an image stack to float32 ``(N, height, width, channels)``.

    Integer arrays (as FITS files give) are cast to float32; no other
    preprocessing is applied.  Memory-mapped arrays stay memory-mapped when
    already float32.

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

    Raises
    ------
    TypeError
        For a non-numeric dtype.
    ValueError
        For a wrong number of dimensions, a shape that does not match
        ``input_shape``, an empty stack, or NaN / inf pixels.
    """
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"`{name}` must hold numbers (int or float pixels). Received: dtype={arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating) or arr.dtype == np.bool_:
        raise TypeError(f"`{name}` must hold real int or float pixels. Received: dtype={arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(
            f"`{name}` must be a 4-D array (N, height, width, channels). Received: shape={arr.shape} ({arr.ndim}-D)"
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"`{name}` holds no images. Received: shape={arr.shape}")
    if input_shape is not None:
        expected = check_input_shape(input_shape)
        if tuple(arr.shape[1:]) != expected:
            raise ValueError(
                f"`{name}` images must have the model's input shape {expected}. "
                f"Received: shape={tuple(arr.shape[1:])} per image (array shape {arr.shape})"
            )
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str, chunk: int = 4096) -> None:
    for start in range(0, arr.shape[0], chunk):
        part = arr[start : start + chunk]
        if not np.isfinite(part).all():
            bad = np.flatnonzero(~np.isfinite(part).reshape(part.shape[0], -1).all(axis=1))
            raise ValueError(
                f"`{name}` has NaN or inf pixels in image(s) {(bad + start)[:10].tolist()}. "
                "Replace them (e.g. with the sky level) before prediction."
            )


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
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"`nesterov` must be True or False. Received: nesterov={nesterov!r}")
    if not (isinstance(loss, str) or callable(loss)):
        raise ValueError(f"`loss` must be a loss name or a callable. Received: loss={loss!r}")


def check_predict_inputs(img_array, input_shape, batch_size) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """Check the arguments shared by every predict function.

    Returns
    -------
    tuple
        ``(input_shape, images, batch_size)``: the resolved shape, the images
        as float32 and the batch size as an int.
    """
    shape = check_input_shape(input_shape)
    return shape, check_images(img_array, "img_array", shape), check_positive_int(batch_size, "batch_size")


def check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels, input_shape):
    """Check the data arguments shared by every training and transfer-learning function.

    Returns
    -------
    tuple
        ``(input_shape, training_imgs, training_labels, validation_imgs,
        validation_labels)``, converted to float32 arrays.
    """
    shape = check_input_shape(input_shape)
    x = check_images(training_imgs, "training_imgs", shape)
    y = check_labels(training_labels, x.shape[0], "training_labels")
    vx = check_images(validation_imgs, "validation_imgs", shape)
    vy = check_labels(validation_labels, vx.shape[0], "validation_labels")
    return shape, x, y, vx, vy


def resolve_save_dir(files_save_path) -> str | None:
    """Directory for training outputs, created if needed; ``None`` for ``/dev/null`` (save nothing).

    The path is joined with file names as a path, so a trailing slash is
    optional.
    """
    if not isinstance(files_save_path, (str, os.PathLike)) or not os.fspath(files_save_path):
        raise ValueError(f"`files_save_path` must be a directory path. Received: files_save_path={files_save_path!r}")
    path = os.fspath(files_save_path)
    if os.path.abspath(path) == os.path.abspath(os.devnull):
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`files_save_path` must be a directory. Received: files_save_path={path!r} (a file)")
    os.makedirs(path, exist_ok=True)
    return path


#: Attribute set to ``True`` on an :class:`OSError` raised because an output could not be written.
OUTPUT_ERROR_FLAG = "gamornet_output"


def output_error(exc: OSError, path) -> OSError:
    """``exc`` re-addressed to the output ``path`` (same errno, hence same subclass), marked as an output error.

    The command line reports such errors as ``cannot write PATH: CAUSE``.
    """
    new = OSError(exc.errno, exc.strerror or str(exc), os.fspath(path))
    setattr(new, OUTPUT_ERROR_FLAG, True)
    return new


def make_output_dir(path) -> str:
    """Create the output directory ``path`` (and its parents) if needed; errors name it as an output.

    Raises
    ------
    OSError
        If it cannot be created (a parent is a file, no permission...), marked
        like the errors of :func:`atomic_path`.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, exc.filename if exc.filename is not None else path) from exc
    return path


def _create_temporary(directory: str, base: str, suffix: str) -> tuple[str, int]:
    """Create an empty, unused temporary file; return its path and mode.

    The file is created with mode ``0o666``, so the kernel applies the
    process umask (or the directory's default ACL) exactly as for a plain
    ``open(path, "w")``.  The umask itself is never read: it is process-wide
    state, and reading it with :func:`os.umask` means setting it, which races
    with other threads creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        path = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.part{suffix}")
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return path, mode
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", os.path.join(directory, f".{base}.*.part"))


@contextlib.contextmanager
def atomic_path(final_path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``final_path``; rename it into place only on success.

    The temporary file exists (empty) when the block starts and ends with
    the mode a plain ``open()`` would give a new file (``0o666`` less the
    umask, e.g. ``0o644`` under umask ``022``), even if the writer replaced
    it.  On failure it is removed and ``final_path`` is left untouched.

    Parameters
    ----------
    final_path : str or os.PathLike
        Where the file should end up.
    suffix : str
        Ending the temporary name must keep (e.g. ``".keras"``, which Keras
        requires of the files it saves).

    Raises
    ------
    OSError
        When the file cannot be created, written or renamed (no space, no
        permission, a missing directory...): the error names ``final_path``
        (not the temporary name) and has its ``gamornet_output`` attribute set.
    """
    final_path = os.fspath(final_path)
    directory, base = os.path.split(os.path.abspath(final_path))
    try:
        tmp, mode = _create_temporary(directory, base, suffix)
    except OSError as exc:
        raise output_error(exc, final_path) from exc
    try:
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # the writer replaced the file with its own
            os.chmod(tmp, mode)
        os.replace(tmp, final_path)
    except OSError as exc:
        if exc.filename not in (None, tmp) or getattr(exc, OUTPUT_ERROR_FLAG, False):
            raise  # about another file (e.g. an input read inside the block)
        raise output_error(exc, final_path) from exc
    finally:
        if os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def is_published_model(model_load_path) -> bool:
    """Whether ``model_load_path`` names a published model (e.g. ``"SDSS_tl"``)."""
    return isinstance(model_load_path, str) and any(model_load_path == name for name, _ in MODELS)


def resolve_model_path(model_load_path, flavor: str = "keras", progress: bool = True) -> str:
    """Local path of a model: a file path as given, or a published model fetched to the cache.

    Parameters
    ----------
    model_load_path : str or os.PathLike
        A path, or the name of a published model (``SDSS_sim``, ``SDSS_tl``,
        ``CANDELS_sim``, ``CANDELS_tl``).
    flavor : {"keras", "tflearn"}
        Which flavour of a published model.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    str
        For Keras, the model file; for TFLearn, the checkpoint prefix.
    """
    if isinstance(model_load_path, os.PathLike):
        return os.fspath(model_load_path)
    if not isinstance(model_load_path, str) or not model_load_path:
        raise ValueError(f"`model_load_path` must be a path or a published model name. Received: {model_load_path!r}")
    if not is_published_model(model_load_path):
        return model_load_path
    from gamornet.download import fetch_model  # cache, mirrors, checks: see gamornet.download

    return fetch_model(model_load_path, flavor, progress=progress)


def __getattr__(name: str):
    # The presets as module attributes, as GaMorNet 0.4.3 users may reach them.
    if name in BOOL_PRESETS:
        return list(BOOL_PRESETS[name])
    raise AttributeError(f"module 'gamornet.utils' has no attribute {name!r}")


_ = (get_policy, ThresholdPolicy, POLICIES, classify_probabilities)
