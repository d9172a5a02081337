"""Adapting GaMorNet to one's own labels: several starts, stratified cross-validation, report, command line, resume.

The starting models are narrow networks (``NARROW_WIDTHS``) at ``SMALL_SHAPE``
saved in temporary folders: ``good`` was trained on blob images whose width
gives the class (see ``helpers.blob_data``), ``dead`` has every weight zero, so
its ReLU layers pass nothing and no gradient: it can only learn the class
frequencies and validates at chance.  Which start must win is therefore known
without training.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import gamornet
from gamornet.adapt import adapt, check_folds, start_names, stratified_folds
from gamornet.core.network import CLASS_NAMES

from helpers import NARROW_WIDTHS, SMALL_SHAPE, blob_data, narrow_network

NAMES = np.asarray(CLASS_NAMES)
#: Id of the galaxy whose label is wrong (so the out-of-fold mistakes always list it): it must come out escaped.
EVIL_ID = "<script>alert('x')</script>"
#: A folder name that is HTML: paths in the report must come out escaped.
EVIL_DIR = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def starts(tmp_path_factory):
    """Paths of the starting models: (dead, good); the good one under a folder named with HTML."""
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.keras_module import gamornet_train_keras

    root = tmp_path_factory.mktemp("starts")
    dead = build_keras_model(SMALL_SHAPE, widths=NARROW_WIDTHS, seed=0)
    dead.set_weights([np.zeros_like(w) for w in dead.get_weights()])
    dead.save(root / "dead.keras")
    x, y = blob_data(60, seed=11)
    good_dir = root / EVIL_DIR
    with pytest.MonkeyPatch.context() as monkeypatch:
        narrow_network(monkeypatch)
        gamornet_train_keras(x, y, None, None, SMALL_SHAPE, files_save_path=str(good_dir), epochs=8, batch_size=16,
                             lr=1e-3, verbose=0, seed=1, optimizer="adam")
    os.replace(good_dir / "trained_model.keras", good_dir / "good.keras")
    return str(root / "dead.keras"), str(good_dir / "good.keras")


def write_labelled(directory: Path, n: int = 48, seed: int = 5) -> tuple[str, str, np.ndarray]:
    """A .npy stack and a labels table (ids ``g<i>``, one galaxy ``EVIL_ID`` with a wrong label)."""
    from astropy.table import Table

    x, y = blob_data(n, seed=seed)
    names = NAMES[np.argmax(y, 1)]
    names[0] = NAMES[(np.argmax(y[0]) + 2) % 3]  # mislabelled: a mistake whatever the model
    ids = [EVIL_ID if i == 0 else f"g<{i}>" for i in range(n)]
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", x)
    Table({"id": ids, "label": names}).write(directory / "labels.ecsv", overwrite=True)
    return str(directory / "images.npy"), str(directory / "labels.ecsv"), names


def saved_weights(path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


# --------------------------------------------------------------------------- folds and names


@pytest.mark.parametrize("counts,k", [((10, 7, 13), 4), ((5, 0, 9), 5), ((2, 3, 2), 2), ((31, 12, 40), 3)])
def test_stratified_folds_spread_each_class_evenly(counts, k):
    rng = np.random.default_rng(sum(counts) + k)
    classes = rng.permutation(np.repeat(np.arange(3), counts))
    fold = stratified_folds(classes, k, seed=7)
    assert fold.shape == classes.shape and set(np.unique(fold)) == set(range(1, k + 1))
    for c, n in enumerate(counts):
        per_fold = np.bincount(fold[classes == c], minlength=k + 1)[1:]
        assert np.all(np.abs(per_fold - n / k) < 1), (c, per_fold)  # floor or ceil of the ideal n / k
    sizes = np.bincount(fold)[1:]
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(fold, stratified_folds(classes, k, seed=7))  # seeded
    assert not np.array_equal(fold, stratified_folds(classes, k, seed=8))


def test_fold_counts_are_checked():
    classes = np.array([0] * 5 + [1] * 2 + [2] * 6)
    assert check_folds(2, classes) == 2 and check_folds(None, classes) is None
    with pytest.raises(ValueError, match=r"indeterminate: 2.*Received: folds=3"):
        check_folds(3, classes)
    for bad in (1, 0, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"`folds` must be None or an integer >= 2"):
            check_folds(bad, classes)
    assert check_folds(5, np.array([0] * 5 + [2] * 5)) == 5  # an absent class is no obstacle


def test_start_names_are_unique_and_safe(tmp_path):
    paths = [tmp_path / "a" / "model.keras", tmp_path / "b" / "model.keras", tmp_path / "x y<z>.h5"]
    names = start_names(["SDSS_sim", "SDSS_tl", *map(str, paths), "SDSS_sim"])
    assert names == ["SDSS_sim", "SDSS_tl", "model", "model-2", "x_y_z_", "SDSS_sim-2"]


# --------------------------------------------------------------------------- errors before any training


def test_errors_come_before_any_training(tmp_path, starts):
    dead, good = starts
    images, labels, _ = write_labelled(tmp_path / "data")
    out = tmp_path / "out"
    cases = [
        (dict(models=["SDSS_sim", "nonexistent.keras"]), ValueError, r"`models` must name published models.*"
                                                                    r"nonexistent\.keras"),
        (dict(models=[]), ValueError, r"`models` must be a non-empty list"),
        (dict(models=[dead, good], folds=17), ValueError, r"`folds` must not exceed.*Received: folds=17"),
        (dict(models=[dead, good], folds=1), ValueError, r"`folds` must be None or an integer >= 2"),
        (dict(models=[dead, good], final="best-fold"), ValueError, r"needs cross-validation"),
        (dict(models=[dead, good], final="last"), ValueError, r"`final` must be one of"),
        (dict(models=[dead, good], epochs_typo=2), TypeError, r"unknown transfer-learning options \['epochs_typo'\]"),
        (dict(models=[dead, good], validation_fraction=1.5), ValueError, r"`validation_fraction` must be in \(0, 1\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            adapt(images, labels, output=str(out), verbose=0, **kwargs)
    with pytest.raises(ValueError, match=r"give its labels"):  # a stack without labels
        adapt(images, None, models=[dead, good], output=str(out), verbose=0)
    assert not out.exists()
    for name in ("adapt.json", "run_state.json"):
        held = tmp_path / f"held_{name}"
        held.mkdir()
        (held / name).write_text("{}")
        with pytest.raises(FileExistsError, match=r"already holds a run"):
            adapt(images, labels, models=[dead, good], output=str(held), verbose=0)
        assert sorted(p.name for p in held.iterdir()) == [name]


# --------------------------------------------------------------------------- several starts


def test_two_starts_keep_the_one_that_validates_best(tmp_path, starts, capsys):
    dead, good = starts
    images, labels, _ = write_labelled(tmp_path / "data")
    out = tmp_path / "out"
    result = adapt(images, labels, models=[dead, good], output=str(out), validation_fraction=0.25, seed=3,
                   epochs=2, batch_size=16, lr=1e-4, verbose=0)
    selection = json.loads((out / "selection.json").read_text())
    assert result.chosen == selection["chosen"] == "good"
    assert [s["name"] for s in selection["starts"]] == ["dead", "good"]
    accuracy = {s["name"]: s["best_val_accuracy"] for s in selection["starts"]}
    assert accuracy["good"] > accuracy["dead"] and "validation accuracy" in selection["criterion"]
    assert "first start given" in selection["ties"] and selection["n_validation"] == 12
    for start in selection["starts"]:
        rows = [r for r in (out / start["run"] / "metrics.csv").read_text().splitlines()[1:]]
        assert start["epochs"] == len(rows) == 2 and 1 <= start["best_epoch"] <= 2
        split = json.loads((out / start["run"] / "split.json").read_text())
        assert len(split["validation"]) == 12 and not set(split["validation"]) & set(split["training"])
    # same split for both starts
    assert (out / "runs/dead/split.json").read_text() == (out / "runs/good/split.json").read_text()
    assert (out / "trained_model.keras").read_bytes() == (out / "runs/good/trained_model.keras").read_bytes()
    assert "Chosen start: good" in result.message and "dead" in result.message
    page = (out / "report.html").read_text()
    assert page.count('class="curve"') == 2 and 'data-run="runs/dead"' in page and 'data-run="runs/good"' in page
    assert EVIL_DIR not in page and html.escape(EVIL_DIR) in page


@pytest.mark.usefixtures("narrow_network")
def test_cli_one_model_without_folds_is_plain_transfer_learning(tmp_path, starts):
    from gamornet.cli import main

    _, good = starts
    images, labels, _ = write_labelled(tmp_path / "data")
    out = tmp_path / "tl"
    assert main(["tl", images, "--catalog", labels, "--model", good, "--output", str(out), "--epochs", "1",
                 "--batch-size", "16", "--validation-fraction", "0.25", "--seed", "2", "--quiet"]) == 0
    state = json.loads((out / "run_state.json").read_text())
    assert state["cli"]["model"] == good  # one model, recorded as before
    assert (out / "trained_model.keras").is_file() and not (out / "runs").exists()
    assert not (out / "adapt.json").exists() and not (out / "selection.json").exists()
    with pytest.raises(SystemExit):
        main(["tl", images, "--catalog", labels, "--model", good, "--output", str(tmp_path / "x"), "--final", "nope"])
    assert main(["tl", images, "--catalog", labels, "--model", good, "--output", str(tmp_path / "y"),
                 "--final", "all"]) == 2  # --final needs --folds


# --------------------------------------------------------------------------- cross-validation


@pytest.mark.slow
def test_cross_validation_out_of_fold_predictions_summary_and_report(tmp_path, starts):
    from astropy.table import Table

    dead, good = starts
    images, labels, names = write_labelled(tmp_path / "data", n=60)
    out = tmp_path / EVIL_DIR
    result = adapt(images, labels, models=[dead, good], output=str(out), folds=4, seed=9, epochs=2, batch_size=16,
                   lr=1e-4, verbose=0)
    assert result.chosen == "good"
    oof = Table.read(out / "oof_predictions.ecsv")
    assert len(oof) == 60 and sorted(oof["row"]) == list(range(60)) and len(set(oof["id"])) == 60
    assert list(oof["id"][:2]) == [EVIL_ID, "g<1>"] and list(oof["true_label"]) == list(names)
    assert set(oof["start"]) == {"good"} and oof.meta["policy"] == "keras_sdss"
    cv = json.loads((out / "cv_summary.json").read_text())
    assert cv["folds"] == 4 and cv["chosen"] == "good"
    class_index = np.array([list(NAMES).index(v) for v in names])
    for name in ("dead", "good"):
        own = Table.read(out / "runs" / name / "oof_predictions.ecsv")
        assert np.array_equal(own["fold"], oof["fold"])  # the same folds for every start
        folds = cv["starts"][name]["folds"]
        assert [f["fold"] for f in folds] == [1, 2, 3, 4]
        for f in folds:
            split = json.loads((out / f["run"] / "split.json").read_text())
            in_fold = np.flatnonzero(np.asarray(own["fold"]) == f["fold"])
            assert split["validation"] == in_fold.tolist()  # validated on its own fold ...
            assert not set(split["training"]) & set(split["validation"])  # ... never trained on it
            assert sorted(split["training"] + split["validation"]) == list(range(60))
            counts = np.bincount(class_index[in_fold], minlength=3)
            assert np.all(np.abs(counts - np.bincount(class_index, minlength=3) / 4) < 1)
            probs = np.column_stack([own[f"p_{c}"][in_fold] for c in CLASS_NAMES])
            assert f["accuracy"] == pytest.approx(np.mean(NAMES[np.argmax(probs, 1)] == names[in_fold]))
        accuracies = [f["accuracy"] for f in folds]
        assert cv["starts"][name]["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
        assert cv["starts"][name]["std"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    assert cv["starts"]["good"]["mean"]["accuracy"] > cv["starts"]["dead"]["mean"]["accuracy"]
    # the fold's out-of-fold predictions are those of its saved model
    from gamornet.keras_module import gamornet_predict_keras

    x = np.load(images)
    rows = np.flatnonzero(np.asarray(oof["fold"]) == 2)
    again = gamornet_predict_keras(x[rows], str(out / "runs/good/fold_2/trained_model.keras"), SMALL_SHAPE,
                                   engine="keras", progress=False)
    np.testing.assert_array_equal(again, np.column_stack([oof[f"p_{c}"][rows] for c in CLASS_NAMES]))
    # final model: trained on everything from the chosen start
    assert json.loads((out / "final/split.json").read_text()) == {"training": list(range(60)), "validation": None}
    assert (out / "trained_model.keras").read_bytes() == (out / "final/trained_model.keras").read_bytes()
    page = (out / "report.html").read_text()
    runs = [f"runs/{s}/fold_{k}" for s in ("dead", "good") for k in range(1, 5)] + ["final"]
    assert page.count('class="curve"') == len(runs) and all(f'data-run="{r}"' in page for r in runs)
    assert page.count('class="figure"') == 2 and "<script" not in page and EVIL_DIR not in page
    assert html.escape(EVIL_ID) in page  # the mislabelled galaxy among the listed mistakes
    gallery = out / "mistakes.html"
    assert gallery.is_file() and 'src="mistakes.html"' in page


@pytest.mark.slow
def test_cli_two_models_with_folds_end_to_end(tmp_path, starts, capsys):
    from gamornet.cli import main

    dead, good = starts
    images, labels, _ = write_labelled(tmp_path / "data")
    out = tmp_path / "cv"
    args = ["tl", images, "--catalog", labels, "--model", dead, "--model", good, "--output", str(out), "--folds", "3",
            "--final", "best-fold", "--epochs", "1", "--batch-size", "16", "--lr", "0.0001", "--seed", "4", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Chosen start: good" in printed and "mean cross-validated accuracy" in printed
    selection = json.loads((out / "selection.json").read_text())
    assert selection["chosen"] == "good" and selection["final"] == "best-fold" and selection["folds"] == 3
    best = selection["trained_model_from"]
    assert best.startswith("runs/good/fold_") and not (out / "final").exists()
    assert (out / "trained_model.keras").read_bytes() == (out / best).read_bytes()
    settings = json.loads((out / "adapt.json").read_text())
    assert settings["options"]["epochs"] == 1 and settings["options"]["lr"] == 1e-4 and settings["seed"] == 4
    for name in ("oof_predictions.ecsv", "cv_summary.json", "report.html"):
        assert (out / name).is_file()
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    logs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/fold_*/metrics.csv")}
    assert len(logs) == 6
    assert main(["tl", "--resume", str(out), "--quiet"]) == 0  # finished: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in logs} == logs
    assert "Chosen start: good" in capsys.readouterr().out


# --------------------------------------------------------------------------- resume

_CHILD = r"""
import sys
import keras
from gamornet.adapt import adapt, resume_adapt

images, labels, dead, good, out, mode = sys.argv[1:7]

class StopAfterFirstEpoch(keras.callbacks.Callback):
    # interrupts the third run (the second start's first fold) after its first epoch is saved
    runs = 0
    def on_train_begin(self, logs=None):
        StopAfterFirstEpoch.runs += 1
    def on_epoch_end(self, epoch, logs=None):
        if StopAfterFirstEpoch.runs == 3 and epoch == 0:
            raise KeyboardInterrupt

kwargs = dict(models=[dead, good], output=out, folds=2, seed=5, epochs=3, batch_size=16, lr=1e-4, verbose=0)
if mode == "whole":
    adapt(images, labels, **kwargs)
elif mode == "resume":
    resume_adapt(out, verbose=0)
else:
    try:
        adapt(images, labels, callbacks=[StopAfterFirstEpoch()], **kwargs)
    except KeyboardInterrupt:
        print("interrupted")
    else:
        raise SystemExit("not interrupted")
"""


def _child(*args) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(gamornet.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_an_interrupted_adaptation_resumed_equals_an_uninterrupted_one(tmp_path, starts):
    """Each adaptation runs in a fresh process with TF_DETERMINISTIC_OPS=1 (see tests/keras_backend), so the two
    must agree exactly."""
    dead, good = starts
    images, labels, _ = write_labelled(tmp_path / "data")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _child(images, labels, dead, good, whole, "whole")
    assert "interrupted" in _child(images, labels, dead, good, cut, "interrupt")
    state = json.loads((cut / "runs/good/fold_1/run_state.json").read_text())
    assert state["completed_epochs"] == 1 and not state["finished"] and not (cut / "selection.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in cut.glob("runs/dead/fold_*/trained_model.keras")}
    assert len(finished) == 2
    _child(images, labels, dead, good, cut, "resume")
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # completed runs were not trained again
    for name in ("selection.json", "cv_summary.json", "oof_predictions.ecsv"):
        assert (cut / name).read_text() == (whole / name).read_text(), name
    for run in ["runs/dead/fold_1", "runs/dead/fold_2", "runs/good/fold_1", "runs/good/fold_2", "final"]:
        assert (cut / run / "metrics.csv").read_text() == (whole / run / "metrics.csv").read_text(), run
        for u, v in zip(saved_weights(cut / run / "trained_model.keras"),
                        saved_weights(whole / run / "trained_model.keras")):
            assert np.array_equal(u, v), run


@pytest.mark.parametrize("extra, message", [(["--folds", "1"], "`folds` must be None or an integer >= 2"),
                                            (["--final", "all"], "`--final` needs --folds K")])
def test_cli_argument_errors_come_before_any_framework_is_imported(tmp_path, extra, message):
    """A bad --folds or --final is one line, and TensorFlow is not even imported first."""
    code = ("import sys\nfrom gamornet.cli import main\n"
            f"rc = main(['tl', 'x.npy', '--catalog', 'c.ecsv', '--model', 'SDSS_sim', '--model', 'SDSS_tl', "
            f"'--output', 'out', *{extra!r}])\n"
            "sys.exit(10 * rc + ('tensorflow' in sys.modules) + 2 * ('keras' in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "GAMORNET_OFFLINE": "1"})
    assert result.returncode == 20, result.stderr
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()
