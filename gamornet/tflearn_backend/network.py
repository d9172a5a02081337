"""GaMorNet built with TFLearn 0.5.0 on TensorFlow 2: building, restoring, saving, predicting.

Each network is built from :data:`gamornet.core.network.LAYERS` in a graph
of its own (see :mod:`gamornet.tflearn_backend.compat`), so TFLearn and Keras
calls can be mixed freely in one process and eager mode is never turned off.
Variables get TFLearn's default names (``Conv2D/W`` ... ``FullyConnected_2/b``),
those of the published checkpoints.  :func:`load_forward` is the entry point
of prediction: a checkpoint becomes a callable on float32 batches, and the
network is kept for the next call with the same, unchanged checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from gamornet.core.cache import ModelCache
from gamornet.core.network import DENSE_INIT_STDDEV, LAYERS, LRN_SETTINGS, WEIGHTED_LAYERS, tflearn_variable_prefixes
from gamornet.tflearn_backend.compat import BUILD_LOCK, building_graph, import_tf1, import_tflearn
from gamornet.weights.paths import CHECKPOINT_SUFFIXES, fingerprint, resolve_checkpoint_prefix, strip_checkpoint_suffix
from gamornet.weights.tf1 import checkpoint_variable_shapes

__all__ = [
    "TFLearnNetwork",
    "TFLearnForward",
    "build_tflearn_network",
    "restore_tflearn_weights",
    "save_tflearn_checkpoint",
    "load_forward",
    "clear_tflearn_models",
    "reset_tflearn_state",
    "CHECKPOINT_PREFIX",
    "FINAL_MODEL_PREFIX",
    "DEFAULT_DECAY_STEP",
    "loss_for_tflearn",
]

#: Prefix of TFLearn's per-epoch checkpoints (``check-<step>``) in ``files_save_path``.
CHECKPOINT_PREFIX = "check"
#: Prefix of the final model written by training (``trained_model.index`` etc.).
FINAL_MODEL_PREFIX = "trained_model"
#: TFLearn's default ``decay_step`` of ``Momentum``: the learning rate is
#: multiplied by ``decay`` once every this many training steps (continuously).
DEFAULT_DECAY_STEP = 100

_TFLEARN_LOSSES = (
    "categorical_crossentropy",
    "softmax_categorical_crossentropy",
    "binary_crossentropy",
    "weighted_crossentropy",
    "mean_square",
    "hinge_loss",
    "roc_auc_score",
    "weak_cross_entropy_2d",
)
#: Keras spellings accepted for the TFLearn losses of the same meaning.
_LOSS_ALIASES = {"mse": "mean_square", "mean_squared_error": "mean_square", "hinge": "hinge_loss"}


@dataclass
class TFLearnNetwork:
    """A GaMorNet network built with TFLearn in a graph of its own.

    Attributes
    ----------
    graph : tf.Graph
        The graph holding the network.
    dnn : tflearn.DNN
        TFLearn's model (session, trainer, predictor); its methods run in
        ``graph``.
    inputs : tf.Tensor
        The image placeholder ``InputData/X``.
    outputs : tf.Tensor
        Softmax probabilities ``[disk, indeterminate, bulge]``.
    variables : list of (W, b)
        The variables of the 8 weighted layers, in order [2, 5, 8, 9, 10, 13, 15, 17].
    input_shape : tuple of int
        ``(height, width, channels)``.
    """

    graph: Any
    dnn: Any
    inputs: Any
    outputs: Any
    variables: list
    input_shape: tuple

    @property
    def session(self):
        """The TensorFlow session holding the variable values."""
        return self.dnn.session

    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Current ``(kernel, bias)`` values of the 8 weighted layers."""
        return [tuple(self.session.run([w, b])) for w, b in self.variables]

    def set_weights(self, arrays, layers_bools=None, source: str = "") -> None:
        """Load ``(kernel, bias)`` arrays into the weighted layers marked True in ``layers_bools``."""
        layers_bools = layers_bools or (True,) * len(WEIGHTED_LAYERS)
        chosen = [(spec, wb, pair) for spec, wb, pair, use in zip(WEIGHTED_LAYERS, self.variables, arrays,
                                                                  layers_bools) if use]
        for spec, (w, b), pair in chosen:  # check every shape before changing anything
            expected = [tuple(w.shape.as_list()), tuple(b.shape.as_list())]
            received = [tuple(np.shape(a)) for a in pair]
            if expected != received:
                raise ValueError(_shape_mismatch(source, spec, self.input_shape, expected, received))
        with self.graph.as_default():
            for _, variables, pair in chosen:
                for var, value in zip(variables, pair):
                    # Feeds the value to the variable's initializer: no constant is added to the graph.
                    var.load(np.asarray(value, dtype=np.float32), self.session)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of one float32 batch (dropout off)."""
        return self.session.run(self.outputs, feed_dict={self.inputs: images})

    def close(self) -> None:
        """Close the session and free its memory."""
        with contextlib.suppress(Exception):
            self.dnn.session.close()


def _shape_mismatch(source, spec, input_shape, expected, received) -> str:
    return (
        f"The weights in {source!r} do not fit layer {spec.number} ({spec.name}) of a model with "
        f"input_shape={tuple(input_shape)}: expected {expected}, found {received}. Was the model trained for "
        "another input shape?"
    )


_OPTIMIZER_CLASS = None


def _momentum_class(tflearn):
    """TFLearn's ``Momentum`` with Nesterov support and its learning rate always a named graph tensor."""
    global _OPTIMIZER_CLASS
    if _OPTIMIZER_CLASS is not None:
        return _OPTIMIZER_CLASS
    tf1 = import_tf1()

    class GaMorNetMomentum(tflearn.optimizers.Momentum):
        """``tflearn.Momentum``, plus ``nesterov``; lr = ``learning_rate * lr_decay^(step / decay_step)``."""

        def __init__(self, learning_rate, momentum=0.9, lr_decay=0.0, decay_step=DEFAULT_DECAY_STEP,
                     nesterov=False, name="Momentum"):
            super().__init__(learning_rate, momentum, lr_decay, decay_step, staircase=False, name=name)
            self.has_decay = lr_decay > 0.0
            self.nesterov = bool(nesterov)

        def build(self, step_tensor=None):
            self.built = True
            rate = tf1.constant(float(self.learning_rate), dtype=tf1.float32, name="learning_rate")
            if self.has_decay:
                if step_tensor is None:
                    raise ValueError("Learning-rate decay needs the training step tensor.")
                rate = tf1.train.exponential_decay(rate, step_tensor, self.decay_step, self.lr_decay,
                                                   staircase=self.staircase, name="decayed_learning_rate")
            tf1.add_to_collection(tf1.GraphKeys.LR_VARIABLES, rate)
            self.learning_rate_tensor = rate
            self.tensor = tf1.train.MomentumOptimizer(rate, self.momentum, use_locking=self.use_locking,
                                                      name=self.name, use_nesterov=self.nesterov)

    _OPTIMIZER_CLASS = GaMorNetMomentum
    return GaMorNetMomentum


_DNN_CLASS = None


def _dnn_class(tflearn):
    """``tflearn.DNN`` whose methods run in the network's own graph (not the global default one)."""
    global _DNN_CLASS
    if _DNN_CLASS is not None:
        return _DNN_CLASS

    def in_graph(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with self.net.graph.as_default():
                return method(self, *args, **kwargs)

        return wrapper

    namespace = {
        name: in_graph(getattr(tflearn.DNN, name))
        for name in ("fit", "fit_batch", "predict", "predict_label", "save", "load", "get_weights", "set_weights",
                     "evaluate")
    }
    namespace["__doc__"] = "``tflearn.DNN`` bound to the graph its network was built in."
    _DNN_CLASS = type("GaMorNetDNN", (tflearn.DNN,), namespace)
    return _DNN_CLASS


def loss_for_tflearn(loss):
    """A TFLearn loss name for ``loss`` (Keras spellings accepted), or the callable itself."""
    if callable(loss):
        return loss
    name = _LOSS_ALIASES.get(loss, loss)
    if name not in _TFLEARN_LOSSES:
        raise ValueError(f"`loss` must be a TFLearn loss ({', '.join(_TFLEARN_LOSSES)}) or a callable "
                         f"f(y_pred, y_true). Received: loss={loss!r}")
    return name


def build_tflearn_network(input_shape, trainable_bools=None, restore_bools=None, training: dict | None = None,
                          checkpoint_path: str | None = None, max_checkpoints: int | None = None,
                          tensorboard_dir: str | None = None) -> TFLearnNetwork:
    """Build GaMorNet with TFLearn's layer functions, in a new graph, from :data:`gamornet.core.network.LAYERS`.

    Variables get TFLearn's default names (``Conv2D/W``, ``Conv2D/b``,
    ``Conv2D_1/W`` ... ``FullyConnected_2/b``), those of the published
    checkpoints.  Weights start as TFLearn initialises them: convolutions
    uniform within +-sqrt(3 / fan_in) (``uniform_scaling``), dense layers
    truncated normal with stddev 0.02, biases zero.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``, already resolved.
    trainable_bools : sequence of 8 bool, optional
        ``trainable=`` of each weighted layer (default all True).
    restore_bools : sequence of 8 bool, optional
        ``restore=`` of each weighted layer: whether TFLearn's own
        ``DNN.load`` restores it (default all True).
    training : dict, optional
        Add TFLearn's ``regression`` layer (the training op) with these
        settings: ``lr``, ``momentum``, ``decay``, ``decay_step``,
        ``nesterov``, ``loss``, ``batch_size``.  None builds an
        inference-only network.
    checkpoint_path, max_checkpoints, tensorboard_dir
        Passed to ``tflearn.DNN``.

    Returns
    -------
    TFLearnNetwork
    """
    tflearn = import_tflearn()
    n = len(WEIGHTED_LAYERS)
    trainable_bools = tuple(trainable_bools) if trainable_bools is not None else (True,) * n
    restore_bools = tuple(restore_bools) if restore_bools is not None else (True,) * n
    lrn = LRN_SETTINGS["tflearn"]
    with building_graph() as graph:
        net = tflearn.input_data(shape=[None, *input_shape], name="InputData")
        inputs = net
        weighted = []
        for spec in LAYERS:
            if spec.kind in ("conv", "dense"):
                i = len(weighted)
                common = dict(activation=spec.activation, bias_init="zeros", regularizer=None,
                              trainable=trainable_bools[i], restore=restore_bools[i])
                if spec.kind == "conv":
                    net = tflearn.conv_2d(net, spec.filters, spec.kernel, strides=spec.strides, padding=spec.padding,
                                          weights_init="uniform_scaling", **common)
                else:
                    init = tflearn.initializations.truncated_normal(stddev=DENSE_INIT_STDDEV["tflearn"])
                    net = tflearn.fully_connected(net, spec.units, weights_init=init, **common)
                weighted.append((net.W, net.b))
            elif spec.kind == "maxpool":
                net = tflearn.max_pool_2d(net, spec.kernel, strides=spec.strides, padding=spec.padding)
            elif spec.kind == "lrn":
                net = tflearn.local_response_normalization(net, depth_radius=int(lrn["depth_radius"]), bias=lrn["k"],
                                                           alpha=lrn["alpha"], beta=lrn["beta"])
            elif spec.kind == "flatten":
                net = tflearn.flatten(net)
            elif spec.kind == "dropout":
                net = tflearn.dropout(net, 1.0 - spec.rate)  # TFLearn takes the KEEP probability
            else:  # pragma: no cover - guarded by the network description
                raise AssertionError(spec.kind)
        outputs = net
        if training is not None:
            optimizer = _momentum_class(tflearn)(
                training["lr"], momentum=training["momentum"], lr_decay=training["decay"],
                decay_step=training.get("decay_step", DEFAULT_DECAY_STEP), nesterov=training["nesterov"],
            )
            net = tflearn.regression(net, optimizer=optimizer, loss=loss_for_tflearn(training["loss"]),
                                     batch_size=training.get("batch_size", 64))
        kwargs = {"tensorboard_verbose": 0, "checkpoint_path": checkpoint_path, "max_checkpoints": max_checkpoints}
        if tensorboard_dir is not None:
            kwargs["tensorboard_dir"] = tensorboard_dir
        dnn = _dnn_class(tflearn)(net, **kwargs)
        tflearn.is_training(False, session=dnn.session)
    return TFLearnNetwork(graph, dnn, inputs, outputs, weighted, tuple(input_shape))


def restore_tflearn_weights(network: TFLearnNetwork, prefix: str, layers_bools=None, everything: bool = False,
                            source: str | None = None) -> None:
    """Restore weights from a TF1 checkpoint into a built network.

    Parameters
    ----------
    network : TFLearnNetwork
        A network from :func:`build_tflearn_network`.
    prefix : str
        Checkpoint prefix (an extension is accepted).
    layers_bools : sequence of 8 bool, optional
        Restore only the weighted layers marked True (default all).
    everything : bool
        Also restore every other variable the checkpoint holds with the same
        name and shape (momentum slots, step counters): continuing a training.
    source : str, optional
        Name of the model for error messages.

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If it is not readable, lacks a GaMorNet variable, or a layer's shape
        does not fit the network's input shape.
    """
    tf1 = import_tf1()
    prefix = resolve_checkpoint_prefix(prefix)
    source = source or prefix
    shapes = checkpoint_variable_shapes(prefix)
    layers_bools = layers_bools or (True,) * len(WEIGHTED_LAYERS)
    var_map = {}
    for spec, scope, (w, b), use in zip(WEIGHTED_LAYERS, tflearn_variable_prefixes(), network.variables,
                                        layers_bools):
        if not use:
            continue
        names = (f"{scope}/W", f"{scope}/b")
        missing = [name for name in names if name not in shapes]
        if missing:
            raise ValueError(f"`model_load_path`={source!r} is not a GaMorNet TFLearn checkpoint: it has no "
                             f"variable {missing[0]!r} (layer {spec.number}).")
        expected = [tuple(w.shape.as_list()), tuple(b.shape.as_list())]
        received = [tuple(shapes[name]) for name in names]
        if expected != received:
            raise ValueError(_shape_mismatch(source, spec, network.input_shape, expected, received))
        var_map.update(zip(names, (w, b)))
    if everything:
        for var in network.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES):
            name = var.op.name
            if (name not in var_map and name != "is_training" and name in shapes
                    and tuple(shapes[name]) == tuple(var.shape.as_list())):
                var_map[name] = var
    if not var_map:
        return
    with network.graph.as_default():
        saver = tf1.train.Saver(var_list=var_map)
        try:
            saver.restore(network.session, prefix)
        except tf1.errors.OpError as exc:
            raise ValueError(f"`model_load_path`={source!r} could not be read as a TFLearn checkpoint: "
                             f"{exc.message}") from None
        if everything:
            trainer = network.dnn.trainer
            trainer.training_state.step = int(network.session.run(trainer.global_step))


def save_tflearn_checkpoint(network: TFLearnNetwork, prefix: str) -> str:
    """Save every variable of ``network`` as a TF1 checkpoint, atomically.

    The three files (``.data-00000-of-00001``, ``.index``, ``.meta``) are
    written under temporary names in the target directory, then renamed into
    place (the index last).  No ``checkpoint`` index file is written.

    Returns
    -------
    str
        The checkpoint prefix.
    """
    tflearn = import_tflearn()
    tf1 = import_tf1()
    prefix = os.path.abspath(strip_checkpoint_suffix(os.fspath(prefix)))
    directory, base = os.path.split(prefix)
    os.makedirs(directory, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{base}.", suffix=".part", dir=directory)
    try:
        tmp_prefix = os.path.join(tmp_dir, base)
        with network.graph.as_default():
            saved = tflearn.utils.fix_saver()  # TFLearn's own step: keep Python objects out of the .meta
            try:
                saver = tf1.train.Saver(var_list=network.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES),
                                        max_to_keep=None, allow_empty=True)
                saver.save(network.session, tmp_prefix, write_meta_graph=True, write_state=False)
            finally:
                tflearn.utils.fix_saver(saved)
        for suffix in sorted(CHECKPOINT_SUFFIXES, key=lambda s: s == ".index"):  # the index last
            os.replace(tmp_prefix + suffix, prefix + suffix)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix


#: The network kept for reuse by :func:`load_forward` (one: a TFLearn network holds a session).
_NETWORKS = ModelCache(1, close=lambda network: network.close())


def clear_tflearn_models() -> None:
    """Close and forget the TFLearn network kept for reuse by :func:`load_forward`."""
    _NETWORKS.clear()


def reset_tflearn_state() -> None:
    """What ``clear_session=True`` does: drop TFLearn / TF1 graph state; Keras models stay usable."""
    clear_tflearn_models()
    tf1 = import_tf1()
    with BUILD_LOCK, contextlib.suppress(AssertionError):  # refused inside a graph context: nothing to reset
        tf1.reset_default_graph()
    gc.collect()


class TFLearnForward:
    """A TFLearn network's forward pass: ``forward(batch)`` -> probabilities ``(b, 3)`` float32 (dropout off)."""

    engine = "tflearn"
    precision = "float32"

    def __init__(self, network: TFLearnNetwork, owned: bool = False):
        self.network, self._owned = network, owned

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.predict(batch), np.float32)

    def close(self) -> None:
        """Close the network if it is not kept for reuse."""
        if self._owned:
            self.network.close()


def load_forward(path, input_shape, *, trainable_bools=None, reuse: bool = True, source: str | None = None
                 ) -> TFLearnForward:
    """The forward pass of a TFLearn checkpoint, built for ``input_shape``.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint prefix (an extension is accepted).
    input_shape : tuple of int
        ``(height, width, channels)``.
    trainable_bools : sequence of 8 bool, optional
        ``trainable=`` of the weighted layers (no effect on predictions).
    reuse : bool
        Reuse the network built for the same, unchanged checkpoint and shape.
    source : str, optional
        Name of the model for error messages.
    """
    prefix = resolve_checkpoint_prefix(path)
    trainable = tuple(trainable_bools) if trainable_bools is not None else None
    key = (fingerprint(prefix), tuple(input_shape))
    network = _NETWORKS.get(key) if reuse else None
    if network is None:
        network = build_tflearn_network(tuple(input_shape), trainable_bools=trainable)
        try:
            restore_tflearn_weights(network, prefix, source=source or prefix)
        except BaseException:
            network.close()
            raise
        if reuse:
            _NETWORKS.put(key, network)
    return TFLearnForward(network, owned=not reuse)
