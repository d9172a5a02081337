"""Compiled forward passes of a Keras GaMorNet model: what every prediction through Keras runs.

:func:`load_forward` is the one entry point of prediction: a saved model
(any form :func:`gamornet.keras_backend.model.read_weights` reads) becomes a
:class:`KerasForward`, a callable mapping a float32 batch ``(b, H, W, C)``
to probabilities ``(b, 3)``, compiled once per model, on each Keras backend
through its own compiler and never through ``Model.predict``'s data
pipeline:

- TensorFlow: a ``tf.function`` with a batch-polymorphic signature; with
  several GPUs and a ``tf.distribute`` strategy, each batch is split over the
  replicas.
- JAX: ``jax.jit`` of the model's stateless call, the variables passed as
  arguments (read afresh at every call, so later training is seen).
- PyTorch: the model called under ``torch.inference_mode``; with
  ``GAMORNET_TORCH_COMPILE=1`` in the environment (or ``torch_compile=True``)
  through ``torch.compile``, which runs faster but spends seconds to minutes
  compiling each new batch size (figures on the performance page).

JAX (and compiled PyTorch) compile once per batch size, so a batch is
padded with zero images to a size that depends on its own size alone
(:func:`padded_size`: a power of two up to 64, then a multiple of 64) and
its rows cut from the output: ``gamornet_predict_keras``'s last, partial
batch costs no compilation of its own, and a batch's probabilities never
depend on what ran before it.  The kernels for the padded size may sum in another
order, which moves probabilities within float32 rounding (about 1e-6); each
image's values never depend on the other images of its batch.

``sample`` runs the model with dropout active (Monte-Carlo dropout) and
``reseed`` resets the dropout random state, so MC passes are repeatable on
every backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import numpy as np

from gamornet.keras_backend.model import dropout_seed, load_keras_model

__all__ = ["KerasForward", "load_forward", "compiled_forward", "choose_strategy", "TORCH_COMPILE_ENV"]

#: Environment variable switching PyTorch prediction to ``torch.compile`` (``1`` / ``true`` / ``yes``).
TORCH_COMPILE_ENV = "GAMORNET_TORCH_COMPILE"


def _torch_compile_default() -> bool:
    return os.environ.get(TORCH_COMPILE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _seed_state_variables(model: keras.Model) -> set[int]:
    """``id`` of each dropout random-generator state variable of ``model``."""
    return {id(g.state) for layer in model._flatten_layers() for g in getattr(layer, "_seed_generators", [])}


def padded_size(n: int) -> int:
    """The batch size a batch of ``n`` images runs at: the next power of two up to 64, above it a multiple of 64.

    A function of ``n`` alone, so a batch gives the same probabilities
    whatever ran before it (a resumed run equals an uninterrupted one), and
    at most 7 + (largest batch / 64) sizes are ever compiled.
    """
    if n <= 64:
        return 1 << max(n - 1, 0).bit_length()
    return -(-n // 64) * 64


class _Padded:
    """Call ``run`` on batches padded with zero images to :func:`padded_size` (one compilation per size)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray]):
        self.run = run

    @staticmethod
    def padded_rows(n: int) -> int:
        """Rows a batch of ``n`` images runs at (:func:`padded_size`); a batch of that many runs unpadded."""
        return padded_size(n)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        size = padded_size(n)
        if size == n:
            return self.run(batch)
        padded = np.zeros((size, *batch.shape[1:]), batch.dtype)
        padded[:n] = batch
        return self.run(padded)[:n]


def _tensorflow_forward(model: keras.Model, training: bool):
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    compiled = tf.function(lambda x: model(x, training=training), input_signature=[spec])

    def fn(batch):
        return compiled(batch).numpy()

    return fn


def _jax_forward(model: keras.Model, training: bool):
    import jax

    seeds = _seed_state_variables(model)
    stateful = [i for i, v in enumerate(model.non_trainable_variables) if id(v) in seeds]

    @jax.jit
    def compiled(trainable, non_trainable, x):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=training)
        return outputs, [non_trainable[i] for i in stateful]

    def fn(batch):
        # The variables' current values, passed as arguments (closed-over arrays would become constants).
        trainable = [v.value for v in model.trainable_variables]
        variables = model.non_trainable_variables
        outputs, states = compiled(trainable, [v.value for v in variables], batch)
        if training:  # dropout advanced its generators: keep their new states
            for i, state in zip(stateful, states):
                variables[i].assign(state)
        return np.asarray(outputs)

    return _Padded(fn)


def _torch_forward(model: keras.Model, training: bool, torch_compile: bool):
    import torch

    device = model.weights[0].value.device
    call = torch.compile(model, dynamic=False) if torch_compile else model

    def fn(batch):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(device)
            return call(x, training=training).float().cpu().numpy()

    return _Padded(fn) if torch_compile else fn


def compiled_forward(model: keras.Model, training: bool = False,
                     torch_compile: bool | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled forward pass of ``model`` on numpy batches, built once per model and kept on it.

    Parameters
    ----------
    model : keras.Model
    training : bool
        Run with dropout active (Monte-Carlo dropout).
    torch_compile : bool, optional
        PyTorch backend: compile with ``torch.compile``; default from
        :data:`TORCH_COMPILE_ENV`.
    """
    backend = keras.backend.backend()
    if backend == "torch" and torch_compile is None:
        torch_compile = _torch_compile_default()
    attr = f"_gamornet_forward_{'train' if training else 'infer'}{'_compiled' if torch_compile else ''}"
    fn = getattr(model, attr, None)
    if fn is not None:
        return fn
    if backend == "tensorflow":
        fn = _tensorflow_forward(model, training)
    elif backend == "jax":
        fn = _jax_forward(model, training)
    elif backend == "torch":
        fn = _torch_forward(model, training, bool(torch_compile) and not training)
    else:  # another backend Keras may add: direct calls
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

    def padded_rows(self, n: int) -> int:
        """Rows a batch of ``n`` images runs at: given that many (zero images last), it is run as is.

        :func:`gamornet.core.progress.predict_in_batches` pads batches to it
        ahead, in its background thread, instead of the forward pass.
        """
        return self._predict.padded_rows(n) if isinstance(self._predict, _Padded) else n

    def sample(self, batch: np.ndarray) -> np.ndarray:
        """One Monte-Carlo dropout pass: probabilities with dropout active."""
        if self._sample is None:
            self._sample = compiled_forward(self.model, training=True)
        return np.asarray(self._sample(batch), np.float32)

    def reseed(self, seed: int) -> None:
        """Reset the dropout random state to ``seed``: the MC passes that follow depend on it alone.

        Each dropout layer's generator gets its own seed drawn from
        ``(seed, layer number)`` and a zero counter.
        """
        for number, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                value = dropout_seed(seed, number)
                generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))
                if generator._initial_seed is None:
                    # Keras on PyTorch draws unseeded dropout from torch's global generator, ignoring the state.
                    generator._initial_seed = value


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
