"""Stratified folds for cross-validation on a small labelled set."""

from __future__ import annotations

import numpy as np

from gamornet.core.network import CLASS_NAMES

__all__ = ["stratified_folds", "check_folds"]


def check_folds(folds, class_index) -> int | None:
    """Check a fold count against the labels; returns it as an int (None for no cross-validation).

    Raises
    ------
    ValueError
        If ``folds`` is not an integer >= 2, or a labelled class has fewer
        galaxies than folds (a class with no galaxy at all is allowed).
    """
    if folds is None:
        return None
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"`folds` must be None or an integer >= 2. Received: folds={folds!r}")
    counts = np.bincount(np.asarray(class_index, dtype=np.int64), minlength=3)
    small = [f"{CLASS_NAMES[c]}: {int(n)}" for c, n in enumerate(counts) if 0 < n < folds]
    if small:
        raise ValueError(f"`folds` must not exceed the number of labelled galaxies of any class present, so that "
                         f"every fold validates on each class ({', '.join(small)}). Use fewer folds or label more "
                         f"galaxies. Received: folds={int(folds)}")
    return int(folds)


def stratified_folds(class_index, folds: int, seed: int = 0) -> np.ndarray:
    """Fold (1 to ``folds``) of each galaxy, with the classes spread evenly over the folds.

    The galaxies of each class are shuffled (``numpy.random.default_rng(seed)``)
    and dealt to the folds in turn, each class continuing where the previous
    one stopped, so every fold holds ``floor`` or ``ceil`` of
    ``n_class / folds`` galaxies of each class and the fold sizes differ by
    at most one.

    Parameters
    ----------
    class_index : array_like of int, shape (N,)
        Class of each galaxy: 0 disk, 1 indeterminate, 2 bulge.
    folds : int
        Number of folds (checked with :func:`check_folds`).
    seed : int
        Seed of the shuffling.

    Returns
    -------
    numpy.ndarray of int, shape (N,)
    """
    index = np.asarray(class_index, dtype=np.int64)
    k = check_folds(folds, index)
    rng = np.random.default_rng(seed)
    fold = np.zeros(index.shape[0], dtype=np.int64)
    offset = 0
    for c in range(len(CLASS_NAMES)):
        rows = rng.permutation(np.flatnonzero(index == c))
        fold[rows] = (offset + np.arange(rows.size)) % k + 1
        offset = (offset + rows.size) % k
    return fold
