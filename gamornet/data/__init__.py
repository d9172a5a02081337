"""Training data for every Keras backend: sources, labels, augmentation.

Every source reads batch by batch, applies the optional augmentation and
prefetches :data:`PREFETCH` batches while the model computes, so memory stays
bounded by a few batches whatever the size of the data.  The batches are
numpy arrays made by one code path for all backends
(:meth:`Source.training_batches`, read ahead in a thread); on TensorFlow the
same batches come through ``tf.data`` (:meth:`Source.training_dataset`):

- :class:`ArraySource`: images indexable by row (an in-memory array or a
  ``numpy.memmap``) with one-hot labels.  In-memory arrays up to
  :data:`TENSOR_LIMIT_BYTES` are copied once into TensorFlow and batched by
  ``tf.data`` on the TensorFlow backend (a full permutation per epoch drawn
  from ``(seed, epoch)`` in numpy, rows gathered in TensorFlow, no images
  through Python), as Keras' own ``fit`` copies arrays.  Memory-mapped
  stacks (and larger arrays, and every array on JAX / PyTorch) are read
  by a Python generator: batch-sized blocks of rows (each read as one slice)
  in permuted order, rows shuffled inside windows of :data:`SHUFFLE_WINDOW`
  blocks.  :func:`open_training_data` opens a ``gamornet simulate`` folder or
  a ``.npy`` stack with a catalog.
- :class:`DatasetSource`: a ``tf.data.Dataset`` yielding ``(images, onehot)``
  elements or batches; its order is the dataset's own (TensorFlow backend only).
- :class:`SimulatedSource`: new simulated galaxies every epoch
  (:func:`gamornet.simulate.iter_batches`).

:func:`as_source` checks user input (arrays, paths, memmaps, datasets,
sources) with the error style of :mod:`gamornet.utils`.  Augmentation
(:func:`augment_batch`, numpy) draws its randomness from a seed and the
batch's place in training (global batch number, or epoch and batch), so a
resumed run sees the same transformations as an uninterrupted one, and every
backend trains on the same batches.
"""

from gamornet.data.augment import AUGMENTATIONS, augment_batch, check_augment, dihedral_variants
from gamornet.data.labels import load_labels
from gamornet.data.sources import (
    PREFETCH,
    SHUFFLE_WINDOW,
    TENSOR_LIMIT_BYTES,
    ArraySource,
    Batches,
    DatasetSource,
    SimulatedSource,
    Source,
    as_source,
    open_training_data,
    prefetched,
)

__all__ = [
    "AUGMENTATIONS",
    "PREFETCH",
    "SHUFFLE_WINDOW",
    "TENSOR_LIMIT_BYTES",
    "Source",
    "Batches",
    "prefetched",
    "ArraySource",
    "DatasetSource",
    "SimulatedSource",
    "as_source",
    "open_training_data",
    "load_labels",
    "check_augment",
    "augment_batch",
    "dihedral_variants",
]
