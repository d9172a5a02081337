import numpy as np
import pytest

from gamornet.core.stack import read_rows


@pytest.mark.parametrize("dtype", [np.float32, np.int16, ">f4"])
def test_read_rows_of_npy_stack_equals_slicing(tmp_path, dtype):
    data = (np.arange(7 * 5 * 4 * 1) % 251).reshape(7, 5, 4, 1).astype(dtype)
    np.save(tmp_path / "s.npy", data)
    stack = np.load(tmp_path / "s.npy", mmap_mode="r")
    for start, stop in [(0, 7), (2, 5), (6, 7), (3, 3)]:
        rows = read_rows(stack, start, stop)
        np.testing.assert_array_equal(rows, data[start:stop])
        assert not isinstance(rows, np.memmap) and not np.shares_memory(rows, stack)


def test_read_rows_of_plain_arrays_and_views(tmp_path):
    data = np.random.default_rng(0).random((6, 3, 3, 1)).astype(np.float32)
    np.testing.assert_array_equal(read_rows(data, 1, 4), data[1:4])
    np.save(tmp_path / "s.npy", data)
    view = np.load(tmp_path / "s.npy", mmap_mode="r")[2:]  # a view: falls back to slicing, still correct
    np.testing.assert_array_equal(read_rows(view, 0, 2), data[2:4])
