"""Labels of training data: one-hot rows from any form a user has them in."""

from __future__ import annotations

import os

import numpy as np

from gamornet.core.labels import labels_from_bt
from gamornet.core.network import CLASS_NAMES
from gamornet.core.validation import check_labels

__all__ = ["load_labels"]


def _onehot_from_names(values, n: int, name: str) -> np.ndarray:
    names = np.char.lower(np.char.strip(np.asarray(values).astype(str)))
    index = {c: i for i, c in enumerate(CLASS_NAMES)}
    known = np.isin(names, CLASS_NAMES)
    if names.ndim != 1 or names.shape[0] != n:
        raise ValueError(f"`{name}` must hold one class name per image ({n}). Received: shape={names.shape}")
    if not known.all():
        bad = np.flatnonzero(~known)[:5]
        raise ValueError(f"`{name}` class names must be {' / '.join(CLASS_NAMES)}. "
                         f"Received: rows {bad.tolist()} = {names[bad].tolist()}")
    return np.eye(3, dtype=np.float32)[[index[v] for v in names]]


def load_labels(labels, n_images: int, name: str = "training_labels") -> np.ndarray:
    """One-hot float32 labels ``(n_images, 3)`` from any accepted form, checked in full.

    Parameters
    ----------
    labels : array_like, str, os.PathLike or astropy.table.Table
        One-hot rows ``(N, 3)``; class names (``disk`` / ``indeterminate`` /
        ``bulge``, shape ``(N,)``); or a catalog (a table or a file astropy
        reads, e.g. the ``catalog.ecsv`` of ``gamornet simulate``) with a
        ``label`` column of class names, or else a ``class_index`` column
        (0, 1, 2), or else one-hot columns ``disk``, ``indeterminate``,
        ``bulge``, or else a ``bt`` column of bulge-to-total ratios (disk
        below 0.45, bulge above 0.55, indeterminate from one to the other;
        :func:`gamornet.core.labels.labels_from_bt`).
    n_images : int
        Number of images the labels belong to.
    name : str
        Argument name used in error messages.
    """
    if labels is None:
        raise ValueError(f"`{name}` must be given for these images (one-hot rows, class names or a catalog). "
                         f"Received: {name}=None")
    if isinstance(labels, (str, os.PathLike)):
        if not os.path.isfile(labels):
            raise FileNotFoundError(f"`{name}` file does not exist. Received: {name}={os.fspath(labels)!r}")
        from astropy.table import Table

        labels = Table.read(os.fspath(labels))
    if hasattr(labels, "colnames"):
        cols = labels.colnames
        if "label" in cols:
            return _onehot_from_names(labels["label"], n_images, name)
        if "class_index" in cols:
            index = np.asarray(labels["class_index"])
            if index.shape != (n_images,) or not np.isin(index, (0, 1, 2)).all():
                raise ValueError(f"`{name}` column 'class_index' must hold {n_images} values in 0, 1, 2. "
                                 f"Received: shape={index.shape}, values={np.unique(index)[:5].tolist()}")
            return np.eye(3, dtype=np.float32)[index.astype(int)]
        if all(c in cols for c in CLASS_NAMES):
            return check_labels(np.stack([np.asarray(labels[c]) for c in CLASS_NAMES], 1), n_images, name)
        if "bt" in cols:
            return _onehot_from_names(labels_from_bt(labels["bt"], f"{name} column 'bt'"), n_images, name)
        raise ValueError(f"`{name}` catalog needs a 'label', 'class_index', {list(CLASS_NAMES)} or 'bt' column(s). "
                         f"Received: columns {cols}")
    arr = np.asarray(labels)
    if arr.ndim == 1 and arr.dtype.kind in "US":
        return _onehot_from_names(arr, n_images, name)
    return check_labels(arr, n_images, name)
