"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

#: Input shape used by most tests: small enough to train in seconds.
SMALL_SHAPE = (32, 32, 1)


def make_data(n: int, shape=SMALL_SHAPE, seed: int = 0):
    """Random images (float32) and one-hot labels of all three classes."""
    rng = np.random.default_rng(seed)
    images = rng.normal(10.0, 3.0, size=(n, *shape)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    return images, labels
