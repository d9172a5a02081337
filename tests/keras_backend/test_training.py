"""Training engine: data sources, augmentation, schedules, early stopping, resume, mixed precision, CLI.

Every training here is tiny (32 x 32 images, dozens of them, a few steps per
epoch).  The learnable problem: a centred Gaussian blob whose width encodes
the class, so it survives flips and rotations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from gamornet import data
from gamornet.core.network import CLASS_NAMES
from gamornet.keras_backend import training
from gamornet.keras_module import gamornet_predict_keras, gamornet_tl_keras, gamornet_train_keras

from helpers import blob_data, column, read_metrics

SHAPE = (32, 32, 1)
NAMES = np.asarray(CLASS_NAMES)


def test_plateau_and_early_stopping_on_a_scripted_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=training.make_optimizer(0.1, 0.9, 0.0, False), loss="mse")
    plateau = training._Plateau(monitor="val_loss", factor=0.5, patience=1)
    stop = training._EarlyStopping(monitor="val_loss", patience=2)
    for cb in (plateau, stop):
        cb.set_model(model)
        cb.on_train_begin()
    rates = []
    for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.95, 0.97]):
        model.set_weights([np.full((2, 1), float(epoch), np.float32), np.zeros(1, np.float32)])
        for cb in (plateau, stop):
            cb.on_epoch_end(epoch, {"val_loss": loss})
        rates.append(float(model.optimizer.learning_rate.numpy()))
        if model.stop_training:
            break
    assert epoch == 3 and stop.best_epoch == 1
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.025])
    stop.on_train_end()
    assert model.get_weights()[0][0, 0] == 1.0  # weights of the best epoch
    assert plateau.get_state() == {"best": 0.8, "wait": 0, "cooldown_counter": 0}  # wait restarts after a cut


def test_early_stopping_and_plateau_when_validation_cannot_improve(tmp_path, blobs):
    (x, y), _ = blobs
    wrong = np.roll(y, 1, axis=1)  # validation labels contradict the training labels
    model = gamornet_train_keras(x, y, x, wrong, SHAPE, files_save_path=str(tmp_path), epochs=12, batch_size=48,
                                 lr=0.003, verbose=0, seed=2, schedule="plateau", plateau_factor=0.5,
                                 plateau_patience=1, early_stopping=2)
    rows = read_metrics(tmp_path)
    val_loss, rates = column(rows, "val_loss"), column(rows, "learning_rate")
    assert len(rows) < 12, val_loss
    assert min(rates) < 0.003 * 0.99 and rates[0] == pytest.approx(0.003)
    best = int(np.argmin(val_loss))
    assert len(rows) - 1 - best >= 2  # stopped after `patience` epochs without improvement
    assert model.evaluate(x, wrong, verbose=0)[0] == pytest.approx(val_loss[best], rel=1e-4)
    with pytest.raises(ValueError, match=r"`decay` must be 0 with schedule='plateau'"):
        gamornet_train_keras(x, y, x, y, SHAPE, files_save_path="/dev/null", schedule="plateau", decay=0.1)


# --------------------------------------------------------------------------- resume

_CHILD = """
import sys, time, numpy as np, keras
from gamornet.keras_module import gamornet_train_keras

class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.4)

d = sys.argv[1]
x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
gamornet_train_keras(x, y, x[:8], y[:8], (32, 32, 1), files_save_path=d + "/run", epochs=6, batch_size=8, lr=0.001,
                     verbose=0, seed=4, resume=True, callbacks=[Slow()])
"""


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_epochs_and_a_clean_log(tmp_path):
    x, y = blob_data(16, seed=3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        state = training.read_run_state(run) if (run / "run_state.json").exists() else None
        if state and state.get("completed_epochs", 0) >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # into the next epoch
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    done = training.read_run_state(run)["completed_epochs"]
    assert 2 <= done < 6
    before = read_metrics(run)[:done]

    model = gamornet_train_keras(x, y, x[:8], y[:8], SHAPE, files_save_path=str(run), epochs=6, batch_size=8,
                                 lr=0.001, verbose=0, seed=4, resume=True)
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert rows[:done] == before  # the log of the completed epochs is kept as it was
    assert int(model.optimizer.iterations.numpy()) == 6 * 2  # optimiser state carried over
    state = training.read_run_state(run)
    assert state["completed_epochs"] == 6 and state["finished"] and state["iterations"] == 12
    probabilities = gamornet_predict_keras(x, str(run / "trained_model.keras"), SHAPE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # resuming a finished run trains nothing more
    again = gamornet_train_keras(x, y, x[:8], y[:8], SHAPE, files_save_path=str(run), epochs=6, batch_size=8,
                                 verbose=0, resume=True)
    assert len(read_metrics(run)) == 6 and int(again.optimizer.iterations.numpy()) == 12


def test_truncating_the_metrics_log(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n1,0.7\n3,0.")  # a re-run epoch 1 and a torn last line
    training._truncate_metrics(str(path), 3)
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.7\n2,0.8\n"


# --------------------------------------------------------------------------- mixed precision


def test_bfloat16_training_keeps_float32_outputs_and_restores_the_policy(tmp_path, blobs):
    (x, y), _ = blobs
    model = gamornet_train_keras(x[:8], y[:8], None, None, SHAPE, files_save_path=str(tmp_path), epochs=1,
                                 batch_size=8, verbose=0, mixed_precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer("conv_1").dtype_policy.name == "mixed_bfloat16"
    assert model.output.dtype == "float32"
    p = gamornet_predict_keras(x[:4], str(tmp_path / "trained_model.keras"), SHAPE)
    assert p.dtype == np.float32 and np.allclose(p.sum(axis=1), 1.0, atol=1e-2)
    if not training._has_gpu():
        with pytest.raises(ValueError, match=r"`mixed_precision='float16'` needs a GPU"):
            gamornet_train_keras(x, y, x, y, SHAPE, files_save_path="/dev/null", mixed_precision="float16")


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
@pytest.mark.usefixtures("narrow_network")  # the command line's plumbing: the width does not matter
def test_cli_train_resume_and_tl(tmp_path, capsys):
    from astropy.table import Table

    from gamornet.cli import main

    x, y = blob_data(40, seed=6)
    folder = tmp_path / "sim"
    folder.mkdir()
    np.save(folder / "images.npy", x)
    Table({"label": NAMES[np.argmax(y, 1)]}).write(folder / "catalog.ecsv")
    out = tmp_path / "run"
    args = ["train", str(folder), "--output", str(out), "--epochs", "1", "--batch-size", "16", "--lr", "0.001",
            "--validation-fraction", "0.2", "--augment", "flips", "--preprocessing", "asinh", "--seed", "1", "--quiet"]
    assert main(args) == 0
    assert [r["epoch"] for r in read_metrics(out)] == ["0"]
    state = json.loads((out / "run_state.json").read_text())
    assert state["cli"]["augment"] == "flips" and state["settings"]["batch_size"] == 16
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    model = keras.saving.load_model(out / "trained_model.keras")
    assert model.get_layer("preprocessing").stretch == "asinh"
    tl_out = tmp_path / "tl"
    assert main(["tl", str(folder / "images.npy"), "--catalog", str(folder / "catalog.ecsv"), "--model",
                 str(out / "trained_model.keras"), "--output", str(tl_out), "--epochs", "1", "--batch-size", "32",
                 "--train-bools", "f,f,f,t,t,t,t,t", "--validation-fraction", "0.2", "--quiet"]) == 0
    tuned = keras.saving.load_model(tl_out / "trained_model.keras")
    assert [tuned.get_layer(n).trainable for n in ("conv_1", "conv_4", "dense_3")] == [False, True, True]
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "--resume` must name a run folder" in capsys.readouterr().err


def test_tl_accepts_sources_and_keeps_signature(trained_keras_model, blobs):
    path, _ = trained_keras_model
    (x, y), _ = blobs
    model = gamornet_tl_keras(data.ArraySource(x[:16], y[:16]), None, None, None, SHAPE, model_load_path=path,
                              trainable_bools="train_bools_CANDELS", files_save_path="/dev/null", epochs=1,
                              batch_size=16, verbose=0, augment="rotate")
    assert [layer.trainable for layer in model.layers if layer.name.startswith("conv")][:3] == [False] * 3


# --------------------------------------------------------------------------- saved files


def test_final_model_holds_weights_not_optimizer_state(tmp_path, blobs):
    """trained_model.keras: about the size of the weights; keep_optimizer=True and last.keras keep the momentum."""
    (x, y), _ = blobs
    lean = gamornet_train_keras(x[:16], y[:16], None, None, SHAPE, files_save_path=str(tmp_path / "lean"), epochs=1,
                                batch_size=8, verbose=0, seed=1, resume=True)
    weight_bytes = lean.count_params() * 4
    path = tmp_path / "lean" / "trained_model.keras"
    assert os.path.getsize(path) <= 1.3 * weight_bytes
    assert os.path.getsize(tmp_path / "lean" / "last.keras") > 1.8 * weight_bytes  # resume stays exact
    gamornet_train_keras(x[:16], y[:16], None, None, SHAPE, files_save_path=str(tmp_path / "full"), epochs=1,
                         batch_size=8, verbose=0, seed=1, keep_optimizer=True)
    assert os.path.getsize(tmp_path / "full" / "trained_model.keras") > 1.8 * weight_bytes
    # the lean file predicts and starts transfer learning like any saved model
    np.testing.assert_allclose(gamornet_predict_keras(x[:4], str(path), SHAPE, progress=False),
                               lean.predict(x[:4], verbose=0), atol=1e-5)
    tuned = gamornet_tl_keras(x[:8], y[:8], None, None, SHAPE, model_load_path=str(path), files_save_path="/dev/null",
                              epochs=1, batch_size=8, verbose=0, trainable_bools=[False] * 7 + [True])
    np.testing.assert_array_equal(tuned.get_layer("conv_1").get_weights()[0], lean.get_layer("conv_1").get_weights()[0])
    with pytest.raises(ValueError, match="keep_optimizer"):
        gamornet_train_keras(x, y, None, None, SHAPE, files_save_path="/dev/null", keep_optimizer="yes")


@pytest.mark.usefixtures("narrow_network")
def test_trained_model_carries_its_card(tmp_path, trained_keras_model):
    from gamornet.data.cards import training_card
    from gamornet.keras_backend.model import CUSTOM_OBJECTS
    from gamornet.published.cards import ModelCard, read_card

    card = read_card(trained_keras_model[0])  # trained from scratch on arrays: facts of the data unknown
    assert card.shape == SHAPE and card.band is None and card.pixel_scale_arcsec is None
    assert card.training.startswith("trained from scratch")
    x, y = blob_data(12, seed=5)
    gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(tmp_path), epochs=1, batch_size=6, verbose=0,
                         checkpoint_freq=1, card={"band": "SDSS r", "pixel_scale_arcsec": 0.396})
    for name in ("trained_model.keras", "model_0001.keras"):
        card = read_card(tmp_path / name)
        assert (card.band, card.pixel_scale_arcsec, card.shape) == ("SDSS r", 0.396, SHAPE)
        keras.saving.load_model(tmp_path / name, custom_objects=CUSTOM_OBJECTS, compile=False)  # Keras ignores it
    with pytest.raises(ValueError, match="Received: card="):
        gamornet_train_keras(x, y, None, None, SHAPE, files_save_path=str(tmp_path / "b"), epochs=1, verbose=0,
                             card={"pixel": 1})
    simulated = training_card(None, data.SimulatedSource("CANDELS"), (83, 83, 1), start="CANDELS_sim", transfer=True)
    assert (simulated.pixel_scale_arcsec, simulated.band) == (0.06, "CANDELS (HST WFC3) H, F160W")
    assert simulated.training.startswith("transfer learning from CANDELS_sim")
    assert training_card(ModelCard("x", band="g"), data.SimulatedSource("SDSS"), (167, 167, 1)).band == "g"


@pytest.mark.usefixtures("narrow_network")
def test_cli_train_card_from_simulate_settings_or_options(tmp_path):
    from astropy.table import Table

    from gamornet.cli import main
    from gamornet.published.cards import read_card

    x, y = blob_data(12, seed=7)
    folder = tmp_path / "sim"
    folder.mkdir()
    np.save(folder / "images.npy", x)
    catalog = Table({"label": NAMES[np.argmax(y, 1)]})
    catalog.meta["config"] = {"name": "CANDELS", "pixel_scale": 0.06}  # as gamornet simulate records its settings
    catalog.write(folder / "catalog.ecsv")
    common = ["--epochs", "1", "--batch-size", "6", "--validation-fraction", "0", "--quiet"]
    assert main(["train", str(folder), "--output", str(tmp_path / "a"), *common]) == 0
    card = read_card(tmp_path / "a" / "trained_model.keras")
    assert (card.band, card.pixel_scale_arcsec, card.shape) == ("CANDELS (HST WFC3) H, F160W", 0.06, SHAPE)
    assert main(["train", str(folder), "--output", str(tmp_path / "b"), "--band", "SDSS r", "--pixel-scale", "0.4",
                 *common]) == 0
    card = read_card(tmp_path / "b" / "trained_model.keras")
    assert (card.band, card.pixel_scale_arcsec) == ("SDSS r", 0.4)
