"""Files the package writes: the mode a plain open() gives, and one-line errors when an output cannot be written.

Write failures are made real for root too (chmod does not stop root): a path
whose parent is a regular file (ENOTDIR), a directory in the way of an
output (EISDIR), and a file-size limit (EFBIG, as a full disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from gamornet import cli
from gamornet.core.files import OutputLockedError, atomic_path, output_lock, remove_temporaries, resolve_save_dir

from helpers import REPO, SMALL_SHAPE, make_data, run_gamornet, saved_keras_model

_WRITE_EVERYTHING = r"""
import json, os, sys
import numpy as np
from astropy.table import Table
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from servers import write_keras_file
from gamornet import predict_files
from gamornet.cli import main
from gamornet.published.models import fetch_model
from gamornet.keras_module import gamornet_train_keras

d = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(10.0, 3.0, (6, 32, 32, 1)).astype(np.float32)
y = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
run = os.path.join(d, "run")
gamornet_train_keras(x, y, x, y, (32, 32, 1), files_save_path=run, epochs=1, batch_size=6, verbose=0, resume=True)
model = os.path.join(run, "trained_model.keras")
assert main(["convert", model, os.path.join(d, "converted", "model.hdf5"), "--quiet"]) == 0

images = os.path.join(d, "images")
os.makedirs(images)
np.save(os.path.join(images, "stack.npy"), x)
with open(os.path.join(images, "broken.fits"), "w") as f:
    f.write("not a FITS file")
seen = {}

def record(done, total):
    chunks = os.path.join(d, "pred.ecsv.chunks")
    for name in os.listdir(chunks):
        seen["chunks/" + name] = os.stat(os.path.join(chunks, name)).st_mode & 0o7777

predict_files(images, model, input_shape=(32, 32, 1), output=os.path.join(d, "pred.ecsv"), skip_bad=True,
              chunk_size=4, batch_size=4, progress=False, on_chunk=record)
Table({"id": [f"stack.npy:{i}" for i in range(6)], "label": ["disk", "indeterminate", "bulge"] * 2}).write(
    os.path.join(d, "catalog.ecsv"))
assert main(["evaluate", os.path.join(d, "pred.ecsv"), os.path.join(d, "catalog.ecsv"), "--output",
             os.path.join(d, "report")]) == 0
assert main(["simulate", "--survey", "CANDELS", "-n", "2", "--fits", "--output", os.path.join(d, "sim"), "--quiet",
             "--workers", "1", "--montage", os.path.join(d, "montage.png")]) == 0
served = os.path.join(d, "served")
write_keras_file(__import__("pathlib").Path(served) / "gamornet_keras/trained_models/CANDELS/sim_trained/"
                 "model_candels_sim_trained.hdf5", (32, 32, 1))
fetch_model("CANDELS_sim", base_urls=served, cache_dir=os.path.join(d, "cache"), input_shape=(32, 32, 1),
            progress=False)
for root, dirs, files in os.walk(d):
    for name in dirs + files:
        path = os.path.join(root, name)
        seen[os.path.relpath(path, d)] = os.stat(path).st_mode & 0o7777
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_every_written_file_gets_the_mode_of_a_plain_open(tmp_path):
    # Under umask 027 (not the test process's own): a plain open() gives 0640, mkdir 0750.
    result = subprocess.run([sys.executable, "-c", _WRITE_EVERYTHING, str(tmp_path)], cwd=REPO, umask=0o027,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    expected_files = {
        "run/trained_model.keras", "run/last.keras", "run/run_state.json", "run/metrics.csv",
        "converted/model.hdf5", "pred.ecsv", "pred.ecsv.skipped.csv", "chunks/manifest.json",
        "chunks/chunk-000000.npz", "chunks/chunk-000001.npz", "report/summary.json", "report/confusion_matrix.png",
        "report/threshold_sweep.png", "report/threshold_sweep.ecsv", "sim/images.npy", "sim/catalog.ecsv",
        "sim/fits/gal_000000.fits", "sim/fits/gal_000001.fits", "montage.png",
        "cache/gamornet_keras/trained_models/CANDELS/sim_trained/model_candels_sim_trained.hdf5",
    }
    assert expected_files <= set(modes), sorted(expected_files - set(modes))
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o750 if (tmp_path / name).is_dir() or name == "chunks" else 0o640)}
    assert wrong == {}


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file: any path below it fails with 'Not a directory', even for root."""
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


def _one_line_error(capsys, command: str, path: Path) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gamornet {command}: error: ") and str(path) in err, err
    assert err.strip().endswith((": Not a directory", ": File exists")), err  # a file where a folder must be


def test_unwritable_outputs_end_in_one_line_for_every_command(tmp_path, blocker, trained_keras_model, capsys):
    model, _ = trained_keras_model
    x, _ = make_data(4)
    np.save(tmp_path / "stack.npy", x)
    shards = []
    for i in (1, 2):
        table = Table({"id": [f"s{i}"], "p_disk": [0.8], "p_indeterminate": [0.1], "p_bulge": [0.1],
                       "label": ["disk"]}, meta={"shard": f"{i}/2", "policy": "keras_sdss"})
        table.write(tmp_path / f"shard{i}.ecsv")
        shards.append(str(tmp_path / f"shard{i}.ecsv"))
    Table({"id": ["s1", "s2"], "label": ["disk", "bulge"]}).write(tmp_path / "cat.ecsv")
    shape = ",".join(map(str, SMALL_SHAPE))
    commands = {
        "predict": ["predict", str(tmp_path / "stack.npy"), "--model", model, "--input-shape", shape, "--output",
                    str(blocker / "out.ecsv"), "--quiet"],
        "merge": ["merge", *shards, "--output", str(blocker / "merged.ecsv")],
        "simulate": ["simulate", "--survey", "CANDELS", "-n", "2", "--output", str(blocker / "sim"), "--quiet",
                     "--workers", "1"],
        "convert": ["convert", model, str(blocker / "model.hdf5"), "--quiet"],
        "evaluate": ["evaluate", shards[0], str(tmp_path / "cat.ecsv"), "--output", str(blocker / "report")],
    }
    for command, argv in commands.items():
        assert cli.main(argv) == 2, command
        _one_line_error(capsys, command, blocker)
    assert cli.main(["simulate", "--survey", "CANDELS", "-n", "2", "--montage", str(blocker / "m.png")]) == 2
    _one_line_error(capsys, "simulate", blocker / "m.png")
    with pytest.raises(NotADirectoryError):  # --debug: the exception, with its traceback
        cli.main(["--debug", *commands["merge"]])
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow
def test_unwritable_training_folder_ends_in_one_line(tmp_path, blocker, capsys):
    data = tmp_path / "sim"
    assert cli.main(["simulate", "--survey", "CANDELS", "-n", "6", "--output", str(data), "--quiet",
                     "--workers", "1"]) == 0
    assert cli.main(["train", str(data), "--output", str(blocker / "run"), "--epochs", "1", "--quiet"]) == 2
    _one_line_error(capsys, "train", blocker / "run")


@pytest.mark.slow
def test_full_disk_while_predicting_ends_in_one_line(tmp_path, trained_keras_model):
    model, _ = trained_keras_model
    x, _ = make_data(6)
    np.save(tmp_path / "stack.npy", x)
    output = tmp_path / "pred.ecsv"
    args = ["predict", tmp_path / "stack.npy", "--model", model, "--input-shape", "32,32,1", "--output", output,
            "--quiet"]
    result = run_gamornet(args, REPO, file_size_limit=300, timeout=300)  # as if the disk were full
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith(f"gamornet predict: error: cannot write {tmp_path}") and lines[-1].endswith(
        ": File too large"), lines
    assert not output.exists() and not list(tmp_path.rglob(".*.part*"))  # no table, no temporary file


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.hdf5", "model.keras"])
def test_full_disk_while_converting_ends_in_one_line(tmp_path_factory, tmp_path, name):
    # the published widths (~9e7 bytes of weights): the disk is full while the weights are written
    model = saved_keras_model(tmp_path_factory.mktemp("wide"))
    result = run_gamornet(["convert", model, tmp_path / name, "--quiet"], REPO, file_size_limit=1_000_000,
                          timeout=300)  # HDF5 and zip writers both meet a full disk
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"gamornet convert: error: cannot write {tmp_path / name}: " \
                                                     "File too large"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- atomic_path, locks, temporaries


def test_save_dir_and_atomic_path(tmp_path):
    assert resolve_save_dir("/dev/null") is None
    target = tmp_path / "run" / "sub"
    assert resolve_save_dir(str(target) + "/") == str(target) + "/"
    assert target.is_dir()
    final = target / "file.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert list(target.iterdir()) == []
    with atomic_path(final) as tmp:
        open(tmp, "w").write("whole")
    assert final.read_text() == "whole" and len(list(target.iterdir())) == 1



_MODE_PROBE = r"""
import json, os, sys
import numpy as np
from astropy.table import Table
from gamornet.core.files import atomic_path
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
        with atomic_path(blocker / "out.ecsv") as tmp:
            open(tmp, "w").write("never")
    assert caught.value.filename == str(blocker / "out.ecsv") and caught.value.strerror == "Not a directory"
    (tmp_path / "taken.json").mkdir()  # the final name is a directory: the rename fails
    with pytest.raises(IsADirectoryError) as caught:
        with atomic_path(tmp_path / "taken.json") as tmp:
            open(tmp, "w").write("{}")
    assert caught.value.filename == str(tmp_path / "taken.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "taken.json"]
    # errors about other files pass through unchanged
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing_input.txt")
    assert caught.value.filename == str(tmp_path / "missing_input.txt")


def test_output_lock_refuses_a_second_writer_and_leaves_nothing(tmp_path):
    out = tmp_path / "table.ecsv"
    with output_lock(str(out)):
        assert (tmp_path / "table.ecsv.lock").exists()
        with pytest.raises(OutputLockedError, match=r"`output` is being written by another run.*Received: output="):
            with output_lock(str(out)):
                pass
    assert not (tmp_path / "table.ecsv.lock").exists()
    folder = tmp_path / "run"
    with output_lock(str(folder), "files_save_path", directory=True):
        assert (folder / ".lock").exists()
        with pytest.raises(OutputLockedError, match="`files_save_path`"):
            with output_lock(str(folder), "files_save_path", directory=True):
                pass
    assert sorted(p.name for p in folder.iterdir()) == []


def test_remove_temporaries_touches_only_the_named_outputs(tmp_path):
    for name in (".a.csv.1f2e3d4c.part.csv", ".a.csv.k2j4x8_q.part", ".b.csv.12345678.part.csv", "a.csv",
                 ".a.csv", ".model_0003.keras.abcdef01.part.keras"):
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(tmp_path, [r"a\.csv", r"model_\d{4}\.keras"])
    assert sorted(p.rsplit("/", 1)[-1] for p in removed) == [".a.csv.1f2e3d4c.part.csv", ".a.csv.k2j4x8_q.part",
                                                             ".model_0003.keras.abcdef01.part.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.csv", ".b.csv.12345678.part.csv", "a.csv"]

