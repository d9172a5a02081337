"""The Keras training engine behind :func:`gamornet_train_keras` and :func:`gamornet_tl_keras`.

- Optimiser: SGD with momentum (optionally Nesterov); by default the
  learning rate follows GaMorNet 0.4.3 (Keras 2 decay,
  ``lr / (1 + decay * iterations)``); ``schedule="plateau"`` divides it when
  the validation loss stops improving.  ``early_stopping=N`` stops after N
  epochs without improvement and restores the best weights.
- Outputs in ``files_save_path``: ``metrics.csv`` (one row per epoch, flushed
  as each epoch ends; ``epoch`` counts from 0 as Keras' ``CSVLogger`` writes
  it, with a ``learning_rate`` column: the rate at the end of that epoch),
  ``model_NNNN.keras`` every ``checkpoint_freq`` epochs and the final
  ``trained_model.keras``, each written atomically, with the model's card
  (:mod:`gamornet.published.cards`) as the archive's ``gamornet_card.json``.  The final model holds
  the weights without the optimiser's state (about half the size with SGD
  momentum, a third with Adam; loaded uncompiled) unless ``keep_optimizer``;
  checkpoints keep the optimiser, so training can continue from them.
- ``verbose=1``: on a terminal a live bar of each epoch's images, then one
  line per epoch (images, time, images per second, metrics); written to a
  file or a pipe only those lines, plain text.  ``verbose=2``: Keras' own
  line per epoch.
- Resumable runs (``resume=True``) also write, after every epoch, with early
  stopping ``best_weights.npz``, then the state checkpoint ``last.keras``
  (model and optimiser state, and inside the same archive the epoch's
  training state: completed epochs, optimiser step count, early-stopping /
  plateau counters and the states of the model's random generators, i.e.
  the seed generators of the dropout layers), then ``run_state.json`` (the
  same, with the seed and settings).  Resuming truncates ``metrics.csv`` to
  the completed epochs, reloads the checkpoint with its training state and
  continues with ``initial_epoch``; shuffling and augmentation are drawn
  from the seed and the epoch / batch number.  An interrupted and resumed
  run therefore takes the same steps on the same batches with the same
  dropout masks as an uninterrupted one, and ends with a metrics log without
  gaps or duplicates.
- While a run writes into ``files_save_path`` it holds a lock on that
  directory (a second run there is refused).  A run starting there first
  removes temporary files left by a killed run (``.NAME.*.part*`` beside
  its own outputs); a run that fails removes its own.
- ``mixed_precision="bfloat16"`` / ``"float16"`` builds the model under a
  Keras mixed-precision policy (restored afterwards); the outputs stay float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import os
import re
import secrets
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from gamornet.core.files import atomic_path, output_lock, remove_temporaries, resolve_save_dir
from gamornet.core.progress import CURRENT_STDOUT, epoch_line, is_terminal, progress_bar
from gamornet.core.run_files import (
    BEST_WEIGHTS_FILE,
    CHECKPOINT_FILE,
    FINAL_MODEL_FILE,
    METRICS_FILE,
    STATE_FILE,
    STATE_MODEL_FILE,
    read_run_state,
)
from gamornet.core.validation import check_flag, check_optimizer_args, check_positive_int
from gamornet.data import Source, check_augment
from gamornet.keras_backend.frameworks import backend_name, has_gpu
from gamornet.keras_backend.model import CUSTOM_OBJECTS, check_keras_archive
from gamornet.published.cards import ModelCard, write_card_entry

__all__ = [
    "METRICS_FILE",
    "FINAL_MODEL_FILE",
    "CHECKPOINT_FILE",
    "STATE_MODEL_FILE",
    "STATE_FILE",
    "BEST_WEIGHTS_FILE",
    "FitOptions",
    "check_fit_options",
    "make_optimizer",
    "mixed_precision_policy",
    "fit_model",
    "read_run_state",
    "remove_run_temporaries",
    "random_state",
    "set_random_state",
    "recorded_settings",
]

#: Entry of ``last.keras`` (a zip archive) holding the epoch's training state, random states included.
CHECKPOINT_STATE_ENTRY = "gamornet_training_state.json"
SCHEDULES: tuple[str, ...] = ("decay", "plateau")
PRECISIONS: tuple[str, ...] = ("bfloat16", "float16")

#: Extra settings stored in ``run_state.json`` (the command line records its arguments there).
_RECORDED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("gamornet_recorded_settings", default=None)


@contextlib.contextmanager
def recorded_settings(settings: dict) -> Iterator[None]:
    """Store ``settings`` (JSON-able) under ``"cli"`` in the ``run_state.json`` of runs started inside."""
    token = _RECORDED.set(settings)
    try:
        yield
    finally:
        _RECORDED.reset(token)


# --------------------------------------------------------------------------- options


@dataclass
class FitOptions:
    """Checked training settings (see :func:`gamornet.keras_module.gamornet_train_keras`)."""

    epochs: int
    checkpoint_freq: int
    batch_size: int
    lr: float
    momentum: float
    decay: float
    nesterov: bool
    loss: Any
    save_model: bool
    verbose: Any
    augment: tuple = ()
    schedule: str = "decay"
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    early_stopping: int | None = None
    resume: bool = False
    mixed_precision: str | None = None
    steps_per_epoch: int | None = None
    seed: int | None = None
    callbacks: list = field(default_factory=list)
    optimizer: str = "sgd"
    keep_optimizer: bool = False
    card: ModelCard | None = None

    def as_json(self) -> dict:
        """The settings as JSON-able values (a callable loss by name; callbacks and card left out)."""
        out = asdict(self)
        out.pop("callbacks")
        out.pop("card")
        out["augment"] = list(self.augment)
        if not isinstance(self.loss, str):
            out["loss"] = getattr(self.loss, "__name__", repr(self.loss))
        return out


def _has_gpu() -> bool:
    return has_gpu()


def check_fit_options(epochs, checkpoint_freq, batch_size, lr, momentum, decay, nesterov, loss, save_model, verbose,
                      augment=None, schedule=None, plateau_factor=0.1, plateau_patience=10, early_stopping=None,
                      resume=False, mixed_precision=None, steps_per_epoch=None, seed=None,
                      callbacks=None, optimizer="sgd", keep_optimizer=False, card=None) -> FitOptions:
    """Check every training setting (error style of :mod:`gamornet.utils`); returns :class:`FitOptions`."""
    check_positive_int(epochs, "epochs")
    check_positive_int(checkpoint_freq, "checkpoint_freq", minimum=0)
    check_positive_int(batch_size, "batch_size")
    check_flag(nesterov, "nesterov")
    check_flag(save_model, "save_model")
    check_flag(resume, "resume")
    check_flag(keep_optimizer, "keep_optimizer")
    check_optimizer_args(lr, momentum, decay, nesterov, loss)
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
    schedule = "decay" if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be None, 'decay' or 'plateau'. Received: schedule={schedule!r}")
    if schedule == "plateau" and decay:
        raise ValueError(f"`decay` must be 0 with schedule='plateau' (one rule sets the learning rate). "
                         f"Received: decay={decay!r}")
    if isinstance(plateau_factor, bool) or not isinstance(plateau_factor, (int, float)) or not 0 < plateau_factor < 1:
        raise ValueError(f"`plateau_factor` must be a number in (0, 1). Received: plateau_factor={plateau_factor!r}")
    check_positive_int(plateau_patience, "plateau_patience", minimum=0)
    if early_stopping is not None:
        check_positive_int(early_stopping, "early_stopping")
    if mixed_precision not in (None, *PRECISIONS):
        raise ValueError(f"`mixed_precision` must be None, 'bfloat16' or 'float16'. "
                         f"Received: mixed_precision={mixed_precision!r}")
    if mixed_precision == "float16" and not _has_gpu():
        raise ValueError("`mixed_precision='float16'` needs a GPU (float16 is slow and loses accuracy on CPUs); "
                         "use 'bfloat16' on CPU. Received: mixed_precision='float16' without a visible GPU")
    if steps_per_epoch is not None:
        check_positive_int(steps_per_epoch, "steps_per_epoch")
    if seed is not None:
        check_positive_int(seed, "seed", minimum=0)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {list(OPTIMIZERS)}. Received: optimizer={optimizer!r}")
    callbacks = list(callbacks or [])
    if not all(isinstance(c, keras.callbacks.Callback) for c in callbacks):
        raise ValueError(f"`callbacks` must be a list of keras.callbacks.Callback. Received: callbacks={callbacks!r}")
    return FitOptions(int(epochs), int(checkpoint_freq), int(batch_size), float(lr), float(momentum), float(decay),
                      bool(nesterov), loss, bool(save_model), verbose, check_augment(augment), schedule,
                      float(plateau_factor), int(plateau_patience), early_stopping, bool(resume), mixed_precision,
                      steps_per_epoch, seed, callbacks, optimizer, bool(keep_optimizer), card)


#: Optimizers ``optimizer=`` accepts: ``sgd`` (GaMorNet's, the default) and ``adam``.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def make_optimizer(lr, momentum, decay, nesterov, optimizer: str = "sgd") -> keras.optimizers.Optimizer:
    """The optimizer; ``decay`` follows Keras 2: ``lr / (1 + decay * iterations)``.

    ``sgd`` is SGD with ``momentum`` (optionally Nesterov), as GaMorNet was
    trained; ``adam`` (``momentum`` and ``nesterov`` unused) learns in far
    fewer epochs from scratch and is what ``gamornet demo`` uses.
    """
    rate = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay) if decay else float(lr)
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.SGD(learning_rate=rate, momentum=momentum, nesterov=bool(nesterov))


@contextlib.contextmanager
def mixed_precision_policy(precision: str | None) -> Iterator[None]:
    """Set the Keras dtype policy ``mixed_<precision>`` inside (nothing for None); restore it after."""
    if precision is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(f"mixed_{precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------------------------------- callbacks and files


def _without_optimizer(model: keras.Model) -> keras.Model:
    """An uncompiled copy of ``model`` (same layers, configuration and weights), so it saves no optimiser state.

    Keras 3 ``.keras`` files have no ``include_optimizer=False``: a compiled
    model always saves its optimiser's variables (SGD momentum: one per
    weight; Adam: two).
    """
    with keras.saving.custom_object_scope(CUSTOM_OBJECTS):
        copy = type(model).from_config(model.get_config())  # unlike clone_model, not compiled
    copy.set_weights(model.get_weights())
    return copy


def _save_model(model: keras.Model, path: str, training_state: dict | None = None, optimizer: bool = True,
                card: ModelCard | None = None) -> None:
    """Save ``model`` atomically; ``training_state`` (JSON-able) and ``card`` go into the same archive.

    With ``optimizer=False`` the file holds the model and its weights only
    (loaded, it is uncompiled).
    """
    with atomic_path(path, suffix=".keras") as tmp:
        (model if optimizer or not model.compiled else _without_optimizer(model)).save(tmp)
        if training_state is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(CHECKPOINT_STATE_ENTRY, json.dumps(training_state))
        if card is not None:
            write_card_entry(tmp, card)


def _read_training_state(path: str) -> dict | None:
    """The training state saved inside a checkpoint by :func:`_save_model` (None if it has none)."""
    with zipfile.ZipFile(path) as archive:
        if CHECKPOINT_STATE_ENTRY not in archive.namelist():
            return None
        return json.loads(archive.read(CHECKPOINT_STATE_ENTRY))


def _random_state_variables(model: keras.Model) -> list:
    """The variables of the model's random generators (``keras.random.SeedGenerator`` states), in model order.

    Keras counts them among ``model.variables`` but not among
    ``model.weights``, and does not save them in ``.keras`` files.
    """
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def random_state(model: keras.Model) -> list[list[int]]:
    """The states of the model's random generators (the dropout layers' seed generators), as lists of ints."""
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _random_state_variables(model)]


def set_random_state(model: keras.Model, states: list) -> None:
    """Put back states returned by :func:`random_state` (of a model of the same architecture)."""
    variables = _random_state_variables(model)
    if len(variables) != len(states):
        raise RuntimeError(f"The saved training state holds {len(states)} random generator state(s); the model has "
                           f"{len(variables)}.")
    for variable, value in zip(variables, states):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _write_json(path: str, data: dict) -> None:
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=1)


def _as_float(value):
    return None if value is None else float(value)


class _PeriodicCheckpoint(keras.callbacks.Callback):
    """Save the whole model every ``freq`` epochs, atomically."""

    def __init__(self, directory: str, freq: int, card: ModelCard | None = None):
        super().__init__()
        self.directory, self.freq, self.card = directory, freq, card

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq == 0:
            _save_model(self.model, os.path.join(self.directory, CHECKPOINT_FILE.format(epoch=epoch + 1)),
                        card=self.card)


class _ValidationBatches(keras.utils.PyDataset):
    """A source's validation batches (:class:`gamornet.data.Batches`) as a Keras ``PyDataset``."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def _feeds(train: Source, val: Source | None, opts: FitOptions, initial_epoch: int, seed: int):
    """``(training data, steps per epoch, validation data)`` for ``model.fit`` on this Keras backend.

    TensorFlow takes the sources' ``tf.data`` pipelines (the fastest measured
    there); the other backends take the same batches as numpy: a generator
    read ahead in a thread, and a ``PyDataset`` for validation.
    """
    if backend_name() == "tensorflow":
        train_ds, steps = train.training_dataset(opts.batch_size, initial_epoch, seed, opts.augment,
                                                 opts.steps_per_epoch)
        return train_ds, steps, (val.validation_dataset(opts.batch_size) if val is not None else None)
    train_ds, steps = train.training_batches(opts.batch_size, initial_epoch, seed, opts.augment, opts.steps_per_epoch)
    return train_ds, steps, (_ValidationBatches(val.validation_batches(opts.batch_size)) if val is not None else None)


class _EpochFeed(keras.callbacks.Callback):
    """Set a data source's epoch variable as each epoch begins (before its batches are read)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(int(epoch))


class _LearningRateLog(keras.callbacks.Callback):
    """Put the current learning rate in the epoch logs (a ``learning_rate`` column of metrics.csv)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def _images_per_epoch(train: Source, steps: int, batch_size: int) -> int:
    """Training images of an epoch of ``steps`` batches (exact for a finite source read once per epoch)."""
    try:
        count = len(train)  # type: ignore[arg-type]
    except TypeError:
        return steps * batch_size
    return count if steps == -(-count // batch_size) else steps * batch_size


class _EpochProgress(keras.callbacks.Callback):
    """``verbose=1``: a live bar of the epoch's images on a terminal, then one plain line per epoch.

    Written to a file or a pipe, only the lines (no escape codes, no
    carriage returns): see :func:`gamornet.core.progress.epoch_line`.
    """

    def __init__(self, epochs: int, images: int, batch_size: int, stream=CURRENT_STDOUT):
        super().__init__()
        self.epochs, self.images, self.batch_size, self.stream = epochs, images, batch_size, stream
        self.live = is_terminal(stream)
        self.bar = None
        self.started = self.trained = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.trained = time.perf_counter()
        if self.live:
            self.bar = progress_bar(self.images, label=f"Epoch {epoch + 1}/{self.epochs}", stream=self.stream)

    def on_train_batch_end(self, batch, logs=None):
        self.trained = time.perf_counter()
        if self.bar is not None:
            self.bar.update(min((batch + 1) * self.batch_size, self.images))

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        line = epoch_line(epoch, self.epochs, self.images, now - self.started, logs,
                          train_seconds=self.trained - self.started)
        if self.bar is not None:
            self.bar.finish(end="")
            self.bar = None
            line = "\r\x1b[K" + line  # replace the bar on the terminal
        self.stream.write(line + "\n")
        self.stream.flush()


def _progress(opts: FitOptions, train: Source, steps: int) -> tuple[list, Any]:
    """``(callbacks, verbose for model.fit)``: GaMorNet's progress for ``verbose=1`` / ``"auto"``, else Keras'."""
    if opts.verbose in (1, "auto"):
        return [_EpochProgress(opts.epochs, _images_per_epoch(train, steps, opts.batch_size), opts.batch_size)], 0
    return [], opts.verbose


class _Plateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a resume."""

    def __init__(self, initial: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in self.initial.items():
            setattr(self, key, value)

    def get_state(self) -> dict:
        return {"best": _as_float(self.best), "wait": int(self.wait), "cooldown_counter": int(self.cooldown_counter)}


class _EarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping (best weights restored) whose counters and best weights survive a resume."""

    def __init__(self, initial: dict | None = None, best_weights=None, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.initial, self.initial_weights = initial or {}, best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in self.initial.items():
            setattr(self, key, value)
        self.best_weights = self.initial_weights

    def get_state(self) -> dict:
        return {"best": _as_float(self.best), "wait": int(self.wait), "best_epoch": int(self.best_epoch)}


class _RunStateWriter(keras.callbacks.Callback):
    """After each epoch: best weights if they changed, ``last.keras`` with the training state, ``run_state.json``.

    The training state (epoch count, optimiser steps, callback counters,
    random generator states) lives inside ``last.keras``, so it always
    matches the weights there, wherever a kill falls.  Best weights are
    written first: a kill before ``last.keras`` is replaced leaves the best
    weights of the epoch that the resumed run trains again.
    """

    def __init__(self, directory: str, state: dict, stateful: dict):
        super().__init__()
        self.directory, self.state, self.stateful = directory, state, stateful

    def on_epoch_end(self, epoch, logs=None):
        early = self.stateful.get("early_stopping")
        if early is not None and early.best_epoch == epoch and early.best_weights is not None:
            with atomic_path(os.path.join(self.directory, BEST_WEIGHTS_FILE), suffix=".npz") as tmp:
                np.savez(tmp, *early.best_weights)
        epoch_state = {"completed_epochs": epoch + 1, "iterations": int(self.model.optimizer.iterations),
                       "stopped": bool(self.model.stop_training),
                       "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
                       "random_state": random_state(self.model)}
        _save_model(self.model, os.path.join(self.directory, STATE_MODEL_FILE), training_state=epoch_state)
        self.state.update(epoch_state)
        _write_json(os.path.join(self.directory, STATE_FILE), self.state)


def _truncate_metrics(path: str, completed: int) -> None:
    """Keep the header and one row for each epoch < ``completed`` (the last written wins); drop partial lines."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    header = next(csv.reader(io.StringIO(lines[0])))
    column = header.index("epoch") if "epoch" in header else 0
    rows: dict[int, str] = {}
    for line in lines[1:]:
        fields = next(csv.reader(io.StringIO(line)), [])
        if not line.endswith("\n") or len(fields) != len(header):
            continue
        try:
            epoch = int(fields[column])
        except ValueError:
            continue
        if epoch < completed:
            rows[epoch] = line
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        f.writelines([lines[0], *(rows[e] for e in sorted(rows))])


def _load_best_weights(directory: str) -> list | None:
    path = os.path.join(directory, BEST_WEIGHTS_FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _load_checkpoint(path: str, loss) -> keras.Model:
    check_keras_archive(path, "checkpoint")
    custom = dict(CUSTOM_OBJECTS)
    if callable(loss) and hasattr(loss, "__name__"):
        custom[loss.__name__] = loss
    return keras.saving.load_model(path, custom_objects=custom, compile=True)


def _resume_model(save_dir: str, state: dict, opts: FitOptions) -> tuple[keras.Model, dict]:
    """Load ``last.keras`` with its optimiser and random states; returns the model and its training state.

    The training state is the one saved inside the checkpoint.  Checkpoints
    without one (written by earlier versions) are matched with
    ``run_state.json`` by their optimiser step count, and their dropout
    masks cannot continue where they stopped.
    """
    completed = int(state["completed_epochs"])
    path = os.path.join(save_dir, STATE_MODEL_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"Cannot resume: {path} is missing although {STATE_FILE} records {completed} "
                           "completed epoch(s).")
    model = _load_checkpoint(path, opts.loss)
    iterations = int(model.optimizer.iterations)
    saved = _read_training_state(path)
    if saved is not None:
        if int(saved["iterations"]) != iterations:
            raise RuntimeError(f"Cannot resume: the optimiser of {path} is at step {iterations}, but the training "
                               f"state saved with it records step {saved['iterations']}.")
        set_random_state(model, saved["random_state"])
        return model, saved
    expected, steps = int(state["iterations"]), state.get("steps_per_epoch")
    if iterations != expected:
        # Killed after last.keras was replaced but before run_state.json: the checkpoint is one epoch ahead.
        if steps and iterations == expected + steps:
            completed += 1
        else:
            raise RuntimeError(f"Cannot resume: the optimiser state of {path} is at step {iterations}, but "
                               f"{STATE_FILE} records step {expected} after {completed} epoch(s).")
    warnings.warn(f"{path} holds no random generator states (written by an earlier version): the resumed run's "
                  "dropout masks differ from those of an uninterrupted run.", stacklevel=3)
    return model, {**state, "completed_epochs": completed, "iterations": iterations}


#: Output files of a training run whose temporaries a new run may remove (literal names and one pattern).
_OUTPUT_NAMES = (*(re.escape(n) for n in (METRICS_FILE, FINAL_MODEL_FILE, STATE_MODEL_FILE, STATE_FILE,
                                           BEST_WEIGHTS_FILE)),
                 re.escape(CHECKPOINT_FILE.split("{")[0]) + r"\d+" + re.escape(os.path.splitext(CHECKPOINT_FILE)[1]))


def remove_run_temporaries(directory) -> list[str]:
    """Remove the temporary files of training outputs (left by a killed run) in ``directory``; returns their paths.

    Only temporaries of the files training writes (``metrics.csv``,
    ``last.keras``, ``model_0001.keras`` ...) are touched.
    """
    return remove_temporaries(directory, _OUTPUT_NAMES)


@contextlib.contextmanager
def _run_directory(save_dir: str | None) -> Iterator[None]:
    """Hold ``save_dir`` for one run: locked, cleared of stale temporaries, and of this run's own if it fails."""
    with output_lock(save_dir, "files_save_path", directory=True):
        if save_dir is not None:
            remove_run_temporaries(save_dir)
        try:
            yield
        except BaseException:
            if save_dir is not None:
                remove_run_temporaries(save_dir)
            raise


# --------------------------------------------------------------------------- the engine


def fit_model(build_model: Callable[[], keras.Model], train: Source, val: Source | None, files_save_path,
              opts: FitOptions) -> keras.Model:
    """Train a model from ``build_model()`` (or, resuming, from its checkpoint) on checked sources.

    Parameters
    ----------
    build_model : callable
        Returns a new, uncompiled model; called under the mixed-precision
        policy, and not at all when a run resumes.
    train, val : gamornet.data.Source
        Checked data sources (``val`` may be None: no validation; plateau and
        early stopping then watch the training loss).
    files_save_path : str
        Output directory (``/dev/null``: save nothing).
    opts : FitOptions

    Returns
    -------
    keras.Model
    """
    save_dir = resolve_save_dir(files_save_path)
    if opts.resume and save_dir is None:
        raise ValueError(f"`resume=True` needs a directory to keep the run's state in. "
                         f"Received: files_save_path={files_save_path!r}")
    with _run_directory(save_dir):
        return _fit(build_model, train, val, save_dir, opts)


def _fit(build_model: Callable[[], keras.Model], train: Source, val: Source | None, save_dir: str | None,
         opts: FitOptions) -> keras.Model:
    state = read_run_state(save_dir) if (opts.resume and save_dir) else None
    if save_dir and not opts.resume and os.path.exists(os.path.join(save_dir, STATE_FILE)):
        os.remove(os.path.join(save_dir, STATE_FILE))  # a new run: the old state no longer describes the files
    completed = int(state["completed_epochs"]) if state else 0
    if state and (state.get("stopped") or completed >= opts.epochs):
        return _finished_model(save_dir, state, opts)
    epoch_state: dict = {}
    if completed:
        model, epoch_state = _resume_model(save_dir, state, opts)
        completed = int(epoch_state["completed_epochs"])
        if opts.verbose:
            print(f"Resuming the run in {save_dir} after epoch {completed} of {opts.epochs}")
        if epoch_state.get("stopped") or completed >= opts.epochs:
            return _finished_model(save_dir, {**state, **epoch_state}, opts)
    else:
        with mixed_precision_policy(opts.mixed_precision):
            model = build_model()
        optimizer = make_optimizer(opts.lr, opts.momentum, opts.decay, opts.nesterov, opts.optimizer)
        model.compile(optimizer=optimizer, loss=opts.loss, metrics=["accuracy"])
    seed = int(state["seed"]) if state else (opts.seed if opts.seed is not None else secrets.randbelow(2**31))
    train_ds, steps, val_ds = _feeds(train, val, opts, completed, seed)
    monitor = "val_loss" if val is not None else "loss"
    saved = epoch_state.get("callbacks", {})
    stateful: dict = {}
    if opts.schedule == "plateau":
        stateful["plateau"] = _Plateau(saved.get("plateau") if completed else None, monitor=monitor,
                                       factor=opts.plateau_factor, patience=opts.plateau_patience,
                                       verbose=int(bool(opts.verbose)))
    if opts.early_stopping:
        weights = _load_best_weights(save_dir) if completed else None
        stateful["early_stopping"] = _EarlyStopping(saved.get("early_stopping") if completed else None, weights,
                                                    monitor=monitor, patience=opts.early_stopping,
                                                    verbose=int(bool(opts.verbose)))
    progress, fit_verbose = _progress(opts, train, steps)
    callbacks: list = [_LearningRateLog(), *stateful.values(), *progress]
    if train.epoch_variable is not None:
        callbacks.insert(0, _EpochFeed(train.epoch_variable))
    if save_dir is not None:
        metrics_path = os.path.join(save_dir, METRICS_FILE)
        if completed:
            _truncate_metrics(metrics_path, completed)
        callbacks.append(keras.callbacks.CSVLogger(metrics_path, append=bool(completed)))
        if opts.checkpoint_freq:
            callbacks.append(_PeriodicCheckpoint(save_dir, opts.checkpoint_freq, opts.card))
        if opts.resume:
            state = {**(state or {}), **epoch_state, "format": 2, "completed_epochs": completed, "epochs": opts.epochs,
                     "iterations": int(model.optimizer.iterations), "steps_per_epoch": steps, "seed": seed,
                     "stopped": False, "finished": False, "settings": opts.as_json()}
            if _RECORDED.get() is not None:
                state["cli"] = _RECORDED.get()
            _write_json(os.path.join(save_dir, STATE_FILE), state)
            callbacks.append(_RunStateWriter(save_dir, state, stateful))
    try:
        model.fit(train_ds, epochs=opts.epochs, initial_epoch=completed, steps_per_epoch=steps, validation_data=val_ds,
                  callbacks=callbacks + opts.callbacks, verbose=fit_verbose, shuffle=False)
    finally:
        close = getattr(train_ds, "close", None)
        if close is not None:  # a generator: stop its reading thread
            close()
    if opts.save_model and save_dir is not None:
        _save_model(model, os.path.join(save_dir, FINAL_MODEL_FILE), optimizer=opts.keep_optimizer, card=opts.card)
    if opts.resume:
        state["finished"] = True
        _write_json(os.path.join(save_dir, STATE_FILE), state)
    return model


def _finished_model(save_dir: str, state: dict, opts: FitOptions) -> keras.Model:
    """The model of a run with nothing left to train (saving the final model if the run died before)."""
    final, checkpoint = os.path.join(save_dir, FINAL_MODEL_FILE), os.path.join(save_dir, STATE_MODEL_FILE)
    if os.path.isfile(final) and state.get("finished"):
        model = _load_checkpoint(final, opts.loss)
        if model.compiled or not os.path.isfile(checkpoint):
            return model
        # saved without its optimiser: the checkpoint's model and optimiser state, with the final weights
        resumed = _load_checkpoint(checkpoint, opts.loss)
        resumed.set_weights(model.get_weights())
        return resumed
    model = _load_checkpoint(checkpoint, opts.loss)
    best = _load_best_weights(save_dir) if opts.early_stopping else None
    if best is not None:
        model.set_weights(best)
    if opts.save_model:
        _save_model(model, final, optimizer=opts.keep_optimizer, card=opts.card)
    _write_json(os.path.join(save_dir, STATE_FILE), {**state, "finished": True})
    return model
