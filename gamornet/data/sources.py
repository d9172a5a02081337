"""Training data sources: arrays, memory-mapped ``.npy`` stacks, ``tf.data`` datasets, simulated galaxies.

Every source except :class:`DatasetSource` is written once, in numpy, for
all Keras backends: :meth:`Source.training_batches` yields ``(images,
labels)`` batches forever from an epoch on, shuffled and augmented from the
seed and each batch's place in training, read ahead in a background thread;
:meth:`Source.validation_batches` gives the same finite sequence every
epoch.  On TensorFlow, :meth:`Source.training_dataset` serves the same
batches as a ``tf.data`` pipeline; in-memory arrays are gathered there from
one copy held in TensorFlow (no Python round trip per batch, which cost
about 20% more CPU per image in training), augmented by the same numpy code.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import numpy as np

from gamornet.core.stack import read_rows
from gamornet.core.validation import check_finite, check_images, check_positive_int, check_stack_shape
from gamornet.data.augment import augment_batch
from gamornet.data.labels import load_labels

__all__ = ["PREFETCH", "SHUFFLE_WINDOW", "TENSOR_LIMIT_BYTES", "Source", "ArraySource", "DatasetSource",
           "SimulatedSource", "Batches", "prefetched", "as_source", "open_training_data"]

#: Batches prepared ahead of the model.
PREFETCH = 2
#: Blocks of ``batch_size`` rows shuffled together when reading a memory-mapped stack.
SHUFFLE_WINDOW = 8
#: In-memory image arrays up to this size (bytes, as float32) are copied into
#: TensorFlow and batched there (TensorFlow backend); larger ones are read batch by batch from Python.
TENSOR_LIMIT_BYTES = 2 * 1024**3
#: Images checked for NaN / inf when a memory-mapped stack is opened.
_SAMPLE_CHECK = 64


class Batches:
    """A finite sequence of ``(images, labels)`` numpy batches: ``len(b)`` and ``b[i]``.

    Parameters
    ----------
    count : int
        Number of batches.
    read : callable
        ``read(i)`` -> batch ``i``.
    """

    def __init__(self, count: int, read: Callable[[int], tuple[np.ndarray, np.ndarray]]):
        self.count, self.read = int(count), read

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.count <= i < self.count:
            raise IndexError(f"batch {i} of {self.count}")
        return self.read(i % self.count)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self.read(i) for i in range(self.count))


def prefetched(batches: Iterator, depth: int = PREFETCH) -> Generator:
    """Iterate ``batches`` in a background thread, ``depth`` items ahead (memory: ``depth + 1`` batches).

    Errors of ``batches`` are raised where the item would have come.  Closing
    the returned generator (or dropping it) stops the thread, which closes
    ``batches``.
    """
    if depth <= 0:
        yield from batches
        return
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if not put((True, batch)):
                    return
            put((False, end))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="gamornet-batches", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if ok:
                yield item
            elif item is end:
                return
            else:
                raise item
    finally:
        stop.set()


class Source:
    """A training or validation data source (see the module docstring).

    Subclasses give :meth:`steps` and :meth:`raw_batches` (or override the
    methods that use them).

    Attributes
    ----------
    image_shape : tuple of int
        ``(height, width, channels)`` of one image.
    batch_size : int or None
        Batch size the source imposes (None: the training ``batch_size``).
    epoch_variable : tf.Variable or None
        An int64 variable the training sets to the epoch being trained as
        each epoch begins, where the dataset of the last
        :meth:`training_dataset` call reads it (see
        :meth:`DatasetSource.training_dataset`); None where it does not.
    """

    image_shape: tuple[int, ...] = ()
    batch_size: int | None = None
    epoch_variable = None

    def steps(self, batch_size: int) -> int:
        """Batches in one epoch."""
        raise NotImplementedError

    def raw_batches(self, batch_size: int, initial_epoch: int = 0, seed: int = 0) -> Iterator:
        """Training batches, not augmented, forever from the first batch of ``initial_epoch``."""
        raise NotImplementedError

    def validation_batches(self, batch_size: int) -> Batches:
        """The validation batches: the same every epoch."""
        raise NotImplementedError

    def _augmented(self, batch_size: int, initial_epoch: int, seed: int, augment: tuple) -> Iterator:
        steps = self.steps(batch_size)
        batches = self.raw_batches(batch_size, initial_epoch, seed)
        try:
            for step, (x, y) in enumerate(batches, start=initial_epoch * steps):
                yield augment_batch(x, seed, step, augment), y
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def training_batches(self, batch_size: int, initial_epoch: int = 0, seed: int = 0, augment: tuple = (),
                         steps_per_epoch: int | None = None) -> tuple[Generator, int]:
        """``(batches, steps_per_epoch)``: numpy batches for any Keras backend, forever from ``initial_epoch``.

        The order depends only on ``(seed, epoch)``; batch ``i`` of the run
        (counted from ``initial_epoch * steps_per_epoch``) is augmented with
        ``(seed, i)`` (:func:`gamornet.data.augment_batch`).  Batches are read
        :data:`PREFETCH` ahead in a background thread (see :func:`prefetched`).
        """
        return prefetched(self._augmented(batch_size, initial_epoch, seed, augment)), self.steps(batch_size)

    def training_dataset(self, batch_size: int, initial_epoch: int = 0, seed: int = 0, augment: tuple = (),
                         steps_per_epoch: int | None = None):
        """``(dataset, steps_per_epoch)``: the batches of :meth:`training_batches` as a ``tf.data`` pipeline.

        ``steps_per_epoch`` is None when the dataset is read to its end every epoch.
        """
        tf = _tf()
        ds = tf.data.Dataset.from_generator(lambda: self._augmented(batch_size, initial_epoch, seed, augment),
                                            output_signature=_signature(self.image_shape))
        return ds.prefetch(PREFETCH), self.steps(batch_size)

    def validation_dataset(self, batch_size: int):
        """The batches of :meth:`validation_batches` as a finite ``tf.data`` dataset."""
        tf = _tf()
        batches = self.validation_batches(batch_size)
        ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=_signature(self.image_shape))
        return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(PREFETCH)


def _tf():
    import tensorflow as tf

    return tf


def _signature(shape: tuple[int, ...]):
    tf = _tf()
    return (tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None, 3), tf.float32))


def _augment_in_tf(step_and_batch, seed: int, augment: tuple):
    """A ``tf.data`` map function: :func:`augment_batch` (numpy) on ``(step, (images, labels))``."""
    tf = _tf()
    step, (images, labels) = step_and_batch

    def run(x, i):
        return augment_batch(x, seed, int(i), augment)

    out = tf.numpy_function(run, [images, step], tf.float32, stateful=False)
    out.set_shape(images.shape)
    return out, labels


def _finish(ds, augment: tuple, seed: int, first_step: int = 0, counter=None):
    """Augment (seeded by ``seed`` and the global batch number) and prefetch."""
    tf = _tf()
    if augment:
        counter = tf.data.Dataset.counter(first_step) if counter is None else counter
        ds = tf.data.Dataset.zip((counter, ds)).map(lambda step, xy: _augment_in_tf((step, xy), seed, augment),
                                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(PREFETCH)


class ArraySource(Source):
    """Images indexable by row, in memory or memory-mapped, with one-hot labels.

    Parameters
    ----------
    images : numpy.ndarray or numpy.memmap, shape (N, height, width, channels)
        Already checked (see :func:`as_source`); any real dtype, cast to
        float32 batch by batch.
    labels : numpy.ndarray, shape (N, 3)
        One-hot float32 rows for all N images.
    indices : numpy.ndarray, optional
        Rows of ``images`` this source uses (sorted); default all.
    name : str
        Argument name used in error messages.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
                 name: str = "training_imgs"):
        self.images, self.labels, self.name = images, labels, name
        self.indices = np.arange(images.shape[0]) if indices is None else np.sort(np.asarray(indices, np.int64))
        self.image_shape = tuple(int(v) for v in images.shape[1:])
        self.memmapped = isinstance(images, np.memmap)
        self._copies: dict = {}  # the TensorFlow copy of images and labels, shared with split() parts

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def split(self, fraction: float, seed: int = 0) -> tuple[ArraySource, ArraySource]:
        """Random ``(training, validation)`` split, ``fraction`` of the rows going to validation."""
        n = len(self)
        n_val = int(round(float(fraction) * n)) if isinstance(fraction, (int, float)) else -1
        if not 0 < fraction < 1 or not 1 <= n_val < n:
            raise ValueError(f"`validation_fraction` must be in (0, 1) and leave images on both sides of the split "
                             f"({n} images). Received: validation_fraction={fraction!r}")
        perm = np.random.default_rng(seed).permutation(self.indices)
        parts = (ArraySource(self.images, self.labels, perm[n_val:], self.name),
                 ArraySource(self.images, self.labels, perm[:n_val], self.name.replace("training", "validation")))
        for part in parts:
            part._copies = self._copies
        return parts

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
        x = read_rows(self.images, int(rows[0]), int(rows[-1]) + 1) if contiguous else self.images[rows]
        x = np.asarray(x, dtype=np.float32)
        if self.memmapped:
            check_finite(x, self.name, rows)
        return x, self.labels[rows]

    def epoch_row_batches(self, batch_size: int, epoch: int = 0, seed: int = 0) -> list[np.ndarray]:
        """Rows of each batch of epoch ``epoch`` of an in-memory array (sorted within a batch).

        The epoch's order is ``numpy.random.default_rng([seed, epoch]).permutation`` of the rows.
        """
        perm = np.random.default_rng([seed, epoch]).permutation(self.indices)
        return [np.sort(perm[s : s + batch_size]) for s in range(0, len(perm), batch_size)]

    def epoch_batches(self, batch_size: int, epoch: int = 0, seed: int = 0,
                      shuffle: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of ``(images, labels)`` batches; the order depends only on ``(seed, epoch)``.

        In-memory arrays: the batches of :meth:`epoch_row_batches`.
        Memory-mapped stacks: batch-sized blocks of rows (each read as one
        slice) in permuted order, rows shuffled inside windows of
        :data:`SHUFFLE_WINDOW` blocks.  ``shuffle=False``: the rows in order.
        """
        idx = self.indices
        blocks = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
        if not shuffle:
            for rows in blocks:
                yield self._read(rows)
            return
        if not self.memmapped:
            for rows in self.epoch_row_batches(batch_size, epoch, seed):
                yield self._read(rows)
            return
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(blocks))
        for w in range(0, len(order), SHUFFLE_WINDOW):
            parts = [self._read(blocks[k]) for k in order[w : w + SHUFFLE_WINDOW]]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            p = rng.permutation(len(x))
            x, y = x[p], y[p]
            for s in range(0, len(x), batch_size):
                yield x[s : s + batch_size], y[s : s + batch_size]

    def steps(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)

    def raw_batches(self, batch_size: int, initial_epoch: int = 0, seed: int = 0) -> Iterator:
        for epoch in itertools.count(initial_epoch):
            yield from self.epoch_batches(batch_size, epoch, seed, shuffle=True)

    def validation_batches(self, batch_size: int) -> Batches:
        """Every row once, in order, in batches of ``batch_size``."""
        return Batches(self.steps(batch_size),
                       lambda i: self._read(self.indices[i * batch_size : (i + 1) * batch_size]))

    def in_tensorflow(self) -> bool:
        """Whether, on TensorFlow, batches are gathered by ``tf.data`` from a copy of the images held there."""
        n_pixels = int(np.prod(self.images.shape, dtype=np.int64))
        return not self.memmapped and 4 * n_pixels <= TENSOR_LIMIT_BYTES

    def _tensors(self):
        """``(images, labels)`` as tensors, converted once for all parts of a :meth:`split`."""
        if not self._copies:
            tf = _tf()
            self._copies["images"] = tf.convert_to_tensor(np.asarray(self.images, np.float32))
            self._copies["labels"] = tf.convert_to_tensor(self.labels, tf.float32)
        return self._copies["images"], self._copies["labels"]

    def _gathered(self, row_batches):
        """Map a dataset of row batches to ``(images, labels)`` batches gathered in TensorFlow."""
        tf = _tf()
        images, labels = self._tensors()  # converted here, eagerly: captured by reference, not as constants
        return row_batches.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def training_dataset(self, batch_size, initial_epoch=0, seed=0, augment=(), steps_per_epoch=None):
        """The batches of :meth:`training_batches` as ``tf.data``; in memory: gathered in TensorFlow."""
        if not self.in_tensorflow():
            return super().training_dataset(batch_size, initial_epoch, seed, augment, steps_per_epoch)
        tf = _tf()
        steps = self.steps(batch_size)

        def rows():
            for epoch in itertools.count(initial_epoch):
                yield from self.epoch_row_batches(batch_size, epoch, seed)

        row_batches = tf.data.Dataset.from_generator(rows, output_signature=tf.TensorSpec((None,), tf.int64))
        return _finish(self._gathered(row_batches), augment, seed, initial_epoch * steps), steps

    def validation_dataset(self, batch_size):
        if not self.in_tensorflow():
            return super().validation_dataset(batch_size)
        tf = _tf()
        ds = self._gathered(tf.data.Dataset.from_tensor_slices(self.indices).batch(batch_size))
        return ds.apply(tf.data.experimental.assert_cardinality(self.steps(batch_size))).prefetch(PREFETCH)


class DatasetSource(Source):
    """A ``tf.data.Dataset`` of ``(images, onehot_labels)``, as elements or as batches (TensorFlow backend only).

    Unbatched datasets (images of rank 3) are batched with the training
    ``batch_size``; batched ones (rank 4) are used as they are.  The dataset
    is read in its own order (shuffle it yourself, with
    ``reshuffle_each_iteration``).  A finite dataset is read to its end every
    epoch; an infinite one needs ``steps_per_epoch``.

    Parameters
    ----------
    dataset : tf.data.Dataset
    input_shape : tuple of int
        The model's ``(height, width, channels)``.
    name : str
        Argument name used in error messages.
    """

    def __init__(self, dataset, input_shape, name: str = "training_imgs"):
        tf = _tf()
        spec = dataset.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, tf.TensorSpec) for s in spec)):
            raise ValueError(f"`{name}` must yield (images, onehot_labels) pairs. Received: element_spec={spec}")
        xs, ys = spec
        rank = xs.shape.rank
        dims = list(xs.shape)[-3:] if rank in (3, 4) else []
        if rank not in (3, 4) or any(d is not None and d != e for d, e in zip(dims, input_shape)):
            raise ValueError(f"`{name}` images must have shape {tuple(input_shape)} (or batches of it). "
                             f"Received: element shape {xs.shape}")
        if not (xs.dtype.is_floating or xs.dtype.is_integer) or not (ys.dtype.is_floating or ys.dtype.is_integer):
            raise TypeError(f"`{name}` must yield numeric images and labels. Received: dtypes {xs.dtype}, {ys.dtype}")
        if ys.shape.rank != rank - 2 or ys.shape[-1] not in (None, 3):
            raise ValueError(f"`{name}` labels must be one-hot rows [disk, indeterminate, bulge] (3 columns). "
                             f"Received: label shape {ys.shape}")
        self.dataset, self.name, self.batched = dataset, name, rank == 4
        self.image_shape = tuple(input_shape)
        self.cardinality = int(dataset.cardinality())

    def _batched(self, batch_size):
        tf = _tf()
        ds = self.dataset if self.batched else self.dataset.batch(batch_size)
        return ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)))

    def training_dataset(self, batch_size, initial_epoch=0, seed=0, augment=(), steps_per_epoch=None):
        """Batches of the dataset, augmented with draws from ``seed`` and the batch's place in training.

        With ``steps_per_epoch`` Keras reads one iterator across epochs: the
        dataset is repeated and batch ``i`` of the run (counted from
        ``initial_epoch * steps_per_epoch``) is augmented with ``(seed, i)``.
        Without it the dataset is read to its end every epoch, and batch
        ``i`` of epoch ``e`` gets ``(seed, e * 2**32 + i)``, the epoch read
        from :attr:`epoch_variable`.  A resumed run thus draws the same
        augmentations as an uninterrupted one; the order of the dataset's
        elements stays the dataset's own (a dataset reshuffled on every
        iteration starts its shuffling again in a new process).
        """
        tf = _tf()
        self.epoch_variable = None
        if self.cardinality == tf.data.INFINITE_CARDINALITY and not steps_per_epoch:
            raise ValueError(f"`steps_per_epoch` must be given for an infinite `{self.name}` dataset. "
                             "Received: steps_per_epoch=None")
        batches = self._batched(batch_size)
        if steps_per_epoch:
            if self.cardinality != tf.data.INFINITE_CARDINALITY:
                batches = batches.repeat()
            return _finish(batches, augment, seed, initial_epoch * steps_per_epoch), steps_per_epoch
        if not augment:
            return _finish(batches, augment, seed), None
        self.epoch_variable = epoch = tf.Variable(int(initial_epoch), dtype=tf.int64, trainable=False)
        counter = tf.data.Dataset.counter().map(lambda i: epoch.read_value() * 2**32 + i)
        return _finish(batches, augment, seed, counter=counter), None

    def training_batches(self, *args, **kwargs):
        raise TypeError(_dataset_needs_tensorflow(self.name, self.dataset))

    def validation_batches(self, batch_size):
        raise TypeError(_dataset_needs_tensorflow(self.name, self.dataset))

    def validation_dataset(self, batch_size):
        tf = _tf()
        if self.cardinality == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"`{self.name}` must be a finite dataset (validation is read to its end every epoch).")
        return self._batched(batch_size).prefetch(PREFETCH)


class SimulatedSource(Source):
    """Simulated bulge + disk galaxies generated while training, new ones every epoch.

    Epoch ``e`` trains on galaxies ``e * steps_per_epoch * batch_size``
    onwards of the simulated set ``seed`` (so a resumed run continues with new
    galaxies).  Used for validation, the source gives the same first
    ``steps_per_epoch`` batches every epoch (rendered once, then cached):
    give it another ``seed`` than the training source.

    Parameters
    ----------
    survey : str or gamornet.simulate.SurveyConfig
        ``"SDSS"`` or ``"CANDELS"`` (or a config).
    steps_per_epoch : int
        Batches per epoch.
    batch_size : int, optional
        Galaxies per batch; default the training ``batch_size``.
    seed : int
        Seed of the simulated set.
    workers : int
        Processes rendering batches ahead (1: in the data pipeline's thread).
    **overrides
        Settings of :class:`gamornet.simulate.SurveyConfig` (e.g.
        ``shape=(64, 64)``, ``balanced=True``).
    """

    def __init__(self, survey="SDSS", steps_per_epoch: int = 100, batch_size: int | None = None, seed: int = 0,
                 workers: int = 1, **overrides):
        from gamornet import simulate

        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size")
        self.workers = check_positive_int(workers, "workers")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.config = simulate.get_config(survey, **overrides)
        self.image_shape = (*self.config.shape, 1)

    def _batches(self, batch_size: int, start: int, steps: int | None):
        from gamornet.simulate import iter_batches

        it = iter_batches(batch_size, self.config, self.seed, workers=self.workers, start=start)
        try:
            for _ in range(steps) if steps is not None else itertools.count():
                yield next(it)
        finally:
            it.close()

    def steps(self, batch_size: int) -> int:
        return self.steps_per_epoch

    def raw_batches(self, batch_size: int, initial_epoch: int = 0, seed: int = 0) -> Iterator:
        b = self.batch_size or batch_size
        return self._batches(b, initial_epoch * self.steps_per_epoch * b, None)

    def validation_batches(self, batch_size: int) -> Batches:
        """The first ``steps_per_epoch`` batches of the set, rendered once (at the first read), then kept."""
        b, rendered = self.batch_size or batch_size, []

        def read(i):
            if not rendered:
                rendered.extend(self._batches(b, 0, self.steps_per_epoch))
            return rendered[i]

        return Batches(self.steps_per_epoch, read)


def _is_dataset(obj) -> bool:
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "element_spec")


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def _dataset_needs_tensorflow(name: str, dataset) -> str:
    return (f"`{name}` is a tf.data.Dataset, which needs the TensorFlow backend of Keras; this process runs Keras "
            f"on {_keras_backend()!r}. Give numpy arrays, a .npy stack, a `gamornet simulate` folder or a "
            f"gamornet.data.Source (e.g. ArraySource, SimulatedSource) instead. "
            f"Received: {name} of type {type(dataset).__name__}")


def open_training_data(path, catalog=None, name: str = "DATA") -> ArraySource:
    """Open a ``gamornet simulate`` folder, or a ``.npy`` stack with a catalog, memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike
        A folder holding ``images.npy`` and ``catalog.ecsv``, or a ``.npy`` file.
    catalog : str, os.PathLike, table or array, optional
        Labels (any form :func:`load_labels` accepts); default the folder's
        ``catalog.ecsv``.
    """
    path = Path(path)
    if path.is_dir():
        images_path, default_catalog = path / "images.npy", path / "catalog.ecsv"
    else:
        images_path, default_catalog = path, None
    if not images_path.is_file():
        raise FileNotFoundError(f"`{name}` must be a folder with images.npy and catalog.ecsv, or a .npy file. "
                                f"Received: {name}={os.fspath(path)!r} (no {images_path.name})")
    if catalog is None:
        if default_catalog is None or not default_catalog.is_file():
            raise ValueError(f"`{name}` is a .npy stack: give its labels (a catalog). Received: catalog=None")
        catalog = default_catalog
    try:
        images = np.load(images_path, mmap_mode="r")
    except ValueError as exc:
        raise ValueError(f"`{name}` is not a readable .npy image stack. Received: {os.fspath(images_path)!r} ({exc})")
    images = check_images(images, name, sample=_SAMPLE_CHECK)
    return ArraySource(images, load_labels(catalog, images.shape[0], "catalog"), name=name)


def as_source(images, labels, input_shape, role: str = "training") -> Source:
    """Check one pair of data arguments and wrap it as a :class:`Source`.

    Parameters
    ----------
    images
        A numpy array ``(N, H, W, C)`` (checked in full, as in 0.4.3); a
        ``numpy.memmap`` or a path to a ``.npy`` file (header and a sample
        checked, read batch by batch); a ``gamornet simulate`` folder (labels
        from its catalog unless given); a ``tf.data.Dataset``; or a
        :class:`Source` (e.g. :class:`SimulatedSource`).
    labels
        For arrays and stacks, what :func:`load_labels` accepts; None for
        datasets and sources (their labels come with the images).
    input_shape : tuple of int
        The model's resolved input shape.
    role : {"training", "validation"}
        Prefix of the argument names in error messages.
    """
    x_name, y_name = f"{role}_imgs", f"{role}_labels"
    if isinstance(images, Source) or _is_dataset(images):
        if labels is not None:
            raise ValueError(f"`{y_name}` must be None when `{x_name}` is a {type(images).__name__} (labels come with "
                             f"its images). Received: {y_name} of type {type(labels).__name__}")
        if _is_dataset(images) and _keras_backend() != "tensorflow":
            raise TypeError(_dataset_needs_tensorflow(x_name, images))
        source = images if isinstance(images, Source) else DatasetSource(images, input_shape, x_name)
        if tuple(source.image_shape) != tuple(input_shape):
            raise ValueError(f"`{x_name}` images must have the model's input shape {tuple(input_shape)}. "
                             f"Received: shape={tuple(source.image_shape)} per image")
        return source
    if isinstance(images, (str, os.PathLike)):
        if os.path.isdir(images):
            source = open_training_data(images, labels, x_name)
            check_stack_shape(source.images.shape, x_name, input_shape)
            return source
        if not os.path.isfile(images):
            raise FileNotFoundError(f"`{x_name}` does not exist. Received: {x_name}={os.fspath(images)!r}")
        try:
            images = np.load(images, mmap_mode="r")
        except ValueError as exc:
            raise ValueError(f"`{x_name}` is not a readable .npy image stack ({exc}). Received: {x_name}={images!r}")
    if isinstance(images, np.memmap):
        images = check_images(images, x_name, input_shape, sample=_SAMPLE_CHECK)
    else:
        images = check_images(images, x_name, input_shape)
    return ArraySource(images, load_labels(labels, images.shape[0], y_name), name=x_name)
