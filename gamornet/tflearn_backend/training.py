"""Training GaMorNet with TFLearn: the engine behind :func:`gamornet.tflearn_module.gamornet_train_tflearn`."""

from __future__ import annotations

import os
import shutil
import tempfile

from gamornet.core.files import resolve_save_dir
from gamornet.core.validation import check_flag, check_optimizer_args, check_positive_int
from gamornet.tflearn_backend.network import (
    CHECKPOINT_PREFIX,
    FINAL_MODEL_PREFIX,
    build_tflearn_network,
    loss_for_tflearn,
    reset_tflearn_state,
    restore_tflearn_weights,
    save_tflearn_checkpoint,
)

__all__ = ["check_fit_args", "fit"]


def check_fit_args(epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss, save_model,
                   show_metric, clear_session, decay_step) -> None:
    """Check the settings of a TFLearn training run (before any work)."""
    check_positive_int(epochs, "epochs")
    if max_checkpoints is not None:
        check_positive_int(max_checkpoints, "max_checkpoints")
    check_positive_int(batch_size, "batch_size")
    check_optimizer_args(lr, momentum, decay, nesterov, loss)
    if decay > 1:
        raise ValueError("`decay` is TFLearn's decay rate: the learning rate is multiplied by `decay` every "
                         f"`decay_step` steps, so it must be in [0, 1] (0: no decay). Received: decay={decay!r}")
    if not callable(loss):
        loss_for_tflearn(loss)
    check_flag(save_model, "save_model")
    check_flag(show_metric, "show_metric")
    check_flag(clear_session, "clear_session")
    check_positive_int(decay_step, "decay_step")


def fit(shape, data, *, files_save_path, epochs, max_checkpoints, batch_size, lr, momentum, decay, nesterov, loss,
         save_model, show_metric, clear_session, decay_step, tensorboard_dir, load_path, load_bools, trainable_bools,
         everything):
    """Build (and restore) a TFLearn network and train it on in-memory arrays; returns its ``tflearn.DNN``."""
    x, y, vx, vy = data
    save_dir = resolve_save_dir(files_save_path)
    if clear_session:
        reset_tflearn_state()
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
