"""GaMorNet on Keras 3: predict, train from scratch, transfer learning.

Names, parameters and defaults are those of GaMorNet 0.4.3; the known
defects of that release are fixed (paths are joined as paths, default bool
lists are never emptied, published models are cached instead of fetched on
every call).
"""

from __future__ import annotations

import os

import keras

from gamornet import data, engines
from gamornet.core.files import resolve_save_dir
from gamornet.core.network import PREPROCESSING_KEYS, STRETCHES
from gamornet.core.progress import format_predictions, predict_in_batches
from gamornet.core.validation import (
    check_bools,
    check_choice,
    check_flag,
    check_input_shape,
    check_predict_inputs,
    pixels_checked_first,
)
from gamornet.data.cards import training_card
from gamornet.keras_backend import training
from gamornet.keras_backend.layers import PixelScaling
from gamornet.keras_backend.model import apply_weights, build_keras_model, read_weights, weighted_layers
from gamornet.published.models import resolve_model_path

__all__ = ["gamornet_predict_keras", "gamornet_train_keras", "gamornet_tl_keras", "gamornet_build_model_keras"]

#: File names written into ``files_save_path`` by training (defined in :mod:`gamornet.keras_backend.training`).
METRICS_FILE = training.METRICS_FILE
FINAL_MODEL_FILE = training.FINAL_MODEL_FILE
CHECKPOINT_FILE = training.CHECKPOINT_FILE


def gamornet_build_model_keras(input_shape, lrn: str = "keras") -> keras.Model:
    """A new, untrained GaMorNet Keras model.

    Parameters
    ----------
    input_shape : str or tuple
        ``"SDSS"`` (167, 167, 1), ``"CANDELS"`` (83, 83, 1) or ``(height, width, channels)``.
    lrn : {"keras", "tflearn"}
        Flavour of the local response normalisation.
    """
    return build_keras_model(check_input_shape(input_shape), lrn=lrn)


def gamornet_predict_keras(img_array, model_load_path, input_shape, batch_size=64, individual_arrays=False, *,
                           lrn: str | None = None, progress: bool = True, reuse_model: bool = True,
                           engine: str = "auto", precision: str = "float32"):
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
        TFLearn checkpoints, else the flavour stored in the model).  Another
        flavour than the file's builds the network with the LRN asked for
        and copies the weights into it; the predictions then differ (each
        set of weights was trained with one flavour).
    progress : bool
        Show a progress bar.
    reuse_model : bool
        Reuse the model built by an earlier call with the same, unchanged file.
    engine : {"auto", "keras", "openvino"}
        What computes the probabilities (:mod:`gamornet.engines`):
        ``"keras"`` the Keras model on the active backend; ``"openvino"``
        the model converted for OpenVINO (converted once per file and stored in the cache, float32 within about 2e-6 of
        Keras); ``"auto"`` OpenVINO when installed and no NVIDIA GPU is visible, else Keras.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` (OpenVINO, or Keras' ``mixed_bfloat16`` policy) is
        faster on CPUs with native bfloat16 (figures on the performance
        page) and moves probabilities by up to about 1e-2; elsewhere it
        warns.

    Returns
    -------
    numpy.ndarray, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per image; with
        ``individual_arrays``, a tuple of three (N,) arrays.
    """
    for name, flag in (("individual_arrays", individual_arrays), ("progress", progress),
                       ("reuse_model", reuse_model)):
        check_flag(flag, name)
    shape, images, batch_size = check_predict_inputs(img_array, input_shape, batch_size, finite=False)
    with pixels_checked_first(images, "img_array"):  # pixels are checked batch by batch, ahead of the model
        check_choice(lrn, "lrn", ("keras", "tflearn"), allow_none=True)
        choice = engines.choose_engine(engine, precision)
        path = resolve_model_path(model_load_path, "keras", progress=progress)
        forward = engines.load_forward(path, shape, choice, lrn=lrn, reuse=reuse_model, progress=progress,
                                       source=os.fspath(model_load_path))
    probabilities = predict_in_batches(forward, images, batch_size, progress, label=f"Predicting ({choice.label})",
                                       check="img_array")
    return format_predictions(probabilities, individual_arrays)


_DATA_DOC = """training_imgs, validation_imgs
        The images, not preprocessed, in any of these forms:

        - a numpy array ``(N, height, width, channels)`` (checked in full);
        - a ``numpy.memmap`` or the path of a ``.npy`` file (header and a
          sample checked; read batch by batch, never loaded whole);
        - the folder written by ``gamornet simulate`` (``images.npy`` and
          ``catalog.ecsv``; the labels default to its catalog);
        - a ``tf.data.Dataset`` of ``(images, onehot_labels)`` elements or
          batches (its labels are used: give None as labels);
        - a :class:`gamornet.data.Source`, e.g.
          :class:`gamornet.data.SimulatedSource` (new simulated galaxies every
          epoch) or :class:`gamornet.data.ArraySource` (labels None).

        ``validation_imgs`` and ``validation_labels`` may both be None (no
        validation).
    training_labels, validation_labels
        For arrays and stacks: one-hot rows ``(N, 3)`` (disk [1,0,0],
        indeterminate [0,1,0], bulge [0,0,1]), class names ``(N,)``, or a
        catalog (an astropy table or file) with a ``label`` column of class
        names (or ``class_index``, or one-hot columns ``disk``,
        ``indeterminate``, ``bulge``).  None for datasets and sources."""

_OPTIONS_DOC = """augment : {None, "flips", "rotate", "flips+rotate"}, keyword-only
        Random augmentation of the training batches, labels unchanged:
        ``flips`` one of the 8 right-angle rotations / flips per image,
        ``rotate`` a uniform angle about the image centre (bilinear).
    schedule : {None, "decay", "plateau"}, keyword-only
        ``None`` / ``"decay"``: the 0.4.3 rule ``lr / (1 + decay * step)``.
        ``"plateau"``: multiply the rate by ``plateau_factor`` after
        ``plateau_patience`` epochs without a lower validation loss
        (``decay`` must then be 0).
    plateau_factor, plateau_patience : float, int, keyword-only
        Settings of the plateau schedule.
    early_stopping : int, optional, keyword-only
        Stop after this many epochs without a lower validation loss and
        restore the weights of the best epoch.
    resume : bool, keyword-only
        Make the run resumable: after every epoch save ``last.keras`` (model
        and optimiser state) and ``run_state.json`` in ``files_save_path``.
        If they are already there, continue that run from its last completed
        epoch (model, optimiser, random generator states of the dropout
        layers, settings of the optimiser and schedule, epoch counter and
        metrics log as saved; ``epochs`` may be raised): on the same machine
        the result equals that of an uninterrupted run (for a
        ``tf.data.Dataset``, if its own order does not change from one
        reading to the next).  Temporary files left by a killed run are
        removed when a run starts in the directory, and a directory that
        another run is writing into is refused.
    mixed_precision : {None, "bfloat16", "float16"}, keyword-only
        Compute in this precision (variables and outputs stay float32);
        ``float16`` only on a GPU.  ``bfloat16`` pays off only where the
        hardware has it (GPUs, CPUs with AVX-512 BF16 / AMX): on an AVX2-only
        CPU it trained about 10x slower than float32.
    steps_per_epoch : int, optional, keyword-only
        Batches per epoch of an infinite ``tf.data.Dataset`` (a finite one
        is then read again from its start when it ends).
    seed : int, optional, keyword-only
        Seed of the weight initialisation, shuffling and augmentation.
    callbacks : list of keras.callbacks.Callback, optional, keyword-only
        Extra callbacks, run after GaMorNet's own.
    optimizer : {"sgd", "adam"}, keyword-only
        ``sgd`` (default): SGD with ``momentum`` / ``nesterov``, as GaMorNet
        was trained.  ``adam``: Adam with learning rate ``lr`` (``momentum``
        and ``nesterov`` unused), which learns from scratch in far fewer
        epochs.
    keep_optimizer : bool, keyword-only
        Save the optimiser's state in ``trained_model.keras`` too (a file
        about twice as large with SGD momentum, three times with Adam), to
        continue training that file with ``model.fit``.  By default it holds
        the weights only and loads uncompiled; it predicts and starts
        transfer learning all the same, and resumable runs continue from
        ``last.keras``, which always keeps the optimiser.
    card : ModelCard or dict, optional, keyword-only
        Facts of the training images saved with the model as its card
        (:mod:`gamornet.published.cards`; read back by
        :func:`~gamornet.published.cards.read_card`), e.g.
        ``{"band": "SDSS r", "pixel_scale_arcsec": 0.396}``.  Unset
        fields come from the data where it knows them (the survey settings of
        a :class:`gamornet.data.SimulatedSource`), else stay unknown."""

_FILES_DOC = """files_save_path : str
        Directory for ``metrics.csv`` (one row per epoch, written as each
        epoch ends; its ``epoch`` column counts from 0, as Keras'
        ``CSVLogger`` writes it, and ``learning_rate`` is the rate at the end
        of the epoch), checkpoints ``model_NNNN.keras`` (NNNN counting from
        1) and the final ``trained_model.keras``; created if missing.
        ``/dev/null`` saves nothing."""


def _check_data(training_imgs, training_labels, validation_imgs, validation_labels, input_shape):
    shape = check_input_shape(input_shape)
    train = data.as_source(training_imgs, training_labels, shape, "training")
    if validation_imgs is None and validation_labels is None:
        return shape, train, None
    val = data.as_source(validation_imgs, validation_labels, shape, "validation")
    if (isinstance(train, data.SimulatedSource) and isinstance(val, data.SimulatedSource) and train.seed == val.seed
            and train.config == val.config):
        raise ValueError(f"`validation_imgs` must simulate other galaxies than `training_imgs`: give it another "
                         f"seed. Received: seed={val.seed} for both")
    return shape, train, val


def _check_preprocessing(preprocessing) -> dict | None:
    if preprocessing is None:
        return None
    config = {"stretch": preprocessing} if isinstance(preprocessing, str) else preprocessing
    if (not isinstance(config, dict) or not set(config) <= set(PREPROCESSING_KEYS)
            or config.get("stretch", "linear") not in STRETCHES):
        raise ValueError(f"`preprocessing` must be None, a stretch name ({', '.join(STRETCHES)}) or a dict with keys "
                         f"{list(PREPROCESSING_KEYS)}. Received: preprocessing={preprocessing!r}")
    PixelScaling(**config)  # checks the values
    return dict(config)


def _check_save_path(files_save_path) -> None:
    """The checks of :func:`gamornet.core.files.resolve_save_dir`, without creating the directory yet."""
    resolve_save_dir(files_save_path, create=False)


def _resumes(files_save_path, opts: training.FitOptions) -> bool:
    """Whether the run continues a run in ``files_save_path`` with completed epochs (no starting model needed)."""
    if not opts.resume or not isinstance(files_save_path, (str, os.PathLike)) or not os.path.isdir(files_save_path):
        return False
    state = training.read_run_state(files_save_path)
    return bool(state and state.get("completed_epochs"))


def gamornet_train_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                         files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.0001,
                         momentum=0.9, decay=0.0, nesterov=False, loss="categorical_crossentropy",
                         load_model=False, model_load_path="./", save_model=True, verbose=1, *,
                         preprocessing=None, augment=None, schedule=None, plateau_factor=0.1, plateau_patience=10,
                         early_stopping=None, resume=False, mixed_precision=None, steps_per_epoch=None, seed=None,
                         callbacks=None, optimizer="sgd", keep_optimizer=False, card=None):
    """Train GaMorNet (Keras) from scratch, or continue training a saved model.

    Parameters
    ----------
    {data}
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    {files}
    epochs : int
        Passes over the training set (epochs of ``steps_per_epoch`` batches
        for simulated sources and infinite datasets).
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
    verbose : {{0, 1, 2}}
        Progress output: 0 silent; 1 a live bar of each epoch's images on a
        terminal, then one line per epoch with images per second (in a file
        or a pipe only those lines, without escape codes); 2 Keras' own line
        per epoch.
    preprocessing : str or dict, optional, keyword-only
        Pixel scaling stored in the model, so the saved model takes raw
        pixels: a stretch name (``"linear"``, ``"asinh"``, ``"per_image"``)
        or a :class:`gamornet.keras_backend.layers.PixelScaling` configuration
        (``stretch``, ``offset``, ``scale``).  With ``load_model`` it replaces
        the loaded model's scaling.
    {options}

    Returns
    -------
    keras.Model
        The trained model (with early stopping, the best epoch's weights).
    """
    check_flag(load_model, "load_model")
    shape, train, val = _check_data(training_imgs, training_labels, validation_imgs, validation_labels, input_shape)
    opts = training.check_fit_options(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss,
                                      save_model, verbose, augment, schedule, plateau_factor, plateau_patience,
                                      early_stopping, resume, mixed_precision, steps_per_epoch, seed, callbacks,
                                      optimizer, keep_optimizer)
    pre = _check_preprocessing(preprocessing)
    opts.card = training_card(card, train, shape, start=str(model_load_path) if load_model else None,
                              preprocessing=pre)
    _check_save_path(files_save_path)
    weights = None
    if load_model and not _resumes(files_save_path, opts):  # read and check the starting model before training
        weights = read_weights(resolve_model_path(model_load_path, "keras", progress=bool(verbose)))
    resolve_save_dir(files_save_path)

    def build() -> keras.Model:
        if weights is None:
            return build_keras_model(shape, preprocessing=pre, seed=opts.seed)
        model = build_keras_model(shape, lrn=weights.lrn, preprocessing=pre or weights.preprocessing, seed=opts.seed,
                                  widths=weights.widths())
        apply_weights(model, weights, input_shape=shape)
        return model

    return training.fit_model(build, train, val, files_save_path, opts)


def gamornet_tl_keras(training_imgs, training_labels, validation_imgs, validation_labels, input_shape,
                      load_layers_bools=[True] * 8, trainable_bools=[True] * 8, model_load_path="./",
                      files_save_path="./", epochs=100, checkpoint_freq=0, batch_size=64, lr=0.00001, momentum=0.9,
                      decay=0.0, nesterov=False, loss="categorical_crossentropy", save_model=True, verbose=1, *,
                      augment=None, schedule=None, plateau_factor=0.1, plateau_patience=10, early_stopping=None,
                      resume=False, mixed_precision=None, steps_per_epoch=None, seed=None, callbacks=None,
                      optimizer="sgd", keep_optimizer=False, card=None):
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
        published model name (e.g. ``"SDSS_sim"``).  Its pixel scaling, if
        any, is kept.
    lr : float
        Learning rate (smaller by default than for training from scratch).

    Notes
    -----
    The other parameters (data forms, files, keyword-only options) and the
    return value are those of :func:`gamornet_train_keras`.  The default lists
    are never modified, so the function can be called any number of times.
    """
    shape, train, val = _check_data(training_imgs, training_labels, validation_imgs, validation_labels, input_shape)
    load_bools = check_bools(load_layers_bools, "load_layers_bools")
    train_bools = check_bools(trainable_bools, "trainable_bools")
    opts = training.check_fit_options(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss,
                                      save_model, verbose, augment, schedule, plateau_factor, plateau_patience,
                                      early_stopping, resume, mixed_precision, steps_per_epoch, seed, callbacks,
                                      optimizer, keep_optimizer)
    opts.card = training_card(card, train, shape, start=str(model_load_path), transfer=True)
    _check_save_path(files_save_path)
    if not _resumes(files_save_path, opts):  # fetch and check the starting model now, before training
        weights = read_weights(resolve_model_path(model_load_path, "keras", progress=bool(verbose)))
    resolve_save_dir(files_save_path)

    def build() -> keras.Model:
        model = build_keras_model(shape, lrn=weights.lrn, preprocessing=weights.preprocessing, seed=opts.seed,
                                  widths=weights.widths())
        apply_weights(model, weights, layers_bools=load_bools, input_shape=shape)
        for layer, trainable in zip(weighted_layers(model), train_bools):
            layer.trainable = trainable
        return model

    return training.fit_model(build, train, val, files_save_path, opts)


if gamornet_train_keras.__doc__:  # None under python -OO
    gamornet_train_keras.__doc__ = gamornet_train_keras.__doc__.format(data=_DATA_DOC, files=_FILES_DOC,
                                                                       options=_OPTIONS_DOC)
