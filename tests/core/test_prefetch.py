"""Batches prepared ahead: host work overlaps the forward pass; same results, same errors, no thread left behind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gamornet.core.prefetch import BufferRing, Prefetch
from gamornet.core.progress import predict_in_batches
from gamornet.core.validation import check_images

SLEEP_S = 0.05
N_BATCHES = 10
BATCH = 4


def serial_predict(forward, images, batch_size):
    """The batch loop as it was before batches were prepared ahead: everything in series."""
    out = np.empty((images.shape[0], 3), dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        out[start:stop] = forward(np.ascontiguousarray(images[start:stop], dtype=np.float32))
    return out


def summary(batch: np.ndarray) -> np.ndarray:
    """A forward pass standing in for the model: three numbers per image, a function of its pixels alone."""
    flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
    return np.stack([flat.sum(axis=1), flat.max(axis=1), flat.min(axis=1)], axis=1).astype(np.float32)


class SlowImages(np.ndarray):
    """An image stack whose slices take ``SLEEP_S`` to read (a slow disk)."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            time.sleep(SLEEP_S)
        return super().__getitem__(key)


def sleeping_forward(batch: np.ndarray) -> np.ndarray:
    time.sleep(SLEEP_S)
    return summary(batch)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10, 3, (n, 8, 8, 1)).astype(np.float32)


def test_host_work_overlaps_the_forward_pass():
    x = images(N_BATCHES * BATCH).view(SlowImages)
    predict_in_batches(summary, images(2), 1, progress=False)  # one-time costs (the first bar) out of the timing
    start = time.perf_counter()
    serial = serial_predict(sleeping_forward, x, BATCH)
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    ahead = predict_in_batches(sleeping_forward, x, BATCH, progress=False, check="img_array")
    ahead_s = time.perf_counter() - start
    print(f"serial {serial_s:.3f} s, prepared ahead {ahead_s:.3f} s, ratio {ahead_s / serial_s:.2f}")
    assert serial_s >= 2 * N_BATCHES * SLEEP_S
    assert ahead_s < 0.75 * serial_s
    np.testing.assert_array_equal(ahead, serial)


class PaddingForward:
    """A forward pass compiled per batch size: batches of other sizes are padded with zeros (as JAX's)."""

    def __init__(self, ahead: bool):
        self.sizes = []
        if ahead:
            self.padded_rows = lambda n: 1 << max(n - 1, 0).bit_length()

    def __call__(self, batch):
        n = batch.shape[0]
        size = 1 << max(n - 1, 0).bit_length()
        if size != n:
            padded = np.zeros((size, *batch.shape[1:]), batch.dtype)
            padded[:n] = batch
            batch = padded
        self.sizes.append(batch.shape[0])
        return (summary(batch) + batch.reshape(size, -1).sum(dtype=np.float32))[:n]  # the padding counts too


@pytest.mark.parametrize("layout", ["contiguous", "strided", "float64", "memmap"])
@pytest.mark.parametrize("batch_size", [1, 3, 5, 8, 64])
def test_same_batches_padding_and_rows_as_in_series(layout, batch_size, tmp_path):
    x = images(21)
    if layout == "strided":
        x = np.repeat(x, 2, axis=2)[:, :, ::2]
    elif layout == "float64":
        x = x.astype(np.float64) / 3
    elif layout == "memmap":
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    for ahead in (False, True):
        before, now = PaddingForward(ahead=False), PaddingForward(ahead=ahead)
        expected = serial_predict(before, x, batch_size)
        got = predict_in_batches(now, x, batch_size, progress=False)
        np.testing.assert_array_equal(got, expected)
        assert now.sizes == before.sizes


def _nan_error(x) -> str:
    with pytest.raises(ValueError) as info:
        check_images(x, "img_array")
    return str(info.value)


@pytest.mark.parametrize("bad_rows", [[13], [13, 14, 30], [0], [39]])
def test_nan_raises_the_same_error_at_its_batch_and_leaves_no_thread(bad_rows):
    x = images(40)
    x[bad_rows, 2, 3, 0] = np.nan
    calls = []
    threads = threading.active_count()
    with pytest.raises(ValueError) as info:
        predict_in_batches(lambda b: calls.append(1) or summary(b), x, 4, progress=False, check="img_array")
    assert str(info.value) == _nan_error(x)
    assert f"image(s) {bad_rows}" in str(info.value)
    assert len(calls) == bad_rows[0] // 4  # every batch before the bad one ran, not the bad one
    assert threading.active_count() == threads


@pytest.mark.parametrize("error", [RuntimeError("device lost"), KeyboardInterrupt()])
def test_an_error_in_the_forward_pass_stops_the_thread(error):
    threads = threading.active_count()
    prepared = []
    x = images(400)

    def forward(batch):
        if len(prepared) > 2:
            raise error
        prepared.append(1)
        return summary(batch)

    with pytest.raises(type(error)):
        predict_in_batches(forward, x, 4, progress=False, check="img_array")
    assert threading.active_count() == threads


def test_prefetch_keeps_order_and_stays_within_its_depth():
    made = []

    def source():
        for i in range(20):
            made.append(i)
            yield i

    seen = []
    with Prefetch(source(), depth=2) as items:
        for item in items:
            time.sleep(0.005)
            assert len(made) <= item + 4  # the one held, two queued, one in the making
            seen.append(item)
    assert seen == list(range(20))


def test_prefetch_closed_early_closes_its_source_and_thread():
    closed = threading.Event()
    threads = threading.active_count()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()

    with Prefetch(source(), depth=3) as items:
        assert next(items) == 0
    assert closed.is_set()
    assert threading.active_count() == threads
    with pytest.raises(StopIteration):
        next(items)


def test_prefetch_raises_the_sources_error_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise OSError("disk gone")

    items = Prefetch(source())
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(OSError, match="disk gone"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_prefetch_refuses_a_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        Prefetch(iter(()), depth=0)


def test_buffer_ring_reuses_its_buffers_in_turn():
    ring = BufferRing(3)
    first = [ring.take((2, 4)) for _ in range(3)]
    assert len({id(b) for b in first}) == 3
    assert ring.take((2, 4)) is first[0]
    assert ring.take((1, 4)).shape == (1, 4)  # another shape takes the next place
    assert ring.take((2, 4)) is first[2]


@pytest.mark.parametrize("batch_size", [5, 64])
def test_keras_predictions_bit_identical_to_the_serial_loop(batch_size, tmp_path, narrow_network):
    from gamornet.keras_backend.forward import load_forward, padded_size
    from gamornet.keras_module import gamornet_predict_keras

    from helpers import SMALL_SHAPE, make_data, saved_keras_model

    path = saved_keras_model(tmp_path, SMALL_SHAPE, seed=3)
    x, _ = make_data(23, seed=5)
    forward = load_forward(path, SMALL_SHAPE)
    expected = serial_predict(forward, x, batch_size)
    got = gamornet_predict_keras(x, path, SMALL_SHAPE, batch_size=batch_size, progress=False, engine="keras")
    np.testing.assert_array_equal(got, expected)

    def self_padding(batch):  # the padding JAX and compiled PyTorch do inside the forward pass
        n = batch.shape[0]
        padded = np.zeros((padded_size(n), *batch.shape[1:]), np.float32)
        padded[:n] = batch
        return forward(padded)[:n]

    class AheadPadding:
        padded_rows = staticmethod(padded_size)

        def __call__(self, batch):
            return forward(batch)

    np.testing.assert_array_equal(predict_in_batches(AheadPadding(), x, batch_size, progress=False),
                                  serial_predict(self_padding, x, batch_size))
