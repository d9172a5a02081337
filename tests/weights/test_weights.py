"""Saved models without a framework: paths and fingerprints, the HDF5 reader, the TF1-checkpoint reader."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from gamornet.core.network import weight_shapes
from gamornet.weights import (
    ModelWeights,
    fingerprint,
    infer_input_shape,
    model_kind,
    read_checkpoint,
    read_hdf5,
    resolve_checkpoint_prefix,
    strip_checkpoint_suffix,
    validate_checkpoint,
    validate_hdf5,
)

from helpers import SMALL_SHAPE
from servers import write_checkpoint, write_keras_file

CKPT_FILES = (".index", ".meta", ".data-00000-of-00001")


def test_kinds_and_prefixes(tmp_path):
    prefix = write_checkpoint(tmp_path / "ckpt" / "check-10", SMALL_SHAPE)
    for name in ("", *CKPT_FILES):
        assert model_kind(str(prefix) + name) == "checkpoint"
        assert strip_checkpoint_suffix(str(prefix) + name) == str(prefix)
        assert resolve_checkpoint_prefix(str(prefix) + name) == str(prefix)
    with pytest.raises(FileNotFoundError, match=r"a directory: give the checkpoint prefix inside it"):
        resolve_checkpoint_prefix(str(tmp_path / "ckpt"))
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04")
    assert model_kind(str(tmp_path / "m.keras")) == "keras"
    h5 = write_keras_file(tmp_path / "h5-named.keras", SMALL_SHAPE)  # HDF5 data under a .keras name
    assert model_kind(str(h5)) == "hdf5" and model_kind(str(tmp_path / "old.h5")) == "hdf5"


def test_fingerprint_changes_with_the_file(tmp_path):
    path = write_keras_file(tmp_path / "m.h5", SMALL_SHAPE)
    first = fingerprint(path)
    assert len(first) == 1 and first[0][0] == str(path) and first[0][2] == os.path.getsize(path)
    time.sleep(0.01)
    with open(path, "ab") as f:
        f.write(b"\0")
    assert fingerprint(path) != first
    assert fingerprint(tmp_path / "missing.h5") == ()
    prefix = write_checkpoint(tmp_path / "check-1", SMALL_SHAPE)
    assert [entry[0] for entry in fingerprint(prefix)] == [str(prefix) + ".index", str(prefix) + ".data-00000-of-00001"]


def test_hdf5_reader_takes_weighted_layers_in_order_and_checks_shapes(tmp_path):
    path = write_keras_file(tmp_path / "m.h5", SMALL_SHAPE)
    weights = read_hdf5(path)
    assert weights.lrn == "keras" and weights.preprocessing is None and weights.source == str(path)
    assert weights.shapes() == [tuple(map(tuple, pair)) for pair in weight_shapes(SMALL_SHAPE)]
    assert weights.mismatches(SMALL_SHAPE) == []
    assert weights.mismatches((64, 64, 1)) and "layer 13 (dense_1)" in weights.mismatches((64, 64, 1))[0]
    validate_hdf5(path)
    validate_hdf5(path, SMALL_SHAPE)
    with pytest.raises(ValueError, match=r"for input shape \(64, 64, 1\): layer 13"):
        validate_hdf5(path, (64, 64, 1))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="is not a readable HDF5 file"):
        validate_hdf5(cut)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2, 3]
    validate_hdf5(tmp_path / "other.h5")  # light check: readable, holds data
    with pytest.raises(ValueError, match="without Keras weights"):
        read_hdf5(tmp_path / "other.h5")


def test_container_refuses_other_networks_and_infers_presets():
    with pytest.raises(ValueError, match="expected 8 layers with a kernel and a bias, found 3"):
        ModelWeights([(np.zeros(1), np.zeros(1))] * 3, source="x")
    for shape in ((167, 167, 1), (83, 83, 1), (83, 83, 3)):
        arrays = [(np.zeros(k, np.float32), np.zeros(b, np.float32)) for k, b in weight_shapes(shape)]
        assert infer_input_shape(ModelWeights(arrays)) == shape
    arrays = [(np.zeros(k, np.float32), np.zeros(b, np.float32)) for k, b in weight_shapes(SMALL_SHAPE)]
    with pytest.raises(ValueError, match="input_shape"):
        infer_input_shape(ModelWeights(arrays))


def test_checkpoint_reader_skips_optimizer_state_and_names_what_is_wrong(tmp_path):
    import tensorflow as tf

    prefix = write_checkpoint(tmp_path / "check-7", SMALL_SHAPE)
    weights = read_checkpoint(str(prefix) + ".meta")
    assert weights.lrn == "tflearn" and weights.source == str(prefix)
    assert weights.shapes() == [tuple(map(tuple, pair)) for pair in weight_shapes(SMALL_SHAPE)]
    assert all(np.all(b == np.float32(0.1)) for _, b in weights.arrays)
    validate_checkpoint(prefix, SMALL_SHAPE)
    with pytest.raises(ValueError, match=r"has shape .*, expected"):
        validate_checkpoint(prefix, (64, 64, 1))
    with pytest.raises(FileNotFoundError, match="not an existing TFLearn checkpoint"):
        read_checkpoint(str(tmp_path / "missing"))
    for suffix in CKPT_FILES:
        (tmp_path / f"garbage{suffix}").write_bytes(b"\0garbage")
    with pytest.raises(ValueError, match="could not be read"):
        read_checkpoint(str(tmp_path / "garbage"))
    other = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="no variable 'Conv2D/W'"):
        read_checkpoint(other)
    os.remove(str(prefix) + ".meta")
    with pytest.raises(ValueError, match="incomplete TFLearn checkpoint"):
        validate_checkpoint(prefix)
