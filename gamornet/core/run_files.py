"""Names of the files in the folder of a training run, known without importing a deep-learning framework.

The Keras trainer (:mod:`gamornet.keras_backend.training`) writes them; the
command line and the adaptation workflow (:mod:`gamornet.adapt`) find runs
and their results by them.
"""

from __future__ import annotations

import json
import os

__all__ = ["METRICS_FILE", "FINAL_MODEL_FILE", "CHECKPOINT_FILE", "STATE_MODEL_FILE", "STATE_FILE",
           "BEST_WEIGHTS_FILE", "read_run_state"]

#: One row per epoch (``epoch`` counting from 0, the losses and metrics, the learning rate).
METRICS_FILE = "metrics.csv"
#: The trained model (its weights; the optimiser state only when asked).
FINAL_MODEL_FILE = "trained_model.keras"
#: The periodic checkpoints (``checkpoint_freq``).
CHECKPOINT_FILE = "model_{epoch:04d}.keras"
#: The model after the last finished epoch, with the optimiser state: what a resumed run starts from.
STATE_MODEL_FILE = "last.keras"
#: The run's state after each epoch (epochs done, random states, the settings of the command).
STATE_FILE = "run_state.json"
#: The weights of the best epoch (early stopping).
BEST_WEIGHTS_FILE = "best_weights.npz"


def read_run_state(directory) -> dict | None:
    """The ``run_state.json`` of a resumable run in ``directory`` (None if there is none)."""
    path = os.path.join(os.fspath(directory), STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
