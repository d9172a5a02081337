"""Augmentation of training batches, in numpy: one implementation for every Keras backend.

The random draws of a batch come from ``numpy.random.default_rng([seed,
step])``, ``step`` being the batch's place in training (see
:mod:`gamornet.data.sources`), so a resumed run repeats the transformations
of an uninterrupted one, whatever backend trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["AUGMENTATIONS", "check_augment", "augment_batch", "dihedral_variants", "rotate"]

#: Augmentations: ``flips`` draws one of the 8 right-angle rotations / flips (the
#: dihedral group; only the 4 flips for non-square images), ``rotate`` a uniform
#: angle in [0, 360) degrees about the image centre (bilinear, edges reflected).
AUGMENTATIONS: tuple[str, ...] = ("flips", "rotate")


def check_augment(augment) -> tuple[str, ...]:
    """Resolve ``augment``: None, ``"flips"``, ``"rotate"``, ``"flips+rotate"`` or a list of those names."""
    if augment is None or augment is False or augment == "none" or augment == ():
        return ()
    names = augment.replace(",", "+").split("+") if isinstance(augment, str) else augment
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) and n in AUGMENTATIONS
                                                                for n in names):
        raise ValueError(f"`augment` must be None, {' / '.join(map(repr, AUGMENTATIONS))} or "
                         f"'flips+rotate'. Received: augment={augment!r}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def _dihedral(images: np.ndarray, transpose, flip_lr, flip_ud) -> np.ndarray:
    """Per-image transpose / left-right / up-down flips (bool vectors of length N); a new array."""
    out = np.empty_like(images)
    square = images.shape[1] == images.shape[2]
    for i, image in enumerate(images):
        if square and transpose[i]:
            image = image.transpose(1, 0, 2)
        if flip_lr[i]:
            image = image[:, ::-1]
        if flip_ud[i]:
            image = image[::-1]
        out[i] = image
    return out


def rotate(images: np.ndarray, angles) -> np.ndarray:
    """Rotate each image of ``(N, H, W, C)`` by ``angles[i]`` radians about its centre: bilinear, edges reflected.

    Output pixel ``(x, y)`` takes the input at ``(cos a (x - cx) - sin a (y - cy) + cx,
    sin a (x - cx) + cos a (y - cy) + cy)``, interpolated between its 4 neighbours; the
    image is first extended by reflection (``d c b a | a b c d | d c b a``) far enough
    for every rotated corner.
    """
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    reach = math.hypot(cx, cy)
    mx, my = math.ceil(reach - cx) + 2, math.ceil(reach - cy) + 2
    padded = np.pad(images, ((0, 0), (my, my), (mx, mx), (0, 0)), mode="symmetric")
    row = w + 2 * mx
    angles = np.asarray(angles, np.float64).reshape(n, 1, 1)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    x = (np.arange(w, dtype=np.float32) - np.float32(cx))[None, None, :]
    y = (np.arange(h, dtype=np.float32) - np.float32(cy))[None, :, None]
    sx = cos * x - sin * y + np.float32(cx + mx)
    sy = sin * x + cos * y + np.float32(cy + my)
    x0, y0 = np.floor(sx), np.floor(sy)
    sx -= x0  # the fractional parts: interpolation weights
    sy -= y0
    first = np.arange(n, dtype=np.int64).reshape(n, 1, 1) * ((h + 2 * my) * row)
    index = first + y0.astype(np.int64) * row + x0.astype(np.int64)
    out = np.empty_like(images)
    for channel in range(c):
        flat = np.ascontiguousarray(padded[..., channel]).reshape(-1)
        top = flat.take(index)
        top += (flat.take(index + 1) - top) * sx
        bottom = flat.take(index + row)
        bottom += (flat.take(index + row + 1) - bottom) * sx
        top += (bottom - top) * sy
        out[..., channel] = top
    return out


def augment_batch(images: np.ndarray, seed: int, step: int, augment: tuple[str, ...]) -> np.ndarray:
    """Randomly transform a float32 batch ``(N, H, W, C)``; the same ``(seed, step)`` gives the same result.

    Parameters
    ----------
    images : numpy.ndarray
        The batch (not modified).
    seed : int
        Seed of the run.
    step : int
        The batch's place in training (>= 0).
    augment : tuple of str
        Names from :data:`AUGMENTATIONS`.

    Returns
    -------
    numpy.ndarray
        The transformed batch, float32 (``images`` itself without ``augment``).
    """
    if not augment:
        return images
    rng = np.random.default_rng([int(seed), int(step)])
    n = images.shape[0]
    bits = rng.integers(0, 2, size=(3, n)).astype(bool)
    angles = rng.uniform(0.0, 2 * math.pi, size=n)
    out = np.asarray(images, np.float32)
    if "flips" in augment:
        out = _dihedral(out, bits[0], bits[1], bits[2])
    if "rotate" in augment:
        out = rotate(out, angles)
    return out


def dihedral_variants(image: np.ndarray) -> np.ndarray:
    """The 8 right-angle rotations / flips ``(8, H, W, C)`` of one square image ``(H, W, C)``."""
    bits = np.array([[(k >> b) & 1 for b in range(3)] for k in range(8)], bool)
    batch = np.repeat(np.asarray(image, np.float32)[None], 8, axis=0)
    return _dihedral(batch, bits[:, 0], bits[:, 1], bits[:, 2])
