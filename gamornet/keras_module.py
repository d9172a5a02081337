"""GaMorNet on Keras 3: predict, train from scratch, transfer learning.

Names, parameters and defaults are those of GaMorNet 0.4.3; the known
defects of that release are fixed (paths are joined as paths, default bool
lists are never emptied, published models are cached instead of fetched on
every call).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from gamornet import utils
from gamornet.batching import format_predictions, predict_in_batches
from gamornet.keras_model import apply_weights, build_keras_model, load_keras_model, read_weights, weighted_layers

__all__ = ["gamornet_predict_keras", "gamornet_train_keras", "gamornet_tl_keras", "gamornet_build_model_keras"]

#: File names written into ``files_save_path`` by training.
METRICS_FILE = "metrics.csv"
FINAL_MODEL_FILE = "trained_model.keras"
CHECKPOINT_FILE = "model_{epoch:04d}.keras"


def gamornet_build_model_keras(input_shape, lrn: str = "keras") -> keras.Model:
    """A new, untrained GaMorNet Keras model.

    Parameters
    ----------
    input_shape : str or tuple
        ``"SDSS"`` (167, 167, 1), ``"CANDELS"`` (83, 83, 1) or ``(height, width, channels)``.
    lrn : {"keras", "tflearn"}
        Flavour of the local response normalisation.
    """
    return build_keras_model(utils.check_input_shape(input_shape), lrn=lrn)


def _forward_function(model: keras.Model, training: bool = False):
    """A compiled forward pass of ``model`` on numpy batches, built once per model."""
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
    else:  # other Keras backends: eager calls, still without the fit/predict data pipeline

        def fn(batch):
            return keras.ops.convert_to_numpy(model(batch, training=training))

    setattr(model, attr, fn)
    return fn


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 64, progress: bool = False,
                          training: bool = False) -> np.ndarray:
    """Probabilities ``(N, 3)`` of validated images, batch by batch through a compiled function.

    ``training=True`` keeps dropout active (Monte-Carlo dropout).
    """
    return predict_in_batches(_forward_function(model, training), images, batch_size, progress)


def gamornet_predict_keras(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False, *,
                           lrn: str | None = None, progress: bool = False, reuse_model: bool = True):
    """Predict morphology probabilities with a trained Keras GaMorNet model.

    Parameters
    ----------
    img_array : numpy.ndarray, shape (N, height, width, channels)
        Images, not preprocessed (integer arrays are cast to float32).
    model_load_path : str
        A saved model: a ``.keras`` file, a Keras-2-era ``.h5`` / ``.hdf5``
        file (full model or weights only), a TFLearn checkpoint prefix, or the
        name of a published model (``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim``,
        ``CANDELS_tl``), fetched once into the cache.
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``: the shape
        the model was trained for; every image must have it.
    batch_size : int
        Images per forward pass; never changes the results.
    individual_arrays : bool
        Return the three columns as separate arrays.
    lrn : {"keras", "tflearn"}, optional
        LRN flavour; by default the one the file implies (``"tflearn"`` for
        TFLearn checkpoints, else ``"keras"``).
    progress : bool
        Show a progress bar.
    reuse_model : bool
        Reuse the model built by an earlier call with the same, unchanged file.

    Returns
    -------
    numpy.ndarray, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per image; with
        ``individual_arrays``, a tuple of three (N,) arrays.
    """
    shape = utils.check_input_shape(input_shape)
    images = utils.check_images(img_array, "img_array", shape)
    batch_size = utils.check_positive_int(batch_size, "batch_size")
    if lrn not in (None, "keras", "tflearn"):
        raise ValueError(f"`lrn` must be None, 'keras' or 'tflearn'. Received: lrn={lrn!r}")
    path = utils.resolve_model_path(model_load_path, "keras", progress=progress)
    model = load_keras_model(path, shape, lrn=lrn, reuse=reuse_model)
    probabilities = predict_probabilities(model, images, batch_size, progress)
    return format_predictions(probabilities, individual_arrays)


class _PeriodicCheckpoint(keras.callbacks.Callback):
    """Save the whole model every ``freq`` epochs, atomically."""

    def __init__(self, directory: str, freq: int):
        super().__init__()
        self.directory, self.freq = directory, freq

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq == 0:
            _save_model(self.model, os.path.join(self.directory, CHECKPOINT_FILE.format(epoch=epoch + 1)))


def _save_model(model: keras.Model, path: str) -> None:
    with utils.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _optimizer(lr, momentum, decay, nesterov) -> keras.optimizers.Optimizer:
    """SGD with momentum; ``decay`` follows Keras 2: ``lr / (1 + decay * iterations)``."""
    rate = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay) if decay else lr
    return keras.optimizers.SGD(learning_rate=rate, momentum=momentum, nesterov=bool(nesterov))


def _fit(model, data, files_save_path, epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss,
         save_model, verbose) -> keras.Model:
    x, y, vx, vy = data
    save_dir = utils.resolve_save_dir(files_save_path)
    model.compile(optimizer=_optimizer(lr, momentum, decay, nesterov), loss=loss, metrics=["accuracy"])
    callbacks = []
    if save_dir is not None:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(save_dir, METRICS_FILE)))
        if checkpoint_freq:
            callbacks.append(_PeriodicCheckpoint(save_dir, checkpoint_freq))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(vx, vy), shuffle=True,
              callbacks=callbacks, verbose=verbose)
    if save_model and save_dir is not None:
        _save_model(model, os.path.join(save_dir, FINAL_MODEL_FILE))
    return model


def _check_fit_args(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, verbose):
    utils.check_positive_int(epochs, "epochs")
    utils.check_positive_int(checkpoint_freq, "checkpoint_freq", minimum=0)
    utils.check_positive_int(batch_size, "batch_size")
    utils.check_optimizer_args(lr, momentum, decay, nesterov, loss)
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")


def gamornet_train_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                         files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.0001,
                         momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy",
                         load_model=False, model_load_path="./", save_model=True, verbose=1):
    """Train GaMorNet (Keras) from scratch, or continue training a saved model.

    Parameters
    ----------
    training_imgs, validation_imgs : numpy.ndarray, shape (N, height, width, channels)
        Images, not preprocessed.
    training_labels, validation_labels : numpy.ndarray, shape (N, 3)
        One-hot labels: disk [1,0,0], indeterminate [0,1,0], bulge [0,0,1].
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    files_save_path : str
        Directory for ``metrics.csv`` (one row per epoch, written as training
        goes), checkpoints ``model_NNNN.keras`` and the final
        ``trained_model.keras``; created if missing.  ``/dev/null`` saves nothing.
    epochs : int
        Passes over the training set.
    checkpoint_freq : int
        Save the model every this many epochs (0: never).
    batch_size : int
        Images per gradient step.
    lr, momentum, decay, nesterov
        SGD settings; the learning rate decays as ``lr / (1 + decay * step)``.
    loss : str or callable
        Keras loss.
    load_model : bool
        Start from the model at ``model_load_path`` instead of new weights.
    model_load_path : str
        Saved model (any form :func:`gamornet_predict_keras` accepts), used
        only when ``load_model`` is True.
    save_model : bool
        Save the final model (checkpoints are governed by ``checkpoint_freq``).
    verbose : {0, 1, 2}
        Keras' progress output: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns
    -------
    keras.Model
        The trained model.
    """
    shape, *data = utils.check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    _check_fit_args(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, verbose)
    utils.resolve_save_dir(files_save_path)
    if load_model:
        path = utils.resolve_model_path(model_load_path, "keras", progress=bool(verbose))
        weights = read_weights(path)
        model = build_keras_model(shape, lrn=weights.lrn, preprocessing=weights.preprocessing)
        apply_weights(model, weights, input_shape=shape)
    else:
        model = build_keras_model(shape)
    return _fit(model, data, files_save_path, epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov,
                loss, save_model, verbose)


def gamornet_tl_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                      load_layers_bools=[True] * 8, trainable_bools=[True] * 8, model_load_path="./",
                      files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.00001, momentum=0.9,
                      decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True, verbose=1):
    """Transfer learning: start from a trained model, load some layers, freeze some, train.

    Parameters
    ----------
    load_layers_bools : list of 8 bool or str
        Which of the weighted layers [2, 5, 8, 9, 10, 13, 15, 17] take their
        weights from ``model_load_path`` (the others start new); or a preset
        (``"load_bools_SDSS"``, ``"load_bools_CANDELS"``).
    trainable_bools : list of 8 bool or str
        Which weighted layers are trained (the others stay frozen); or a
        preset (``"train_bools_SDSS"``, ``"train_bools_CANDELS"``).
    model_load_path : str
        The starting model: a file, a TFLearn checkpoint prefix or a
        published model name (e.g. ``"SDSS_sim"``).
    lr : float
        Learning rate (smaller by default than for training from scratch).

    The other parameters and the return value are those of
    :func:`gamornet_train_keras`.  The default lists are never modified, so
    the function can be called any number of times.
    """
    shape, *data = utils.check_training_inputs(training_imgs, training_labels, validation_imgs, validation_labels,
                                               input_shape)
    load_bools = utils.check_bools(load_layers_bools, "load_layers_bools")
    train_bools = utils.check_bools(trainable_bools, "trainable_bools")
    _check_fit_args(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, verbose)
    utils.resolve_save_dir(files_save_path)
    path = utils.resolve_model_path(model_load_path, "keras", progress=bool(verbose))
    weights = read_weights(path)
    model = build_keras_model(shape, lrn=weights.lrn, preprocessing=weights.preprocessing)
    apply_weights(model, weights, layers_bools=load_bools, input_shape=shape)
    for layer, trainable in zip(weighted_layers(model), train_bools):
        layer.trainable = trainable
    return _fit(model, data, files_save_path, epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov,
                loss, save_model, verbose)
