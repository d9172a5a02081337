"""File prediction pads its batches ahead: the padding overlaps the forward pass, the tables stay bit-identical."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gamornet import engines
from gamornet.predict.inputs import Batch
from gamornet.predict.passes import ForwardPass, ForwardSpec, chunk_arrays, run_chunk

from helpers import SMALL_SHAPE, make_data

SLEEP_S = 0.05
BATCH = 8


def summary(batch: np.ndarray) -> np.ndarray:
    flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
    return np.stack([flat.sum(axis=1), flat.max(axis=1), np.arange(batch.shape[0])], axis=1).astype(np.float32)


class SlowPass(ForwardPass):
    """A forward pass of ``SLEEP_S`` per batch whose padding takes ``SLEEP_S`` too (host work as long as the model)."""

    def __init__(self):  # no model
        self.batch_size, self.mc_samples, self.seed = BATCH, 0, 0
        self.forward = self._forward

    @staticmethod
    def _forward(batch):
        time.sleep(SLEEP_S)
        return summary(batch)

    def pad(self, images, rows, out=None):
        time.sleep(SLEEP_S)
        return super().pad(images, rows, out)


def chunk_batches(n_batches: int, seed: int = 0, bad_at: int | None = None):
    """Batches of 5 images at scattered rows (as a shard's), one empty (all its images skipped)."""
    x, _ = make_data(5 * n_batches, seed=seed)
    rows, batches = {}, []
    for b in range(n_batches):
        ids = [f"img{b}_{i}" for i in range(5)] if b != 2 else []
        rows.update({image_id: (3 * i + b) % BATCH for i, image_id in enumerate(ids)})
        batches.append(Batch(ids, x[5 * b : 5 * b + len(ids)], [] if ids else [("gone", "unreadable")]))
    spans = [(5 * b, 5 * b + 5) for b in range(n_batches)]

    def reading():
        for b, batch in enumerate(batches):
            if b == bad_at:
                raise OSError(f"cannot read batch {b}")
            yield batch

    return spans, reading(), batches, rows


def serial_chunk(k, spans, batches, forward, rows):
    """``run_chunk`` as it was before batches were padded ahead: reading, padding and the model in series."""
    forward.reseed(k)
    ids, results, bad = [], [], []
    for _ in spans:
        batch = next(batches)
        ids += batch.ids
        bad += batch.bad
        results.append(forward.run(batch.images, [rows[i] for i in batch.ids]))
    return chunk_arrays(ids, results, bad, False)


def assert_same_arrays(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_padding_overlaps_the_forward_pass():
    forward = SlowPass()
    spans, batches, _, rows = chunk_batches(10)
    start = time.perf_counter()
    expected = serial_chunk(0, spans, batches, forward, rows)
    serial_s = time.perf_counter() - start
    spans, batches, _, rows = chunk_batches(10)
    start = time.perf_counter()
    got = run_chunk(0, spans, batches, forward, rows, int_ids=False)
    ahead_s = time.perf_counter() - start
    print(f"serial {serial_s:.3f} s, padded ahead {ahead_s:.3f} s, ratio {ahead_s / serial_s:.2f}")
    assert serial_s >= 2 * 9 * SLEEP_S  # nine batches with images, padded and run
    assert ahead_s < 0.75 * serial_s
    assert_same_arrays(got, expected)


def test_a_read_error_is_raised_at_its_batch_and_leaves_no_thread():
    forward = SlowPass()
    threads = threading.active_count()
    calls = []
    forward.forward = lambda batch: calls.append(1) or summary(batch)
    spans, batches, _, rows = chunk_batches(10, bad_at=6)
    with pytest.raises(OSError, match="cannot read batch 6"):
        run_chunk(0, spans, batches, forward, rows, int_ids=False)
    assert len(calls) == 5  # batches 0-5 ran (batch 2 holds no image)
    assert threading.active_count() == threads


@pytest.mark.parametrize("mc_samples", [0, 2])
def test_chunk_bit_identical_to_the_serial_path(mc_samples, narrow_keras_model):
    choice = engines.choose_engine("keras", "float32", mc_samples=mc_samples)
    spec = ForwardSpec.describe(narrow_keras_model, "keras", SMALL_SHAPE, choice, BATCH, mc_samples, seed=4)
    forward = ForwardPass(spec)
    spans, batches, _, rows = chunk_batches(6, seed=2)
    expected = serial_chunk(3, spans, batches, forward, rows)
    spans, batches, _, rows = chunk_batches(6, seed=2)
    advanced = []
    got = run_chunk(3, spans, batches, forward, rows, int_ids=False, advance=advanced.append)
    assert_same_arrays(got, expected)
    assert advanced == [5] * 6
