"""Reading rows of image stacks without letting a memory map grow the process.

Pages of a memory-mapped ``.npy`` file that a process has read count toward
its resident memory until the kernel needs them back, so reading a 10 GB
stack once through a map can show a 10 GB process.  :func:`read_rows` reads
the rows of a stack opened with ``np.load(..., mmap_mode="r")`` (or made with
``np.memmap``) with positioned file reads instead: the rows come back as an
ordinary array and nothing stays mapped.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

__all__ = ["read_rows"]


def _file_backed(images) -> bool:
    # Only the memmap that owns the map (its base is the mmap itself, not a parent
    # array as for views) starts at its recorded file offset.
    return (
        isinstance(images, np.memmap)
        and isinstance(images.base, mmap.mmap)
        and bool(images.filename)
        and images.flags.c_contiguous
    )


def read_rows(images, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of an image stack as a new in-memory array.

    Parameters
    ----------
    images : numpy.ndarray or numpy.memmap
        The stack, rows along the first axis.
    start, stop : int
        Row range (``0 <= start <= stop <= len(images)``).

    Returns
    -------
    numpy.ndarray
        The rows, in the stack's dtype.
    """
    if not _file_backed(images):
        return np.array(images[start:stop])
    row_items = math.prod(images.shape[1:])
    offset = images.offset + start * row_items * images.dtype.itemsize
    count = (stop - start) * row_items
    rows = np.fromfile(images.filename, dtype=images.dtype, count=count, offset=offset)
    return rows.reshape((stop - start, *images.shape[1:]))
