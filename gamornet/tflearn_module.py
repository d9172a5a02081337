"""GaMorNet on TFLearn 0.5.0 (running on TensorFlow 2): predict, train from scratch, transfer learning.

Names, parameters and defaults are those of GaMorNet 0.4.3.  The known
defects of that release are fixed: ``lr`` reaches the optimiser (0.4.3 always
used 0.001), the default bool lists are never modified, save paths are joined
as paths (trailing slash optional) and published models are cached instead of
fetched on every call.

Each call builds its network from :data:`gamornet.core.network.LAYERS` in a graph
of its own (see :mod:`gamornet.tflearn_backend.compat`), so TFLearn and Keras calls
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

import os
from typing import Any

from gamornet import engines
from gamornet.core.files import resolve_save_dir
from gamornet.core.progress import format_predictions, predict_in_batches
from gamornet.core.validation import (
    check_bools,
    check_flag,
    check_input_shape,
    check_predict_inputs,
    check_training_inputs,
    pixels_checked_first,
)
from gamornet.published.models import resolve_model_path
from gamornet.tflearn_backend.network import (
    CHECKPOINT_PREFIX,
    DEFAULT_DECAY_STEP,
    FINAL_MODEL_PREFIX,
    TFLearnNetwork,
    build_tflearn_network,
    clear_tflearn_models,
    reset_tflearn_state,
    restore_tflearn_weights,
    save_tflearn_checkpoint,
)
from gamornet.tflearn_backend.training import check_fit_args, fit
from gamornet.weights.paths import resolve_checkpoint_prefix

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
    shape = check_input_shape(input_shape)
    trainable = check_bools(trainable_bools, "trainable_bools")
    restore = check_bools(load_layers_bools, "load_layers_bools")
    return build_tflearn_network(shape, trainable_bools=trainable, restore_bools=restore).dnn


def gamornet_predict_tflearn(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False,
                             trainable_bools=[True] * 8, clear_session=False, *, progress: bool = True,
                             reuse_model: bool = True, engine: str = "auto", precision: str = "float32"):
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
    engine : {"auto", "tflearn", "keras", "openvino"}
        What computes the probabilities (keyword only; see
        :mod:`gamornet.engines`): ``"tflearn"`` TFLearn itself;
        ``"keras"`` the checkpoint's weights in the Keras model with the
        TFLearn LRN (equal to TFLearn within float32 rounding);
        ``"openvino"`` that model converted for OpenVINO
        (converted once per checkpoint and stored in the cache); ``"auto"`` OpenVINO when installed, else TFLearn.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` needs the Keras or OpenVINO engine (keyword only).

    Returns
    -------
    numpy.ndarray, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per image; with
        ``individual_arrays``, a tuple of three (N,) arrays.
    """
    shape, images, batch_size = check_predict_inputs(img_array, input_shape, batch_size, finite=False)
    with pixels_checked_first(images, "img_array"):  # pixels are checked batch by batch, ahead of the model
        individual_arrays = check_flag(individual_arrays, "individual_arrays")
        trainable = check_bools(trainable_bools, "trainable_bools")
        clear_session = check_flag(clear_session, "clear_session")
        progress = check_flag(progress, "progress")
        reuse_model = check_flag(reuse_model, "reuse_model")
        choice = engines.choose_engine(engine, precision, flavor="tflearn")
        if clear_session:
            reset_tflearn_state()
        source = model_load_path if isinstance(model_load_path, str) else os.fspath(model_load_path)
        prefix = resolve_checkpoint_prefix(resolve_model_path(model_load_path, "tflearn", progress=progress))
        forward = engines.load_forward(prefix, shape, choice, trainable_bools=trainable, reuse=reuse_model,
                                       source=source, progress=progress)
    try:
        probabilities = predict_in_batches(forward, images, batch_size, progress,
                                           label=f"Predicting ({choice.label})", check="img_array")
    finally:
        if hasattr(forward, "close"):
            forward.close()
    return format_predictions(probabilities, individual_arrays)


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
    shape, *data = check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                    show_metric, clear_session, decay_step)
    load_model = check_flag(load_model, "load_model")
    resolve_save_dir(files_save_path, create=False)
    load_path = None
    if load_model:
        load_path = (resolve_checkpoint_prefix(resolve_model_path(model_load_path, "tflearn")),
                     os.fspath(model_load_path))
    return fit(shape, data, files_save_path=files_save_path, epochs=epochs, max_checkpoints=max_checkpoints,
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
    shape, *data = check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    load_bools = check_bools(load_layers_bools, "load_layers_bools")
    train_bools = check_bools(trainable_bools, "trainable_bools")
    check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                    show_metric, clear_session, decay_step)
    resolve_save_dir(files_save_path, create=False)
    load_path = None
    if any(load_bools):
        load_path = (resolve_checkpoint_prefix(resolve_model_path(model_load_path, "tflearn")),
                     os.fspath(model_load_path))
    return fit(shape, data, files_save_path=files_save_path, epochs=epochs, max_checkpoints=max_checkpoints,
                batch_size=batch_size, lr=lr, momentum=momentum, decay=decay, nesterov=nesterov, loss=loss,
                save_model=save_model, show_metric=show_metric, clear_session=clear_session, decay_step=decay_step,
                tensorboard_dir=tensorboard_dir, load_path=load_path, load_bools=load_bools,
                trainable_bools=train_bools, everything=False)
