"""Training data: each source reads every row once per epoch, in an order fixed by (seed, epoch); augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gamornet import data
from gamornet.core.network import CLASS_NAMES
from gamornet.data import augment as augmentation
from gamornet.keras_module import gamornet_train_keras

from helpers import column, read_metrics

SHAPE = (32, 32, 1)
NAMES = np.asarray(CLASS_NAMES)


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
    # Adam: SGD's loss after 12 small steps went up or down with the draw of the dropout masks
    gamornet_train_keras(train, None, val, None, SHAPE, files_save_path=str(tmp_path), epochs=4, lr=0.001,
                         verbose=0, seed=1, preprocessing="per_image", optimizer="adam")
    loss = column(read_metrics(tmp_path), "loss")
    assert len(loss) == 4 and loss[-1] < loss[0], loss


def _rows(batches) -> list[np.ndarray]:
    """The row number each image encodes (images hold their row number), batch by batch."""
    return [np.asarray(b[0])[:, 0, 0, 0].astype(int) for b in batches]


def _take(batches, n) -> list:
    """The first ``n`` items of an iterator, closing it if it is a generator."""
    out = [b for _, b in zip(range(n), batches)]
    if hasattr(batches, "close"):
        batches.close()
    return out


@pytest.mark.backends
def test_numpy_batches_cover_every_row_once_per_epoch(tmp_path):
    x = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(37) % 3]
    np.save(tmp_path / "x.npy", x)
    for images in (x, np.load(tmp_path / "x.npy", mmap_mode="r")):
        source = data.ArraySource(images, y)
        batches, steps = source.training_batches(5, seed=3)
        resumed, _ = source.training_batches(5, initial_epoch=1, seed=3)
        run = _take(batches, 2 * steps)
        epochs = [run[:steps], run[steps:], _take(resumed, steps)]
        orders = []
        for part in epochs:
            assert steps == len(part) == 8 and max(len(b[0]) for b in part) == 5
            rows = np.concatenate(_rows(part))
            assert sorted(rows) == list(range(37))
            np.testing.assert_array_equal(np.concatenate([b[1] for b in part]), y[rows])  # labels follow images
            orders.append(rows)
        assert not np.array_equal(orders[0], orders[1]) and np.array_equal(orders[1], orders[2])
        val = source.validation_batches(5)
        assert len(val) == 8 and np.concatenate(_rows(val)).tolist() == list(range(37))  # every row once, in order
    train, val = data.ArraySource(x, y).split(0.25, seed=0)
    assert len(train) + len(val) == 37 and not set(train.indices) & set(val.indices)
    assert sorted(np.concatenate(_rows(val.validation_batches(4)))) == sorted(val.indices.tolist())
    first = np.concatenate(_rows(_take(train.training_batches(4)[0], 7)))
    assert sorted(first) == sorted(train.indices.tolist())


def test_prefetched_batches_pass_errors_on_and_stop_their_thread():
    import threading

    def failing():
        yield 1
        raise ValueError("row 3 is broken")

    batches = data.prefetched(failing())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="row 3 is broken"):
        next(batches)
    closed = threading.Event()

    def endless():
        try:
            yield from iter(int, 1)
        finally:
            closed.set()

    batches = data.prefetched(endless(), depth=2)
    assert next(batches) == 0
    batches.close()
    assert closed.wait(5)  # the reading thread ended and closed its source


@pytest.mark.parametrize("reader", ["tensorflow", "python"])
def test_tensorflow_pipelines_give_the_numpy_batches(tmp_path, monkeypatch, reader):
    if reader == "python":
        monkeypatch.setattr(data.sources, "TENSOR_LIMIT_BYTES", 0)  # in-memory arrays read by the Python generator too
    x = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1) * np.ones((1, 6, 6, 1), np.float32)
    x += np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * 0.01  # no symmetry: flips show
    y = np.eye(3, dtype=np.float32)[np.arange(37) % 3]
    np.save(tmp_path / "x.npy", x)
    for images in (x, np.load(tmp_path / "x.npy", mmap_mode="r")):
        source = data.ArraySource(images, y)
        assert source.in_tensorflow() == (reader == "tensorflow" and images is x)
        for initial_epoch, augment in ((0, ()), (1, ("flips", "rotate"))):
            ds, steps = source.training_dataset(5, initial_epoch=initial_epoch, seed=3, augment=augment)
            expected, _ = source.training_batches(5, initial_epoch=initial_epoch, seed=3, augment=augment)
            for (tx, ty), (nx, ny) in zip(ds.take(2 * steps), _take(expected, 2 * steps)):
                np.testing.assert_array_equal(tx.numpy(), nx)  # same rows, same augmentation
                np.testing.assert_array_equal(ty.numpy(), ny)
        got = [(bx.numpy(), by.numpy()) for bx, by in source.validation_dataset(5)]
        for (tx, ty), (nx, ny) in zip(got, source.validation_batches(5), strict=True):
            np.testing.assert_array_equal(tx, nx)
            np.testing.assert_array_equal(ty, ny)


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
        data.load_labels(Table({"morphology": k}), 48)  # (a `bt` column is read as bulge-to-total ratios)
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


@pytest.mark.backends
def test_the_eight_dihedral_variants_are_distinct_and_permute_pixels():
    image = np.arange(16 * 16, dtype=np.float32).reshape(16, 16, 1) ** 1.5  # no symmetry at all
    variants = data.dihedral_variants(image)
    flat = variants.reshape(8, -1)
    assert len({v.tobytes() for v in flat}) == 8
    for v in flat:
        np.testing.assert_array_equal(np.sort(v), np.sort(image.ravel()))
    expected = [np.rot90(image, k) for k in range(4)] + [np.rot90(image[:, ::-1], k) for k in range(4)]
    assert {v.tobytes() for v in flat} == {np.ascontiguousarray(e).tobytes() for e in expected}


@pytest.mark.backends
@pytest.mark.parametrize("augment", ["flips", "rotate", "flips+rotate"])
def test_augmentation_changes_pixels_keeps_labels_and_is_seeded(augment, blobs):
    (x, y), _ = blobs
    x = x + np.linspace(0, 3, 32, dtype=np.float32)[None, None, :, None]  # break the symmetry of the blob
    source = data.ArraySource(x, y)
    plain = _take(source.training_batches(16, seed=5)[0], 3)
    names = data.check_augment(augment)
    augmented = _take(source.training_batches(16, seed=5, augment=names)[0], 3)
    again = _take(source.training_batches(16, seed=5, augment=names)[0], 3)
    changed = 0
    for (px, py), (ax, ay), (bx, _) in zip(plain, augmented, again):
        np.testing.assert_array_equal(py, ay)
        np.testing.assert_array_equal(ax, bx)  # same seed and step: same transformation
        changed += int(np.sum(np.any(px != ax, axis=(1, 2, 3))))
        assert ax.shape == px.shape and ax.dtype == np.float32
        if augment == "flips":  # pixels are permuted, never altered
            np.testing.assert_array_equal(np.sort(ax.reshape(16, -1)), np.sort(px.reshape(16, -1)))
        else:
            assert np.all(np.abs(ax.mean(axis=(1, 2, 3)) - px.mean(axis=(1, 2, 3))) < 0.5)
    assert changed >= 40  # of 48 images; a flip draw is the identity 1 time in 8
    step_two = data.augment_batch(plain[2][0], 5, 2, names)
    np.testing.assert_array_equal(step_two, augmented[2][0])  # drawn from (seed, batch number) alone
    assert not np.array_equal(data.augment_batch(plain[2][0], 5, 3, names), step_two)
    with pytest.raises(ValueError, match=r"`augment` must be None, 'flips' / 'rotate'"):
        data.check_augment("mirror")


@pytest.mark.backends
def test_rotation_is_bilinear_about_the_centre_with_reflected_edges():
    image = np.random.default_rng(0).normal(size=(2, 9, 9, 1)).astype(np.float32)
    quarter = augmentation.rotate(image, [math.pi / 2, -math.pi / 2])
    assert np.allclose(quarter[0], np.rot90(image[0], 1), atol=1e-5)  # (x, y) takes (-(y - c) + c, (x - c) + c)
    assert np.allclose(quarter[1], np.rot90(image[1], 3), atol=1e-5)
    np.testing.assert_allclose(augmentation.rotate(image, [0.0, 2 * math.pi]), image, atol=1e-5)
    wide = np.random.default_rng(1).normal(size=(1, 5, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(augmentation.rotate(wide, [math.pi])[0], wide[0, ::-1, ::-1], atol=1e-5)
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))[None, :, :, None]  # value = x
    small = augmentation.rotate(ramp, [0.1])[0, :, :, 0]
    # inside, a bilinear rotation of a linear ramp is the ramp along the rotated axis
    y, x = np.mgrid[:8, :8] - 3.5
    inner = (np.abs(x) < 2) & (np.abs(y) < 2)
    np.testing.assert_allclose(small[inner], (math.cos(0.1) * x - math.sin(0.1) * y + 3.5)[inner], atol=1e-4)
    # the top-right corner takes x = 3.5 + 3.5 * sqrt(2) = 8.45, beyond the last column (7): the edge reflects
    # (columns 8, 9 read 7, 6), neither zeros nor a clamped 7
    corner = augmentation.rotate(ramp, [math.pi / 4])[0, 0, 7, 0]
    assert corner == pytest.approx(7 - (3.5 + 3.5 * math.sqrt(2) - 8), abs=1e-4)


# --------------------------------------------------------------------------- schedules and stopping


