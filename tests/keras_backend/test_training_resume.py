"""Resumed training equals uninterrupted training; run directories are locked and cleared of stale temporaries.

The exact comparisons run each training in a fresh process with
``TF_DETERMINISTIC_OPS=1``: TensorFlow documents run-to-run identical results
for the same operations on the same inputs only with op determinism on (its
CPU kernels may otherwise pick work splits that change the order of float32
sums).  What the library must add is the same operations on the same inputs:
the same batches, augmentations, dropout masks and optimiser state after a
kill as without one.  Under those conditions the weights and the metrics log
must be bit-identical, so they are compared exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

import gamornet
from gamornet import data
from gamornet.keras_backend import training
from gamornet.keras_module import gamornet_train_keras

from helpers import blob_data

SHAPE = (32, 32, 1)
#: Resume, locks, temporaries and augmentation do not depend on the network's width.
pytestmark = pytest.mark.usefixtures("narrow_network")
#: Where the gamornet package under test lives (child processes import the same one).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gamornet.__file__)))


def child_env() -> dict:
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=child_env(), cwd=PACKAGE_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kwargs)


def finish(child: subprocess.Popen, timeout: float = 600) -> None:
    _, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err.decode()[-3000:]


def saved_weights(path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


def assert_same_run(a, b) -> None:
    """Bit-identical final weights and metrics logs of two run directories."""
    wa, wb = saved_weights(a / "trained_model.keras"), saved_weights(b / "trained_model.keras")
    assert len(wa) == len(wb)
    for i, (u, v) in enumerate(zip(wa, wb)):
        assert np.array_equal(u, v), f"weight {i} differs by up to {np.max(np.abs(u - v))}"
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


_CHILD = r"""
import sys, time
import keras, numpy as np
from gamornet.keras_module import gamornet_train_keras

folder, out = sys.argv[1], sys.argv[2]
marker = sys.argv[3] if len(sys.argv) > 3 else None

class WaitForKill(keras.callbacks.Callback):
    # after the first step of the second epoch (the first epoch is saved): leave a mark and wait
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 0:
            open(marker, "w").close()
            time.sleep(600)

x, y = np.load(folder + "/x.npy"), np.load(folder + "/y.npy")
gamornet_train_keras(x[:24], y[:24], x[24:], y[24:], (32, 32, 1), files_save_path=out, epochs=3, batch_size=8,
                     lr=0.01, verbose=0, seed=7, resume=True, augment="flips",
                     callbacks=[WaitForKill()] if marker else [])
"""


@pytest.mark.slow
def test_run_killed_after_an_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path):
    x, y = blob_data(32, seed=11)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    whole, killed, marker = tmp_path / "whole", tmp_path / "killed", tmp_path / "marker"
    reference = start(["-c", _CHILD, str(tmp_path), str(whole)])
    victim = start(["-c", _CHILD, str(tmp_path), str(killed), str(marker)])
    deadline = time.time() + 400
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL and marker.exists(), victim.stderr.read().decode()[-3000:]
    victim.stderr.close()
    state = training.read_run_state(killed)
    assert state["completed_epochs"] == 1 and not (killed / "trained_model.keras").exists()
    finish(start(["-c", _CHILD, str(tmp_path), str(killed)]))  # resumed in a fresh process
    finish(reference)
    assert_same_run(whole, killed)
    assert training.read_run_state(killed)["iterations"] == training.read_run_state(whole)["iterations"] == 9


@pytest.mark.slow
def test_cli_run_resumed_with_more_epochs_equals_an_uninterrupted_run(tmp_path):
    from astropy.table import Table

    from gamornet.core.network import CLASS_NAMES

    x, y = blob_data(30, seed=12)
    folder = tmp_path / "sim"
    folder.mkdir()
    np.save(folder / "images.npy", x)
    Table({"label": np.asarray(CLASS_NAMES)[np.argmax(y, 1)]}).write(folder / "catalog.ecsv")
    common = ["--batch-size", "8", "--lr", "0.01", "--validation-fraction", "0.2", "--augment", "flips+rotate",
              "--seed", "7", "--quiet"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    reference = start(["-m", "gamornet", "train", str(folder), "--output", str(whole), "--epochs", "3", *common])
    finish(start(["-m", "gamornet", "train", str(folder), "--output", str(parts), "--epochs", "1", *common]))
    finish(start(["-m", "gamornet", "train", "--resume", str(parts), "--epochs", "3", "--quiet"]))
    finish(reference)
    assert_same_run(whole, parts)


def test_resumed_dataset_run_draws_the_same_augmentations(tmp_path):
    import tensorflow as tf

    x, y = blob_data(16, seed=13)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))  # a fixed order: only the augmentation is random

    def run(directory, epochs):
        return gamornet_train_keras(dataset, None, None, None, SHAPE, files_save_path=str(directory), epochs=epochs,
                                    lr=0.01, batch_size=8, verbose=0, seed=3, resume=True, augment="flips",
                                    save_model=False).get_weights()

    whole = run(tmp_path / "whole", 2)
    run(tmp_path / "parts", 1)
    resumed = run(tmp_path / "parts", 2)
    for u, v in zip(whole, resumed):  # same process, same kernels: identical
        np.testing.assert_array_equal(u, v)


def test_infinite_dataset_augmentation_continues_with_the_global_batch_number():
    import tensorflow as tf

    x, y = blob_data(16, seed=13)
    for dataset in (tf.data.Dataset.from_tensor_slices((x, y)).repeat(), tf.data.Dataset.from_tensor_slices((x, y))):
        source = data.DatasetSource(dataset, SHAPE)
        ds, steps = source.training_dataset(8, initial_epoch=0, seed=5, augment=("flips",), steps_per_epoch=2)
        resumed, _ = source.training_dataset(8, initial_epoch=1, seed=5, augment=("flips",), steps_per_epoch=2)
        run = [b[0].numpy() for b in ds.take(4)]  # epochs 0 and 1 (a finite dataset is read again)
        assert not np.array_equal(run[0], run[2])  # same images, other augmentation
        for a, b in zip(run[2:], [b[0].numpy() for b in resumed.take(2)]):
            np.testing.assert_array_equal(a, b)
        assert steps == 2 and getattr(source, "epoch_variable", None) is None  # nothing to set during training


def test_dataset_augmentation_depends_on_the_epoch_not_on_the_iteration_count():
    import tensorflow as tf

    x, y = blob_data(16, seed=14)
    source = data.DatasetSource(tf.data.Dataset.from_tensor_slices((x, y)), SHAPE)
    ds, steps = source.training_dataset(8, initial_epoch=0, seed=5, augment=("flips",))
    assert steps is None and source.epoch_variable is not None
    first = [b[0].numpy() for b in ds]
    source.epoch_variable.assign(1)  # as the training does when epoch 1 begins
    second = [b[0].numpy() for b in ds]
    fresh = data.DatasetSource(tf.data.Dataset.from_tensor_slices((x, y)), SHAPE)
    resumed, _ = fresh.training_dataset(8, initial_epoch=1, seed=5, augment=("flips",))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    for a, b in zip(second, [b[0].numpy() for b in resumed]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.backends
def test_random_generator_states_travel_with_the_checkpoint(tmp_path):
    x, y = blob_data(16, seed=15)
    run = tmp_path / "run"
    model = gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=1, batch_size=8,
                                 verbose=0, seed=2, resume=True, save_model=False)
    states = training.random_state(model)
    assert len(states) == 2 and all(s[1] == 2 for s in states)  # two dropout layers, one draw per step
    loaded = keras.saving.load_model(run / "last.keras")
    assert training.random_state(loaded) != states  # Keras itself does not keep them
    saved = training._read_training_state(str(run / "last.keras"))
    assert saved["random_state"] == states and saved["completed_epochs"] == 1 and saved["iterations"] == 2
    training.set_random_state(loaded, saved["random_state"])
    assert training.random_state(loaded) == states
    with pytest.raises(RuntimeError, match=r"holds 1 random generator state\(s\); the model has 2"):
        training.set_random_state(loaded, states[:1])


STALE = [".last.keras.k2j4x8_q.part.keras", ".metrics.csv.abc12345.part.csv", ".run_state.json.zz9zz9zz.part.json",
         ".model_0002.keras.a1b2c3d4.part.keras", ".trained_model.keras.q1w2e3r4.part.keras",
         ".best_weights.npz.p0o9i8u7.part.npz"]
KEPT = ["notes.part.keras", ".other.keras.abc12345.part.keras", ".last.keras", "last.keras.bak", ".x.last.keras.part"]


def _plant(directory) -> None:
    for name in STALE + KEPT:
        (directory / name).write_bytes(b"PK\x03\x04 cut short")


def test_stale_temporaries_are_removed_when_a_run_starts_or_resumes(tmp_path):
    x, y = blob_data(16, seed=16)
    run = tmp_path / "run"
    kwargs = dict(batch_size=8, verbose=0, seed=1, resume=True, save_model=False)
    gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=1, **kwargs)
    _plant(run)  # as a run killed while saving its files leaves them
    gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=2, **kwargs)  # resumes
    assert sorted(p.name for p in run.iterdir()) == sorted(["last.keras", "metrics.csv", "run_state.json", *KEPT])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _plant(fresh)
    gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(fresh), epochs=1, verbose=0, batch_size=8,
                         save_model=False)
    assert sorted(p.name for p in fresh.iterdir()) == sorted(["metrics.csv", *KEPT])


def test_failed_run_leaves_no_temporaries_and_releases_the_directory(tmp_path, monkeypatch):
    x, y = blob_data(16, seed=17)
    run = tmp_path / "run"

    def broken_save(model, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=1, batch_size=8, verbose=0,
                             resume=True)
    monkeypatch.undo()
    assert not [p.name for p in run.iterdir() if ".part" in p.name]
    with training._run_directory(str(run)):  # the directory is free again
        pass


def test_a_directory_in_use_by_another_run_is_refused(tmp_path, capsys):
    from gamornet.cli import main

    x, y = blob_data(16, seed=18)
    run = tmp_path / "run"
    run.mkdir()
    np.save(tmp_path / "images.npy", x)
    with training._run_directory(str(run)):
        (run / ".last.keras.inflight.part.keras").write_bytes(b"being written")
        with pytest.raises(RuntimeError, match=r"`files_save_path` is being written by another run"):
            gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=1, verbose=0)
        assert (run / ".last.keras.inflight.part.keras").exists()  # the other run's file is left alone
        assert main(["train", str(tmp_path / "images.npy"), "--catalog", str(_catalog(tmp_path, y)), "--output",
                     str(run), "--epochs", "1", "--quiet"]) == 2
        assert "is being written by another run" in capsys.readouterr().err
    with training._run_directory(str(run)):  # released with the run
        assert not (run / ".last.keras.inflight.part.keras").exists()  # now a stale temporary: removed


def _catalog(directory, y):
    from astropy.table import Table

    from gamornet.core.network import CLASS_NAMES

    path = directory / "catalog.ecsv"
    Table({"label": np.asarray(CLASS_NAMES)[np.argmax(y, 1)]}).write(path, overwrite=True)
    return path


class _KeepStateOfFirstEpoch(keras.callbacks.Callback):
    """Copy run_state.json as written after the first epoch (user callbacks run after the run's own)."""

    def __init__(self, directory):
        super().__init__()
        self.directory, self.text = directory, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.text = (self.directory / training.STATE_FILE).read_text()


def test_kill_between_checkpoint_and_state_file_resumes_from_the_checkpoint(tmp_path):
    x, y = blob_data(24, seed=19)
    wrong = np.roll(y[16:], 1, axis=1)  # validation that does not improve: the plateau and stopping counters move

    def run(directory, epochs, callbacks=()):
        return gamornet_train_keras(x[:16], y[:16], x[16:], wrong, SHAPE, files_save_path=str(directory),
                                    epochs=epochs, batch_size=8, lr=0.01, verbose=0, seed=5, resume=True,
                                    schedule="plateau", plateau_factor=0.5, plateau_patience=0, early_stopping=5,
                                    callbacks=list(callbacks))

    whole = tmp_path / "whole"
    run(whole, 3)
    cut = tmp_path / "cut"
    keep = _KeepStateOfFirstEpoch(cut)
    run(cut, 2, [keep])
    (cut / training.STATE_FILE).write_text(keep.text)  # as if killed after last.keras was replaced, before this
    (cut / "trained_model.keras").unlink()
    run(cut, 3)
    assert_same_run(whole, cut)


def test_checkpoint_without_training_state_still_resumes(tmp_path):
    x, y = blob_data(16, seed=20)
    run = tmp_path / "run"
    kwargs = dict(batch_size=8, verbose=0, seed=1, resume=True, save_model=False)
    gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=1, **kwargs)
    last, plain = run / training.STATE_MODEL_FILE, tmp_path / "plain.keras"
    with zipfile.ZipFile(last) as old, zipfile.ZipFile(plain, "w") as new:  # a checkpoint of earlier versions
        for item in old.infolist():
            if item.filename != training.CHECKPOINT_STATE_ENTRY:
                new.writestr(item, old.read(item.filename))
    os.replace(plain, last)
    with pytest.warns(UserWarning, match="holds no random generator states"):
        model = gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(run), epochs=2, **kwargs)
    assert int(model.optimizer.iterations.numpy()) == 4 and training.read_run_state(run)["completed_epochs"] == 2
