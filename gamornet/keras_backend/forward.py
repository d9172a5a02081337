"""Compiled forward passes of a Keras GaMorNet model: what every prediction through Keras runs.

:func:`load_forward` is the one entry point of prediction: a saved model
(any form :func:`gamornet.keras_backend.model.read_weights` reads) becomes a
:class:`KerasForward`, a callable mapping a float32 batch ``(b, H, W, C)``
to probabilities ``(b, 3)``, compiled once per model:

- on TensorFlow a ``tf.function`` with a batch-polymorphic signature (no
  ``Model.predict`` data pipeline); with several GPUs and a
  ``tf.distribute`` strategy, each batch is split over the replicas;
- on other Keras backends the model is called directly.

``sample`` runs the model with dropout active (Monte-Carlo dropout) and
``reseed`` resets the dropout random state, so MC passes are repeatable.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import numpy as np

from gamornet.keras_backend.model import load_keras_model

__all__ = ["KerasForward", "load_forward", "compiled_forward", "choose_strategy"]


def compiled_forward(model: keras.Model, training: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled forward pass of ``model`` on numpy batches, built once per model and kept on it."""
    attr = "_gamornet_forward_train" if training else "_gamornet_forward"
    fn = getattr(model, attr, None)
    if fn is not None:
        return fn
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        compiled = tf.function(lambda x: model(x, training=training), input_signature=[spec])

        def fn(batch):
            return compiled(batch).numpy()
    else:  # other Keras backends: direct calls, still without the fit/predict data pipeline

        def fn(batch):
            return keras.ops.convert_to_numpy(model(batch, training=training))

    setattr(model, attr, fn)
    return fn


def choose_strategy(strategy):
    """The ``tf.distribute`` strategy to use: ``"auto"`` -> MirroredStrategy when several GPUs are visible.

    None on other Keras backends, and for ``strategy=None``.
    """
    if strategy is None or keras.backend.backend() != "tensorflow":
        if strategy not in (None, "auto") and keras.backend.backend() != "tensorflow":
            raise ValueError(f"`strategy` needs the TensorFlow backend of Keras; this one is "
                             f"{keras.backend.backend()!r}. Received: strategy={strategy!r}")
        return None
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "auto":
        return tf.distribute.MirroredStrategy() if len(tf.config.list_logical_devices("GPU")) > 1 else None
    raise ValueError(f"`strategy` must be 'auto', None or a tf.distribute.Strategy. Received: strategy={strategy!r}")


def _distributed_forward(model, strategy, training: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Forward pass splitting each batch over the strategy's replicas (padded to a multiple of them)."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function(reduce_retracing=True)
    def step(values):
        return strategy.run(lambda x: model(x, training=training), args=(values,))

    def forward(batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        per = -(-n // replicas)
        padded = np.zeros((per * replicas, *batch.shape[1:]), np.float32)
        padded[:n] = batch
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(padded[ctx.replica_id_in_sync_group * per : (ctx.replica_id_in_sync_group + 1)
                                           * per])
        )
        outputs = strategy.experimental_local_results(step(values))
        return np.concatenate([np.asarray(o) for o in outputs])[:n]

    return forward


class KerasForward:
    """A loaded model's forward pass: ``forward(batch)`` -> probabilities ``(b, 3)`` float32.

    Parameters
    ----------
    model : keras.Model
        A GaMorNet model.
    strategy : tf.distribute.Strategy, optional
        Split every batch over its replicas (the model must have been built
        in its scope).

    Attributes
    ----------
    model : keras.Model
    engine, precision : str
        What computes the numbers (``"keras"``, ``"float32"``).
    """

    engine = "keras"
    precision = "float32"

    def __init__(self, model: keras.Model, strategy=None):
        self.model = model
        if strategy is None:
            self._predict, self._sample = compiled_forward(model), None
        else:
            self._predict = _distributed_forward(model, strategy, False)
            self._sample = _distributed_forward(model, strategy, True)
        self._strategy = strategy

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(batch), np.float32)

    def sample(self, batch: np.ndarray) -> np.ndarray:
        """One Monte-Carlo dropout pass: probabilities with dropout active."""
        if self._sample is None:
            self._sample = compiled_forward(self.model, training=True)
        return np.asarray(self._sample(batch), np.float32)

    def reseed(self, seed: int) -> None:
        """Reset the dropout random state to ``seed``: the MC passes that follow depend on it alone."""
        for number, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([seed, number], dtype=generator.state.dtype))


def load_forward(path, input_shape, *, lrn: str | None = None, strategy=None, reuse: bool = True) -> KerasForward:
    """The forward pass of a saved model, built for ``input_shape``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file, a Keras HDF5 file or a TFLearn checkpoint prefix
        (published names are resolved by the caller).
    input_shape : tuple of int
        ``(height, width, channels)``.
    lrn : {"keras", "tflearn"}, optional
        LRN flavour; by default the one the file implies.
    strategy : "auto", None or tf.distribute.Strategy
        Multi-device prediction (TensorFlow backend only; see :func:`choose_strategy`).
    reuse : bool
        Reuse a model loaded earlier from the same, unchanged file.

    Returns
    -------
    KerasForward
    """
    path = os.fspath(path)
    strategy = choose_strategy(strategy)
    if strategy is None:
        return KerasForward(load_keras_model(path, tuple(input_shape), lrn=lrn, reuse=reuse))
    with strategy.scope():
        model = load_keras_model(path, tuple(input_shape), lrn=lrn, reuse=False)
    return KerasForward(model, strategy)
