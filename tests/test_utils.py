import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gamornet import utils
from gamornet.thresholds import ThresholdPolicy, classify_probabilities, get_policy


def test_input_shape_aliases_and_tuples():
    assert utils.check_input_shape("SDSS") == (167, 167, 1)
    assert utils.check_input_shape("CANDELS") == (83, 83, 1)
    assert utils.check_input_shape([64, 48, 2]) == (64, 48, 2)


@pytest.mark.parametrize("bad", ["sdss", "HST", (167, 167), (167, 167, 0), (16.0, 16, 1), (True, 16, 1), None])
def test_bad_input_shape_names_argument_and_value(bad):
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: input_shape="):
        utils.check_input_shape(bad)


def test_bool_presets():
    assert utils.check_bools("load_bools_SDSS", "x") == (True,) * 5 + (False,) * 3
    assert utils.check_bools("load_bools_CANDELS", "x") == (True,) * 6 + (False,) * 2
    assert utils.check_bools("train_bools_SDSS", "x") == (True,) * 8
    assert utils.check_bools("train_bools_CANDELS", "x") == (False,) * 3 + (True,) * 5
    assert utils.check_bools(np.ones(8, dtype=bool), "x") == (True,) * 8
    assert utils.train_bools_CANDELS == [False] * 3 + [True] * 5


@pytest.mark.parametrize("bad", [[True] * 7, [True] * 9, [1] * 8, "train_bools_HST", None, "TTTTTTTT"])
def test_bad_bools(bad):
    with pytest.raises(ValueError, match=r"`trainable_bools`.*Received: trainable_bools="):
        utils.check_bools(bad, "trainable_bools")


def test_images_are_cast_not_rescaled():
    ints = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4, 1)
    out = utils.check_images(ints, input_shape=(4, 4, 1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ints)


@pytest.mark.parametrize(
    "images,error,pattern",
    [
        (np.zeros((4, 4, 1), np.float32), ValueError, r"`img_array` must be a 4-D.*Received: shape=\(4, 4, 1\)"),
        (np.zeros((2, 5, 4, 1), np.float32), ValueError, r"input shape \(4, 4, 1\).*Received: shape=\(5, 4, 1\)"),
        (np.array([[["a"]]] * 2).reshape(2, 1, 1, 1), TypeError, r"`img_array` must hold numbers.*Received: dtype="),
        (np.zeros((0, 4, 4, 1), np.float32), ValueError, r"`img_array` holds no images.*Received: shape=\(0,"),
    ],
)
def test_bad_images(images, error, pattern):
    shape = (4, 4, 1) if images.shape[1:] != (1, 1, 1) else (1, 1, 1)
    with pytest.raises(error, match=pattern):
        utils.check_images(images, input_shape=shape)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_image(value):
    images = np.zeros((5, 4, 4, 1), np.float32)
    images[3, 1, 2, 0] = value
    with pytest.raises(ValueError, match=r"`img_array` has NaN or inf pixels in image\(s\) \[3\]"):
        utils.check_images(images)


def test_labels():
    good = np.eye(3)[[0, 2, 1]]
    np.testing.assert_array_equal(utils.check_labels(good, 3), good)
    with pytest.raises(ValueError, match=r"`training_labels` must have shape \(3, 3\).*Received: shape=\(3,\)"):
        utils.check_labels([0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"must have shape \(2, 3\).*Received: shape=\(3, 3\)"):
        utils.check_labels(good, 2)
    with pytest.raises(ValueError, match=r"rows must be one-hot.*Received: rows \[1\]"):
        utils.check_labels([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1]], 3)
    with pytest.raises(TypeError, match="`training_labels` must be numeric"):
        utils.check_labels(np.array([["disk"] * 3] * 3), 3)
    assert list(utils.labels_from_onehot(good)) == ["disk", "bulge", "indeterminate"]


def test_published_policies_at_their_boundaries():
    p = np.array([
        [0.70, 0.20, 0.10],  # disk for keras_sdss (>=), not for tflearn_sdss
        [0.10, 0.20, 0.70],  # bulge for keras_sdss
        [0.69, 0.30, 0.01],
        [0.80, 0.10, 0.10],
        [0.37, 0.33, 0.30],  # disk by argmax for CANDELS policies
        [0.36, 0.34, 0.30],  # keras_candels disk; tflearn_candels needs > 0.36
        [0.30, 0.15, 0.55],  # tflearn_candels bulge (>= 0.55), keras_candels needs 0.60
        [0.30, 0.40, 0.30],
    ])
    expect = {
        "keras_sdss": ["disk", "bulge", "indeterminate", "disk", "indeterminate", "indeterminate", "indeterminate",
                       "indeterminate"],
        "tflearn_sdss": ["indeterminate", "indeterminate", "indeterminate", "disk"] + ["indeterminate"] * 4,
        "keras_candels": ["disk", "bulge", "disk", "disk", "disk", "disk", "indeterminate", "indeterminate"],
        "tflearn_candels": ["disk", "bulge", "disk", "disk", "disk", "indeterminate", "bulge", "indeterminate"],
    }
    for name, labels in expect.items():
        assert list(classify_probabilities(p, name)) == labels, name


def test_user_thresholds():
    p = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.45, 0.1, 0.45]])
    assert list(classify_probabilities(p, (0.6, 0.6))) == ["disk", "bulge", "indeterminate"]
    assert list(classify_probabilities(p, {"disk_min": 0.4, "bulge_min": 0.9})) == ["disk", "indeterminate", "disk"]
    assert get_policy(ThresholdPolicy(0.5, 0.5)).disk_min == 0.5


@pytest.mark.parametrize("bad", ["keras_hst", (1.2, 0.5), {"disk": 0.5}, 3])
def test_bad_policy(bad):
    with pytest.raises(ValueError, match=r"Received: "):
        classify_probabilities(np.full((1, 3), 1 / 3), bad)


def test_probabilities_shape_checked():
    with pytest.raises(ValueError, match=r"`probabilities` must have shape \(N, 3\)"):
        classify_probabilities(np.zeros((3, 2)))


def test_save_dir_and_atomic_path(tmp_path):
    assert utils.resolve_save_dir("/dev/null") is None
    target = tmp_path / "run" / "sub"
    assert utils.resolve_save_dir(str(target) + "/") == str(target) + "/"
    assert target.is_dir()
    final = target / "file.txt"
    with pytest.raises(RuntimeError):
        with utils.atomic_path(final) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert list(target.iterdir()) == []
    with utils.atomic_path(final) as tmp:
        open(tmp, "w").write("whole")
    assert final.read_text() == "whole" and len(list(target.iterdir())) == 1


REPO = Path(__file__).resolve().parents[1]

_MODE_PROBE = r"""
import json, os, sys
import numpy as np
from astropy.table import Table
from gamornet.utils import atomic_path
d = sys.argv[1]
with open(os.path.join(d, "plain.txt"), "w") as f:
    f.write("x")
with atomic_path(os.path.join(d, "a.txt")) as tmp, open(tmp, "w") as f:
    f.write("x")
with atomic_path(os.path.join(d, "b.npy"), suffix=".npy") as tmp:
    np.save(tmp, np.arange(3))
with atomic_path(os.path.join(d, "c.ecsv"), suffix=".ecsv") as tmp:
    Table({"a": [1]}).write(tmp, format="ascii.ecsv", overwrite=True)
with atomic_path(os.path.join(d, "d.bin")) as tmp:  # a writer replacing the file with a private one of its own
    os.remove(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
print(json.dumps({name: os.stat(os.path.join(d, name)).st_mode & 0o7777 for name in sorted(os.listdir(d))}))
"""


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_path_gives_the_mode_of_a_plain_open(tmp_path, umask, mode):
    # In a child process: the umask is process-wide and must stay untouched here.
    out = subprocess.run([sys.executable, "-c", _MODE_PROBE, str(tmp_path)], cwd=REPO, umask=umask,
                         capture_output=True, text=True, check=True)
    modes = json.loads(out.stdout)
    assert sorted(modes) == ["a.txt", "b.npy", "c.ecsv", "d.bin", "plain.txt"]  # no temporary file left
    assert modes == dict.fromkeys(modes, mode)


def test_atomic_path_errors_name_the_output_and_leave_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # fails even as root, unlike chmod
    with pytest.raises(NotADirectoryError) as caught:
        with utils.atomic_path(blocker / "out.ecsv") as tmp:
            open(tmp, "w").write("never")
    assert caught.value.filename == str(blocker / "out.ecsv") and caught.value.strerror == "Not a directory"
    (tmp_path / "taken.json").mkdir()  # the final name is a directory: the rename fails
    with pytest.raises(IsADirectoryError) as caught:
        with utils.atomic_path(tmp_path / "taken.json") as tmp:
            open(tmp, "w").write("{}")
    assert caught.value.filename == str(tmp_path / "taken.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "taken.json"]
    # errors about other files pass through unchanged
    with pytest.raises(FileNotFoundError) as caught:
        with utils.atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing_input.txt")
    assert caught.value.filename == str(tmp_path / "missing_input.txt")


def _bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (8 significant bits, ties to even), as float32."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def test_model_outputs_are_accepted_as_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 8.0, size=(2000, 3)).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax32 = e / e.sum(axis=1, keepdims=True)  # float32 arithmetic
    reciprocal = e * (np.float32(1) / e.sum(axis=1, keepdims=True))  # normalised by a rounded reciprocal
    eb = _bf16(np.exp(_bf16(logits - logits.max(axis=1, keepdims=True))))
    softmax16 = _bf16(eb / _bf16(eb.sum(axis=1, keepdims=True)))  # a model computing in bfloat16
    passes = logits + rng.normal(0.0, 2.0, size=(10, *logits.shape)).astype(np.float32)  # dropout-like passes
    e_passes = np.exp(passes - passes.max(axis=2, keepdims=True))
    mc_mean = (e_passes / e_passes.sum(axis=2, keepdims=True)).astype(np.float64).mean(axis=0).astype(np.float32)
    for p in (softmax32, reciprocal, softmax16, mc_mean):
        assert classify_probabilities(p).shape == (2000,)
    assert np.abs(softmax16.sum(axis=1) - 1).max() > 1e-3  # bfloat16 rows are further from 1 than float32 ones
    above_one = np.nextafter(np.float32(1), np.float32(2))  # 1.0000001, one float32 step above 1
    edge = np.array([[above_one, 0.0, 0.0], [0.0, 0.0, above_one]], np.float32)
    assert list(classify_probabilities(edge)) == ["disk", "bulge"]


@pytest.mark.parametrize(
    "row, why",
    [
        ([np.nan, 0.5, 0.5], "not finite"),
        ([np.inf, 0.0, 0.0], "not finite"),
        ([-1.0, 0.5, 1.5], r"outside \[0, 1\]"),
        ([0.0, 0.0, 1.001], r"outside \[0, 1\]"),
        ([0.5, 0.5, 0.5], "sums to 1.5"),
        ([0.2, 0.2, 0.2], "sums to 0.6"),
    ],
)
def test_rows_that_are_not_probabilities_are_refused(row, why):
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], row, [0.2, 0.6, 0.2]])
    pattern = rf"`probabilities` rows must be probabilities.*1 bad row\(s\) of 4: row 2 = .*{why}"
    with pytest.raises(ValueError, match=pattern):
        classify_probabilities(p)
