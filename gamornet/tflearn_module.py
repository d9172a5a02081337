"""GaMorNet on TFLearn 0.5.0 (running on TensorFlow 2): predict, train from scratch, transfer learning.

Names, parameters and defaults are those of GaMorNet 0.4.3.  The known
defects of that release are fixed: ``lr`` reaches the optimiser (0.4.3 always
used 0.001), the default bool lists are never modified, save paths are joined
as paths (trailing slash optional) and published models are cached instead of
fetched on every call.

Each call builds its network from :data:`gamornet.network.LAYERS` in a graph
of its own (see :mod:`gamornet.tflearn_compat`), so TFLearn and Keras calls
can be mixed freely in one process and eager mode is never turned off.
TFLearn itself is imported on the first call, not when this module is
imported.

Files written into ``files_save_path`` by the training functions (each a TF1
checkpoint of three files ``<prefix>.index``, ``<prefix>.meta`` and
``<prefix>.data-00000-of-00001``):

- ``check-<step>``: TFLearn's checkpoint at the end of every epoch, ``<step>``
  being the number of gradient steps so far; only the ``max_checkpoints`` most
  recent are kept, and TFLearn's ``checkpoint`` index file names the latest.
- ``trained_model``: the final model (when ``save_model``), written
  atomically.

Both hold every variable of the graph (weights, momentum slots, step
counters) under TFLearn's default names (``Conv2D/W`` ... ``FullyConnected_2/b``),
as the published checkpoints do, so plain TFLearn code loads them too.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gamornet import utils
from gamornet.batching import format_predictions, predict_in_batches
from gamornet.network import DENSE_INIT_STDDEV, LAYERS, LRN_SETTINGS, WEIGHTED_LAYERS, tflearn_variable_prefixes

__all__ = [
    "gamornet_predict_tflearn",
    "gamornet_train_tflearn",
    "gamornet_tl_tflearn",
    "gamornet_build_model_tflearn",
    "TFLearnNetwork",
    "build_tflearn_network",
    "restore_tflearn_weights",
    "save_tflearn_checkpoint",
    "clear_tflearn_models",
    "CHECKPOINT_PREFIX",
    "FINAL_MODEL_PREFIX",
    "DEFAULT_DECAY_STEP",
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


# ---------------------------------------------------------------------------
# Building, restoring, saving
# ---------------------------------------------------------------------------


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
    from gamornet.tflearn_compat import import_tf1

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


def _loss_for_tflearn(loss):
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
    """Build GaMorNet with TFLearn's layer functions, in a new graph, from :data:`gamornet.network.LAYERS`.

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
    from gamornet.tflearn_compat import building_graph, import_tflearn

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
            net = tflearn.regression(net, optimizer=optimizer, loss=_loss_for_tflearn(training["loss"]),
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
    from gamornet.convert import checkpoint_variable_shapes, resolve_checkpoint_prefix
    from gamornet.tflearn_compat import import_tf1

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
    from gamornet.convert import CHECKPOINT_SUFFIXES, strip_checkpoint_suffix
    from gamornet.tflearn_compat import import_tf1, import_tflearn

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


# ---------------------------------------------------------------------------
# Models kept between predict calls
# ---------------------------------------------------------------------------

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def clear_tflearn_models() -> None:
    """Close and forget the TFLearn network kept by :func:`gamornet_predict_tflearn` for reuse."""
    with _CACHE_LOCK:
        networks = list(_CACHE.values())
        _CACHE.clear()
    for network in networks:
        network.close()


def _clear_session() -> None:
    """What ``clear_session=True`` does: drop TFLearn / TF1 graph state; Keras models stay usable."""
    clear_tflearn_models()
    from gamornet.tflearn_compat import BUILD_LOCK, import_tf1

    tf1 = import_tf1()
    with BUILD_LOCK, contextlib.suppress(AssertionError):  # refused inside a graph context: nothing to reset
        tf1.reset_default_graph()
    gc.collect()


def _file_key(prefix: str) -> tuple:
    files = [prefix + ".index", prefix + ".data-00000-of-00001"]
    return tuple((os.path.abspath(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files if os.path.exists(p))


def _predict_network(prefix: str, shape: tuple, trainable: tuple, reuse: bool, source: str) -> TFLearnNetwork:
    key = (_file_key(prefix), shape)
    if reuse:
        with _CACHE_LOCK:
            network = _CACHE.get(key)
        if network is not None:
            return network
    network = build_tflearn_network(shape, trainable_bools=trainable)
    try:
        restore_tflearn_weights(network, prefix, source=source)
    except BaseException:
        network.close()
        raise
    if reuse:
        with _CACHE_LOCK:
            old = list(_CACHE.values())
            _CACHE.clear()
            _CACHE[key] = network
        for stale in old:
            stale.close()
    return network


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def gamornet_build_model_tflearn(input_shape, trainable_bools=[True] * 8, load_layers_bools=[True] * 8) -> Any:
    """A new, untrained GaMorNet TFLearn model (``tflearn.DNN``, inference only) in a graph of its own.

    Parameters
    ----------
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    trainable_bools, load_layers_bools : list of 8 bool or str
        ``trainable=`` / ``restore=`` of the weighted layers (or a preset).

    Returns
    -------
    tflearn.DNN
    """
    shape = utils.check_input_shape(input_shape)
    trainable = utils.check_bools(trainable_bools, "trainable_bools")
    restore = utils.check_bools(load_layers_bools, "load_layers_bools")
    return build_tflearn_network(shape, trainable_bools=trainable, restore_bools=restore).dnn


def gamornet_predict_tflearn(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False,
                             trainable_bools=[True] * 8, clear_session=False, *, progress: bool = True,
                             reuse_model: bool = True):
    """Predict morphology probabilities with a trained TFLearn GaMorNet model.

    Parameters
    ----------
    img_array : numpy.ndarray, shape (N, height, width, channels)
        Images, not preprocessed (integer arrays are cast to float32).
    model_load_path : str
        A TFLearn checkpoint prefix (e.g. ``.../check-1405593``; one of its
        file names with ``.index``, ``.meta`` or ``.data-00000-of-00001`` is
        accepted too), or the name of a published model (``SDSS_sim``,
        ``SDSS_tl``, ``CANDELS_sim``, ``CANDELS_tl``), fetched once into the
        cache.
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``: the shape
        the model was trained for; every image must have it.
    batch_size : int
        Images per forward pass; never changes the results.  A last, partial
        batch and ``N < batch_size`` are handled.
    individual_arrays : bool
        Return the three columns as separate arrays.
    trainable_bools : list of 8 bool or str
        ``trainable=`` of the weighted layers, as in 0.4.3; it has no effect
        on predictions.
    clear_session : bool
        First drop the TFLearn / TF1 graph state of earlier calls (the
        network kept for reuse, the global TF1 graph).  Keras models are not
        affected.
    progress : bool
        Show a progress bar (keyword only).
    reuse_model : bool
        Reuse the network built by the previous call for the same, unchanged
        checkpoint and input shape (keyword only).

    Returns
    -------
    numpy.ndarray, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per image; with
        ``individual_arrays``, a tuple of three (N,) arrays.
    """
    shape, images, batch_size = utils.check_predict_inputs(img_array, input_shape, batch_size)
    individual_arrays = _check_flag(individual_arrays, "individual_arrays")
    trainable = utils.check_bools(trainable_bools, "trainable_bools")
    clear_session = _check_flag(clear_session, "clear_session")
    progress = _check_flag(progress, "progress")
    reuse_model = _check_flag(reuse_model, "reuse_model")
    from gamornet.convert import resolve_checkpoint_prefix

    if clear_session:
        _clear_session()
    source = model_load_path if isinstance(model_load_path, str) else os.fspath(model_load_path)
    prefix = resolve_checkpoint_prefix(utils.resolve_model_path(model_load_path, "tflearn", progress=progress))
    network = _predict_network(prefix, shape, trainable, reuse_model, source)
    try:
        probabilities = predict_in_batches(network.predict, images, batch_size, progress)
    finally:
        if not reuse_model:
            network.close()
    return format_predictions(probabilities, individual_arrays)


def _check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                    show_metric, clear_session, decay_step):
    utils.check_positive_int(epochs, "epochs")
    if max_checkpoints is not None:
        utils.check_positive_int(max_checkpoints, "max_checkpoints")
    utils.check_positive_int(batch_size, "batch_size")
    utils.check_optimizer_args(lr, momentum, decay, nesterov, loss)
    if decay > 1:
        raise ValueError("`decay` is TFLearn's decay rate: the learning rate is multiplied by `decay` every "
                         f"`decay_step` steps, so it must be in [0, 1] (0: no decay). Received: decay={decay!r}")
    if not callable(loss):
        _loss_for_tflearn(loss)
    _check_flag(save_model, "save_model")
    _check_flag(show_metric, "show_metric")
    _check_flag(clear_session, "clear_session")
    utils.check_positive_int(decay_step, "decay_step")


def _fit(shape, data, *, files_save_path, epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss,
         save_model, show_metric, clear_session, decay_step, tensorboard_dir, load_path, load_bools, trainable_bools,
         everything):
    x, y, vx, vy = data
    save_dir = utils.resolve_save_dir(files_save_path)
    if clear_session:
        _clear_session()
    training = dict(lr=float(lr), momentum=float(momentum), decay=float(decay), decay_step=int(decay_step),
                    nesterov=bool(nesterov), loss=loss, batch_size=batch_size)
    checkpoint_path = os.path.join(save_dir, CHECKPOINT_PREFIX) if save_dir is not None else None
    log_dir = tensorboard_dir if tensorboard_dir is not None else tempfile.mkdtemp(prefix="gamornet_tflearn_logs_")
    try:
        network = build_tflearn_network(
            shape, trainable_bools=trainable_bools, restore_bools=load_bools, training=training,
            checkpoint_path=checkpoint_path, max_checkpoints=max_checkpoints,
            tensorboard_dir=os.path.join(log_dir, ""),
        )
        if load_path is not None:
            restore_tflearn_weights(network, load_path[0], layers_bools=load_bools, everything=everything,
                                    source=load_path[1])
        network.dnn.fit(x, y, n_epoch=epochs, validation_set=(vx, vy), show_metric=show_metric,
                        batch_size=batch_size, shuffle=True, snapshot_epoch=True, run_id="gamornet")
    finally:
        if tensorboard_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)
    if save_model and save_dir is not None:
        save_tflearn_checkpoint(network, os.path.join(save_dir, FINAL_MODEL_PREFIX))
    return network.dnn


def gamornet_train_tflearn(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                           files_save_path="./", epochs=100, max_checkpoints=1, batch_size=64, lr=0.0001,
                           momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy",
                           load_model=False, model_load_path="./", save_model=True, show_metric=True,
                           clear_session=False, *, decay_step: int = DEFAULT_DECAY_STEP,
                           tensorboard_dir: str | None = None):
    """Train GaMorNet (TFLearn) from scratch, or continue training a saved model.

    Parameters
    ----------
    training_imgs, validation_imgs : numpy.ndarray, shape (N, height, width, channels)
        Images, not preprocessed.
    training_labels, validation_labels : numpy.ndarray, shape (N, 3)
        One-hot labels: disk [1,0,0], indeterminate [0,1,0], bulge [0,0,1].
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    files_save_path : str
        Directory (created if missing; trailing slash optional) for TFLearn's
        checkpoints ``check-<step>`` (one per epoch, ``<step>`` = gradient
        steps so far) and the final model ``trained_model`` (each three files
        ``.index``, ``.meta``, ``.data-00000-of-00001``).  ``/dev/null``
        saves nothing.
    epochs : int
        Passes over the training set.
    max_checkpoints : int or None
        How many of the most recent ``check-<step>`` checkpoints are kept
        (None: all).
    batch_size : int
        Images per gradient step.
    lr : float
        Learning rate of the momentum optimiser (it is used: 0.4.3 ignored it).
    momentum : float
        Momentum.
    decay : float
        TFLearn's learning-rate decay rate (``lr_decay`` of
        ``tflearn.Momentum``): the rate is
        ``lr * decay ** (step / decay_step)``, decaying continuously by a
        factor ``decay`` every ``decay_step`` (default 100) training steps.
        0 means no decay; it must be in [0, 1].  (Not the Keras-2
        ``lr / (1 + decay * step)`` of :func:`gamornet_train_keras`.)
    nesterov : bool
        Use Nesterov momentum.
    loss : str or callable
        A TFLearn loss name (``categorical_crossentropy``, ``mean_square``,
        ...) or a function ``f(y_pred, y_true)`` returning a tensor.
    load_model : bool
        Start from the checkpoint at ``model_load_path`` (weights, momentum
        slots and step counters), continuing its training.
    model_load_path : str
        Checkpoint prefix or published model name, used only when
        ``load_model`` is True.
    save_model : bool
        Save the final model ``trained_model`` (checkpoints are written
        regardless, unless ``files_save_path`` is ``/dev/null``).
    show_metric : bool
        Show the accuracy at every step in TFLearn's log.
    clear_session : bool
        First drop the TFLearn / TF1 graph state of earlier calls; Keras
        models are not affected.
    decay_step : int
        Steps per factor ``decay`` of the learning rate (keyword only).
    tensorboard_dir : str, optional
        Where TFLearn writes its TensorBoard logs (keyword only); by default
        a temporary directory removed when training ends.

    Returns
    -------
    tflearn.DNN
        The trained model; its methods (``predict``, ``save``, ``load``,
        ``fit``) run in the model's own graph.
    """
    shape, *data = utils.check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    _check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                    show_metric, clear_session, decay_step)
    load_model = _check_flag(load_model, "load_model")
    utils.resolve_save_dir(files_save_path)
    load_path = None
    if load_model:
        from gamornet.convert import resolve_checkpoint_prefix

        load_path = (resolve_checkpoint_prefix(utils.resolve_model_path(model_load_path, "tflearn")),
                     os.fspath(model_load_path))
    return _fit(shape, data, files_save_path=files_save_path, epochs=epochs, max_checkpoints=max_checkpoints,
                batch_size=batch_size, lr=lr, momentum=momentum, decay=decay, nesterov=nesterov, loss=loss,
                save_model=save_model, show_metric=show_metric, clear_session=clear_session, decay_step=decay_step,
                tensorboard_dir=tensorboard_dir, load_path=load_path, load_bools=None, trainable_bools=None,
                everything=True)


def gamornet_tl_tflearn(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                        load_layers_bools=[True] * 8, trainable_bools=[True] * 8, model_load_path="./",
                        files_save_path="./", epochs=100, max_checkpoints=1, batch_size=64, lr=0.00001,
                        momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True,
                        show_metric=True, clear_session=False, *, decay_step: int = DEFAULT_DECAY_STEP,
                        tensorboard_dir: str | None = None):
    """Transfer learning with TFLearn: start from a trained model, load some layers, freeze some, train.

    Parameters
    ----------
    load_layers_bools : list of 8 bool or str
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] take their
        weights from ``model_load_path`` (the others start new; TFLearn
        ``restore=``); or a preset (``"load_bools_SDSS"``,
        ``"load_bools_CANDELS"``).
    trainable_bools : list of 8 bool or str
        Which weighted layers are trained (TFLearn ``trainable=``; the others
        stay frozen); or a preset (``"train_bools_SDSS"``,
        ``"train_bools_CANDELS"``).
    model_load_path : str
        The starting model: a TFLearn checkpoint prefix or a published model
        name (e.g. ``"SDSS_sim"``).  Only the weights of the loaded layers are
        taken from it; the optimiser and step counters start afresh.
    lr : float
        Learning rate (smaller by default than for training from scratch).

    Notes
    -----
    The other parameters, the files written and the return value are those of
    :func:`gamornet_train_tflearn`.  The default lists are never modified, so
    the function can be called any number of times.
    """
    shape, *data = utils.check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    load_bools = utils.check_bools(load_layers_bools, "load_layers_bools")
    train_bools = utils.check_bools(trainable_bools, "trainable_bools")
    _check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                    show_metric, clear_session, decay_step)
    utils.resolve_save_dir(files_save_path)
    load_path = None
    if any(load_bools):
        from gamornet.convert import resolve_checkpoint_prefix

        load_path = (resolve_checkpoint_prefix(utils.resolve_model_path(model_load_path, "tflearn")),
                     os.fspath(model_load_path))
    return _fit(shape, data, files_save_path=files_save_path, epochs=epochs, max_checkpoints=max_checkpoints,
                batch_size=batch_size, lr=lr, momentum=momentum, decay=decay, nesterov=nesterov, loss=loss,
                save_model=save_model, show_metric=show_metric, clear_session=clear_session, decay_step=decay_step,
                tensorboard_dir=tensorboard_dir, load_path=load_path, load_bools=load_bools,
                trainable_bools=train_bools, everything=False)
