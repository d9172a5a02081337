"""Training engine: data sources, augmentation, schedules, early stopping, resume, mixed precision, CLI.

Every training here is tiny (32 x 32 images, dozens of them, a few steps per
epoch).  The learnable problem: a centred Gaussian blob whose width encodes
the class, so it survives flips and rotations.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from gamornet import data, training
from gamornet.keras_module import gamornet_predict_keras, gamornet_tl_keras, gamornet_train_keras
from gamornet.network import CLASS_NAMES

SHAPE = (32, 32, 1)
NAMES = np.asarray(CLASS_NAMES)


def blob_data(n: int, seed: int = 0):
    """Images of a blob of width 2, 4 or 7 px (disk, indeterminate, bulge) plus noise; one-hot labels."""
    rng = np.random.default_rng(seed)
    k = rng.permutation(np.arange(n) % 3)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    r2 = (yy - 15.5) ** 2 + (xx - 15.5) ** 2
    width = np.array([2.0, 4.0, 7.0])[k]
    images = 5.0 * np.exp(-r2[None] / (2 * width[:, None, None] ** 2)) + rng.normal(0, 0.3, (n, *SHAPE[:2]))
    return images[..., None].astype(np.float32), np.eye(3, dtype=np.float32)[k]


@pytest.fixture(scope="module")
def blobs():
    return blob_data(48, seed=0), blob_data(24, seed=1)


def read_metrics(directory) -> list[dict]:
    with open(os.path.join(directory, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def column(rows, key) -> list[float]:
    return [float(r[key]) for r in rows]


# --------------------------------------------------------------------------- data sources train


def _source_args(kind, tmp_path, x, y):
    if kind == "numpy":
        return x, y
    if kind == "memmap":
        np.save(tmp_path / "x.npy", x)
        return np.load(tmp_path / "x.npy", mmap_mode="r"), y
    if kind == "npy+catalog":
        from astropy.table import Table

        np.save(tmp_path / "x.npy", x.astype(np.float16))  # stored in half precision, read as float32
        Table({"label": NAMES[np.argmax(y, 1)]}).write(tmp_path / "cat.ecsv")
        return str(tmp_path / "x.npy"), str(tmp_path / "cat.ecsv")
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0), None


@pytest.mark.parametrize("kind", ["numpy", "memmap", "npy+catalog", "dataset"])
def test_each_data_source_trains_and_the_loss_falls(kind, tmp_path, blobs):
    (x, y), (vx, vy) = blobs
    tx, ty = _source_args(kind, tmp_path, x, y)
    out = tmp_path / "run"
    model = gamornet_train_keras(tx, ty, vx, vy, SHAPE, files_save_path=str(out), epochs=3, batch_size=24, lr=0.001,
                                 verbose=0, seed=1)
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    val_loss = column(rows, "val_loss")
    assert val_loss[-1] < val_loss[0] and val_loss[-1] < math.log(3), val_loss
    assert int(model.optimizer.iterations.numpy()) == 3 * 2
    assert (out / "trained_model.keras").exists()


@pytest.mark.slow
def test_simulated_source_trains_on_new_galaxies_every_epoch(tmp_path):
    sim = dict(shape=(32, 32), centre=(15.5, 16.5), disk_re=(6, 8), bulge_re=(1, 1.5), disk_q=(0.8, 1),
               bulge_q=(0.8, 1), disk_mag=(19, 19.5), bt_mode="classes", class_mix=(1, 0, 1), bt_range=(0.03, 0.97),
               add_noise=False)
    train = data.SimulatedSource("CANDELS", steps_per_epoch=3, batch_size=16, seed=1, **sim)
    val = data.SimulatedSource("CANDELS", steps_per_epoch=1, batch_size=16, seed=2, **sim)
    ds, steps = train.training_dataset(16, initial_epoch=0)
    first = [b[0].numpy() for b in ds.take(4)]
    assert steps == 3 and not np.array_equal(first[0], first[3])  # epoch 1 starts with new galaxies
    resumed, _ = train.training_dataset(16, initial_epoch=1)
    np.testing.assert_array_equal(next(iter(resumed))[0].numpy(), first[3])
    gamornet_train_keras(train, None, val, None, SHAPE, files_save_path=str(tmp_path), epochs=4, lr=0.001,
                         verbose=0, seed=1, preprocessing="per_image")
    loss = column(read_metrics(tmp_path), "loss")
    assert len(loss) == 4 and loss[-1] < loss[0], loss


@pytest.mark.parametrize("reader", ["tensorflow", "python"])
def test_array_batches_cover_every_row_once_per_epoch(tmp_path, monkeypatch, reader):
    if reader == "python":
        monkeypatch.setattr(data, "TENSOR_LIMIT_BYTES", 0)  # in-memory arrays read by the Python generator too
    x = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(37) % 3]
    np.save(tmp_path / "x.npy", x)
    for images in (x, np.load(tmp_path / "x.npy", mmap_mode="r")):
        source = data.ArraySource(images, y)
        assert source.in_tensorflow() == (reader == "tensorflow" and images is x)
        ds, steps = source.training_dataset(5, seed=3)
        resumed, _ = source.training_dataset(5, initial_epoch=1, seed=3)
        epochs = [list(ds.take(2 * steps))[e * steps : (e + 1) * steps] for e in (0, 1)]
        epochs.append(list(resumed.take(steps)))
        orders = []
        for batches in epochs:
            assert steps == len(batches) == 8 and max(len(b[0]) for b in batches) == 5
            rows = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches]).astype(int)
            labels = np.concatenate([b[1].numpy() for b in batches])
            assert sorted(rows) == list(range(37))
            np.testing.assert_array_equal(labels, y[rows])  # labels follow their images
            orders.append(rows)
        assert not np.array_equal(orders[0], orders[1]) and np.array_equal(orders[1], orders[2])
        val = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in source.validation_dataset(5)]).astype(int)
        assert val.tolist() == list(range(37))  # validation: every row once, in order
    train, val = data.ArraySource(x, y).split(0.25, seed=0)
    assert len(train) + len(val) == 37 and not set(train.indices) & set(val.indices)
    seen = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in val.validation_dataset(4)]).astype(int)
    assert sorted(seen) == sorted(val.indices.tolist())
    first = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in train.training_dataset(4)[0].take(7)]).astype(int)
    assert sorted(first) == sorted(train.indices.tolist())


def test_memmap_is_checked_on_header_and_sample_before_anything_is_written(tmp_path, blobs):
    (x, y), _ = blobs
    bad = x.copy()
    bad[47, 3, 3, 0] = np.nan  # the last image is always in the sample
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "wrong.npy", x[:, :30])
    np.save(tmp_path / "good.npy", x)
    out = tmp_path / "out"
    cases = [
        (np.load(tmp_path / "bad.npy", mmap_mode="r"), y, ValueError, r"`training_imgs` has NaN or inf.*\[47\]"),
        (str(tmp_path / "wrong.npy"), y, ValueError, r"`training_imgs` images must have the model's input shape"),
        (str(tmp_path / "missing.npy"), y, FileNotFoundError, r"`training_imgs` does not exist"),
        (str(tmp_path / "good.npy"), y[:5], ValueError, r"`training_labels` must have shape \(48"),
        (x, np.array(["disk", "spiral"] * 24), ValueError, r"`training_labels` class names must be.*spiral"),
    ]
    for images, labels, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            gamornet_train_keras(images, labels, x, y, SHAPE, files_save_path=str(out), verbose=0)
    assert not out.exists()


def test_catalog_forms_and_dataset_checks(tmp_path, blobs):
    import tensorflow as tf
    from astropy.table import Table

    (x, y), _ = blobs
    k = np.argmax(y, 1)
    for table in (Table({"class_index": k}), Table({n: y[:, i] for i, n in enumerate(NAMES)})):
        np.testing.assert_array_equal(data.load_labels(table, 48), y)
    with pytest.raises(ValueError, match=r"catalog needs a 'label', 'class_index'"):
        data.load_labels(Table({"bt": k}), 48)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"`training_labels` must be None when `training_imgs` is a"):
        data.as_source(ds, y, SHAPE)
    with pytest.raises(ValueError, match=r"`training_imgs` images must have shape \(32, 32, 1\)"):
        data.as_source(tf.data.Dataset.from_tensor_slices((x[:, :16], y)), None, SHAPE)
    with pytest.raises(ValueError, match=r"must yield \(images, onehot_labels\) pairs"):
        data.as_source(tf.data.Dataset.from_tensor_slices(x), None, SHAPE)
    with pytest.raises(ValueError, match=r"`steps_per_epoch` must be given for an infinite"):
        data.as_source(ds.repeat(), None, SHAPE).training_dataset(8)


# --------------------------------------------------------------------------- augmentation


def test_the_eight_dihedral_variants_are_distinct_and_permute_pixels():
    image = np.arange(16 * 16, dtype=np.float32).reshape(16, 16, 1) ** 1.5  # no symmetry at all
    variants = data.dihedral_variants(image)
    flat = variants.reshape(8, -1)
    assert len({v.tobytes() for v in flat}) == 8
    for v in flat:
        np.testing.assert_array_equal(np.sort(v), np.sort(image.ravel()))
    expected = [np.rot90(image, k) for k in range(4)] + [np.rot90(image[:, ::-1], k) for k in range(4)]
    assert {v.tobytes() for v in flat} == {np.ascontiguousarray(e).tobytes() for e in expected}


@pytest.mark.parametrize("augment", ["flips", "rotate", "flips+rotate"])
def test_augmentation_changes_pixels_keeps_labels_and_is_seeded(augment, blobs):
    (x, y), _ = blobs
    x = x + np.linspace(0, 3, 32, dtype=np.float32)[None, None, :, None]  # break the symmetry of the blob
    source = data.ArraySource(x, y)
    plain = list(source.training_dataset(16, seed=5)[0].take(3))
    names = data.check_augment(augment)
    augmented = list(source.training_dataset(16, seed=5, augment=names)[0].take(3))
    again = list(source.training_dataset(16, seed=5, augment=names)[0].take(3))
    changed = 0
    for (px, py), (ax, ay), (bx, _) in zip(plain, augmented, again):
        np.testing.assert_array_equal(py.numpy(), ay.numpy())
        np.testing.assert_array_equal(ax.numpy(), bx.numpy())  # same seed and step: same transformation
        changed += int(np.sum(np.any(px.numpy() != ax.numpy(), axis=(1, 2, 3))))
        assert ax.shape == px.shape
        if augment == "flips":  # pixels are permuted, never altered
            np.testing.assert_array_equal(np.sort(ax.numpy().reshape(16, -1)), np.sort(px.numpy().reshape(16, -1)))
        else:
            assert np.all(np.abs(ax.numpy().mean(axis=(1, 2, 3)) - px.numpy().mean(axis=(1, 2, 3))) < 0.5)
    assert changed >= 40  # of 48 images; a flip draw is the identity 1 time in 8
    with pytest.raises(ValueError, match=r"`augment` must be None, 'flips' / 'rotate'"):
        data.check_augment("mirror")


def test_rotation_by_a_right_angle_matches_rot90():
    import tensorflow as tf

    image = np.random.default_rng(0).normal(size=(1, 9, 9, 1)).astype(np.float32)
    rotated = data._rotate(tf.constant(image), tf.constant([math.pi / 2])).numpy()
    assert any(np.allclose(rotated[0], np.rot90(image[0], k), atol=1e-4) for k in (1, 3))


# --------------------------------------------------------------------------- schedules and stopping


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
