"""Augmentation of training batches, seeded by the batch's place in training (so resumed runs repeat it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["AUGMENTATIONS", "check_augment", "augment_batch", "dihedral_variants"]

#: Augmentations: ``flips`` draws one of the 8 right-angle rotations / flips (the
#: dihedral group; only the 4 flips for non-square images), ``rotate`` a uniform
#: angle in [0, 360) degrees about the image centre (bilinear, edges reflected).
AUGMENTATIONS: tuple[str, ...] = ("flips", "rotate")


def _tf():
    import tensorflow as tf

    return tf


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


def _dihedral(images, transpose, flip_lr, flip_ud):
    """Per-image transpose / left-right / up-down flips (bool vectors of length N)."""
    tf = _tf()

    def pick(mask, new, old):
        return tf.where(tf.reshape(mask, (-1, 1, 1, 1)), new, old)

    if images.shape[1] is not None and images.shape[1] == images.shape[2]:
        images = pick(transpose, tf.transpose(images, (0, 2, 1, 3)), images)
    images = pick(flip_lr, tf.reverse(images, axis=[2]), images)
    return pick(flip_ud, tf.reverse(images, axis=[1]), images)


def _rotate(images, angles):
    """Rotate each image by ``angles`` (radians) about its centre: bilinear, edges reflected."""
    tf = _tf()
    shape = tf.shape(images)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angles), tf.sin(angles)
    zero = tf.zeros_like(angles)
    # output pixel (x, y) samples input (cos*(x-cx) - sin*(y-cy) + cx, sin*(x-cx) + cos*(y-cy) + cy)
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero], 1)
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=shape[1:3],
                                                 fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def augment_batch(images, seed, augment: tuple[str, ...]):
    """Randomly transform a float32 batch ``(N, H, W, C)``; the same ``seed`` (2 ints) gives the same result.

    Parameters
    ----------
    images : tf.Tensor
    seed : tf.Tensor, shape (2,)
        Seed of the stateless random draws.
    augment : tuple of str
        Names from :data:`AUGMENTATIONS`.
    """
    tf = _tf()
    n = tf.shape(images)[0]
    if "flips" in augment:
        bits = tf.random.stateless_uniform((3, n), seed, minval=0, maxval=2, dtype=tf.int32) > 0
        images = _dihedral(images, bits[0], bits[1], bits[2])
    if "rotate" in augment:
        angles = tf.random.stateless_uniform((n,), seed + tf.constant([0, 1 << 40], tf.int64), 0.0, 2 * math.pi)
        images = _rotate(images, angles)
    return images


def dihedral_variants(image: np.ndarray) -> np.ndarray:
    """The 8 right-angle rotations / flips ``(8, H, W, C)`` of one square image ``(H, W, C)``."""
    tf = _tf()
    bits = np.array([[(k >> b) & 1 for b in range(3)] for k in range(8)], bool)
    batch = tf.repeat(tf.convert_to_tensor(np.asarray(image, np.float32)[None]), 8, axis=0)
    return _dihedral(batch, bits[:, 0], bits[:, 1], bits[:, 2]).numpy()
