"""True classes from the bulge-to-total light ratio ``bt`` (Ghosh et al. 2020).

The paper labels its training galaxies by ``bt = L_bulge / L_total``: disk
if ``bt < 0.45``, indeterminate if ``0.45 <= bt <= 0.55``, bulge if
``bt > 0.55`` (both bounds belong to the indeterminate class).
:func:`labels_from_bt` applies this rule wherever labels are read from a
``bt`` column: training catalogues (:func:`gamornet.data.load_labels`), the
catalogues ``gamornet evaluate`` scores against
(:func:`gamornet.evaluate.true_labels`) and galleries.
"""

from __future__ import annotations

import numpy as np

from gamornet.core.network import CLASS_NAMES

__all__ = ["BT_BOUNDS", "labels_from_bt", "class_index_from_bt"]

#: ``(lower, upper)``: disk below ``lower``, bulge above ``upper``, indeterminate from one to the other, inclusive.
BT_BOUNDS: tuple[float, float] = (0.45, 0.55)


def labels_from_bt(bt, name: str = "bt") -> np.ndarray:
    """Class names (``disk`` / ``indeterminate`` / ``bulge``) from bulge-to-total ratios.

    ``bt < 0.45`` is disk, ``0.45 <= bt <= 0.55`` indeterminate and
    ``bt > 0.55`` bulge (:data:`BT_BOUNDS`; Ghosh et al. 2020).  The bounds
    are compared in the precision of ``bt``: in a float32 column the value
    written ``0.45`` (float32 0.449999988...) is the bound itself, so it is
    indeterminate, as written.

    Parameters
    ----------
    bt : array_like, shape (N,)
        Ratios in [0, 1]; a masked column's masked entries are refused.
    name : str
        Argument or column name used in error messages.

    Returns
    -------
    numpy.ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        For values that are not numbers, not finite, masked or outside
        [0, 1], or an array that is not 1-D, naming the rows.
    """
    masked = np.ma.getmaskarray(bt) if np.ma.isMaskedArray(bt) else None
    arr = np.ma.getdata(bt) if masked is not None else np.asarray(bt)
    if arr.dtype.kind not in "biuf" or arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of bulge-to-total ratios in [0, 1]. Received: "
                         f"dtype={arr.dtype}, shape={arr.shape}")
    values = arr if arr.dtype.kind == "f" else arr.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if masked is not None:
        bad |= masked
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"row {k} = {'masked' if masked is not None and masked[k] else float(values[k])}"
                          for k in rows[:5])
        raise ValueError(f"`{name}` must hold bulge-to-total ratios in [0, 1]. Received: {rows.size} bad value(s) "
                         f"of {len(values)}: {shown}{' ...' if rows.size > 5 else ''}")
    return np.asarray(CLASS_NAMES, dtype="<U13")[class_index_from_bt(values)]


def class_index_from_bt(bt) -> np.ndarray:
    """Class index (0 disk, 1 indeterminate, 2 bulge) of bulge-to-total ratios, unchecked.

    The rule of :func:`labels_from_bt`, compared in the precision of ``bt``
    (float64 for Python numbers); the simulator labels its galaxies with it.
    """
    values = np.asarray(bt)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    low, high = np.asarray(BT_BOUNDS, dtype=values.dtype)
    return np.where(values < low, 0, np.where(values <= high, 1, 2))
