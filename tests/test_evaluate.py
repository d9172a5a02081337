"""Tests of gamornet.evaluate on hand-made predictions (expected numbers worked out by hand)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np
import pytest
from astropy.table import Table

from gamornet import cli
from gamornet import evaluate as ev
from gamornet.core.tables import file_sha256, read_table
from gamornet.core.thresholds import classify_probabilities, load_policy

from helpers import NARROW_WIDTHS, REPO, run_gamornet

# [P_disk, P_indeterminate, P_bulge], true class; the keras_sdss policy (0.70 / 0.70) predicts the comment.
PROBS = np.array([
    [0.90, 0.05, 0.05],  # disk           -> disk
    [0.80, 0.15, 0.05],  # disk           -> disk
    [0.75, 0.20, 0.05],  # bulge          -> disk (wrong)
    [0.50, 0.30, 0.20],  # disk           -> indeterminate
    [0.05, 0.10, 0.85],  # bulge          -> bulge
    [0.10, 0.15, 0.75],  # indeterminate  -> bulge (wrong)
    [0.20, 0.10, 0.70],  # bulge          -> bulge (threshold is inclusive)
    [0.30, 0.40, 0.30],  # indeterminate  -> indeterminate
    [0.69, 0.01, 0.30],  # disk           -> indeterminate (just below)
    [0.02, 0.03, 0.95],  # bulge          -> bulge
])
TRUE = np.array(["disk", "disk", "bulge", "disk", "bulge", "indeterminate", "bulge", "indeterminate", "disk", "bulge"])
# rows true (disk, indeterminate, bulge), columns predicted
COUNTS = [[2, 2, 0], [0, 1, 1], [1, 0, 3]]


def test_confusion_matrix_by_hand():
    matrix = ev.confusion_matrix(TRUE, PROBS, policy="keras_sdss")
    assert matrix.counts.tolist() == COUNTS
    expected = np.array([[2 / 3, 2 / 3, 0], [0, 1 / 3, 1 / 4], [1 / 3, 0, 3 / 4]])
    np.testing.assert_allclose(matrix.fractions, expected)
    np.testing.assert_allclose(matrix.fractions.sum(axis=0), 1.0)
    onehot = np.eye(3)[[("disk", "indeterminate", "bulge").index(t) for t in TRUE]]
    labels = ev.as_class_labels(PROBS, policy="keras_sdss")
    assert ev.confusion_matrix(onehot, labels).counts.tolist() == COUNTS  # one-hot truth, label predictions
    empty = ev.confusion_matrix(["disk", "bulge"], ["disk", "disk"])
    assert np.isnan(empty.fractions[:, 1:]).all() and empty.fractions[:, 0].tolist() == [0.5, 0.0, 0.5]


def test_summary_by_hand():
    s = ev.summary(TRUE, PROBS, policy="keras_sdss")
    assert s["n"] == 10 and s["n_classified"] == 7 and s["policy"] == "keras_sdss"
    assert s["indeterminate_fraction"] == pytest.approx(0.3)
    assert s["completeness"] == pytest.approx(0.7)
    assert s["accuracy"] == pytest.approx(5 / 7)
    assert s["disk_precision"] == pytest.approx(2 / 3)
    assert s["bulge_precision"] == pytest.approx(3 / 4)
    assert s["disk_recall"] == pytest.approx(2 / 4)
    assert s["bulge_recall"] == pytest.approx(3 / 4)
    assert ev.indeterminate_fraction(PROBS, "keras_sdss") == pytest.approx(0.3)
    # a stricter policy (0.80) moves galaxies 2, 5 (both wrong) and 6 to indeterminate
    strict = ev.summary(TRUE, PROBS, policy="tflearn_sdss")
    assert (strict["n_classified"], strict["accuracy"]) == (4, 1.0)


def test_threshold_sweep_by_hand():
    sweep = ev.threshold_sweep(PROBS, TRUE, thresholds=[0.5, 0.7, 0.9])
    assert list(sweep["n_disk"]) == [5, 3, 1] and list(sweep["n_bulge"]) == [4, 4, 1]
    assert list(sweep["n_indeterminate"]) == [1, 3, 8]
    np.testing.assert_allclose(sweep["accuracy"], [7 / 9, 5 / 7, 1.0])
    np.testing.assert_allclose(sweep["completeness"], [0.9, 0.7, 0.2])


def test_threshold_sweep_trade_off_on_calibrated_probabilities():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet([0.4, 0.4, 0.4], size=20000)
    true = np.array(["disk", "indeterminate", "bulge"])[[rng.choice(3, p=p) for p in probs]]
    sweep = ev.threshold_sweep(probs, true, thresholds=np.linspace(0.5, 0.95, 10))
    assert np.all(np.diff(sweep["indeterminate_fraction"]) >= 0)
    assert np.all(np.diff(sweep["completeness"]) <= 0)
    assert np.all(np.diff(sweep["accuracy"]) > 0)  # calibrated: surer galaxies are more often right
    assert np.all(sweep["accuracy"] >= sweep["threshold"] - 0.02)


def test_plots_are_png(tmp_path):
    matrix = ev.confusion_matrix(TRUE, PROBS)
    sweep = ev.threshold_sweep(PROBS, TRUE)
    for path in (ev.plot_confusion_matrix(matrix, tmp_path / "cm.png"),
                 ev.plot_threshold_sweep(sweep, tmp_path / "sweep.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.mark.parametrize(
    "true, pred, match",
    [
        (["disk", "spiral"], ["disk", "disk"], "Received: \\['spiral'\\]"),
        (["disk"], ["disk", "bulge"], "Received: 1 true labels and 2 predictions"),
        (np.array([[0.5, 0.5, 0.0]]), ["disk"], "must be one-hot"),
        (["disk"], np.zeros((1, 4)), "Received: dtype=float64, shape=\\(1, 4\\)"),
    ],
)
def test_bad_inputs(true, pred, match):
    with pytest.raises(ValueError, match=match):
        ev.confusion_matrix(true, pred)


def test_evaluate_cli_end_to_end(tmp_path, capsys):
    order = np.array([3, 0, 9, 1, 8, 2, 7, 4, 6, 5])  # predictions in another order: joined on id
    pred = Table({"id": order + 100, "p_disk": PROBS[order, 0], "p_indeterminate": PROBS[order, 1],
                  "p_bulge": PROBS[order, 2]})
    bt = {"disk": 0.2, "indeterminate": 0.5, "bulge": 0.8}
    catalog = Table({"id": np.arange(10) + 100, "bt": [bt[t] for t in TRUE]})
    pred.write(tmp_path / "pred.csv", format="ascii.csv")
    catalog.write(tmp_path / "cat.ecsv", format="ascii.ecsv")
    out = tmp_path / "report"
    rc = cli.main(["evaluate", str(tmp_path / "pred.csv"), str(tmp_path / "cat.ecsv"), "--output", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == COUNTS and summary["accuracy"] == pytest.approx(5 / 7)
    for name in ("confusion_matrix.png", "threshold_sweep.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "disk_precision" in capsys.readouterr().out
    # A label column (FITS) works too; a bad policy and a missing column are refused with a clear message.
    Table({"label": TRUE}).write(tmp_path / "cat.fits")
    Table({"p_disk": PROBS[:, 0], "p_indeterminate": PROBS[:, 1], "p_bulge": PROBS[:, 2]}).write(tmp_path / "p.ecsv")
    args = [str(tmp_path / "p.ecsv"), str(tmp_path / "cat.fits"), "--output", str(out)]
    assert cli.main(["evaluate", *args, "--policy", "tflearn_sdss"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_classified"] == 4
    assert cli.main(["evaluate", *args, "--policy", "strict"]) == 2
    assert "Received: policy='strict'" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "cat.ecsv"), str(tmp_path / "cat.fits"), "--output", str(out)]) == 2
    assert "p_disk" in capsys.readouterr().err




def _prediction_table(probs, meta=None) -> Table:
    return Table({"id": np.arange(len(probs)), "p_disk": probs[:, 0], "p_indeterminate": probs[:, 1],
                  "p_bulge": probs[:, 2]}, meta=meta or {})


def _catalog() -> Table:
    return Table({"id": np.arange(10), "label": TRUE})


def test_evaluate_takes_the_policy_recorded_by_predict(tmp_path, capsys):
    _catalog().write(tmp_path / "cat.ecsv")
    _prediction_table(PROBS, {"policy": "tflearn_sdss"}).write(tmp_path / "pred.ecsv")
    _prediction_table(PROBS, {"POLICY": "tflearn_sdss"}).write(tmp_path / "pred.fits")  # FITS keys come back upper
    for pred in ("pred.ecsv", "pred.fits"):
        out = tmp_path / f"report_{pred}"
        assert cli.main(["evaluate", str(tmp_path / pred), str(tmp_path / "cat.ecsv"), "--output", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["policy"] == "tflearn_sdss" and summary["n_classified"] == 4  # not keras_sdss's 7
    out = tmp_path / "chosen"
    assert cli.main(["evaluate", str(tmp_path / "pred.ecsv"), str(tmp_path / "cat.ecsv"), "--output", str(out),
                     "--policy", "keras_sdss"]) == 0  # the user's choice wins
    assert json.loads((out / "summary.json").read_text())["n_classified"] == 7
    _prediction_table(PROBS).write(tmp_path / "plain.csv", format="ascii.csv")  # no metadata: the default, said so
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "plain.csv"), str(tmp_path / "cat.ecsv"), "--output", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["policy"] == "keras_sdss"
    assert "record no threshold policy" in capsys.readouterr().err
    _prediction_table(PROBS, {"policy": "custom"}).write(tmp_path / "custom.ecsv")
    assert cli.main(["evaluate", str(tmp_path / "custom.ecsv"), str(tmp_path / "cat.ecsv"), "--output", str(out)]) == 2
    assert "pass --policy" in capsys.readouterr().err


@pytest.mark.parametrize("ending", [".parquet", ".csv"])
def test_evaluate_reads_parquet_and_csv_tables_with_their_metadata(tmp_path, capsys, ending):
    if ending == ".parquet":
        pytest.importorskip("pyarrow")
    from gamornet.core.tables import write_table

    _catalog().write(tmp_path / "cat.ecsv")
    pred = tmp_path / f"pred{ending}"
    write_table(_prediction_table(PROBS, {"policy": "tflearn_sdss"}), pred)  # as gamornet predict -o writes it
    result = ev.write_report(pred, tmp_path / "cat.ecsv", tmp_path / "api")
    assert result["policy"] == "tflearn_sdss" and result["policy_recorded"] and result["n_classified"] == 4
    out = tmp_path / "cli"
    assert cli.main(["evaluate", str(pred), str(tmp_path / "cat.ecsv"), "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "tflearn_sdss" and summary["counts"] == result["counts"]
    assert "record no threshold policy" not in capsys.readouterr().err
    (tmp_path / f"broken{ending}").write_bytes(b"\xff\xfe not a table")
    assert cli.main(["evaluate", str(tmp_path / f"broken{ending}"), str(tmp_path / "cat.ecsv"), "--output",
                     str(out)]) == 2
    assert "`PREDICTIONS` could not be read as a table" in capsys.readouterr().err


def test_evaluate_refuses_rows_that_are_not_probabilities(tmp_path, capsys):
    probs = PROBS.copy()
    probs[4] = [np.nan, 0.5, 0.5]
    probs[7] = [-1.0, 0.5, 1.5]
    _catalog().write(tmp_path / "cat.ecsv")
    _prediction_table(probs).write(tmp_path / "pred.ecsv")
    assert cli.main(["evaluate", str(tmp_path / "pred.ecsv"), str(tmp_path / "cat.ecsv"), "--output",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "2 bad row(s) of 10: row 4 = [nan, 0.5, 0.5] (not finite); row 7 = [-1.0, 0.5, 1.5]" in err
    with pytest.raises(ValueError, match=r"row 4 = \[nan"):
        ev.threshold_sweep(probs, TRUE)


def test_full_disk_leaves_the_previous_report_whole(tmp_path, capsys):
    _catalog().write(tmp_path / "cat.ecsv")
    _prediction_table(PROBS, {"policy": "keras_sdss"}).write(tmp_path / "pred.ecsv")
    out = tmp_path / "report"
    args = ["evaluate", tmp_path / "pred.ecsv", tmp_path / "cat.ecsv", "--output", out]
    assert run_gamornet(args, REPO).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before["confusion_matrix.png"]) > 8192
    result = run_gamornet(args, REPO, file_size_limit=8192)  # as if the disk filled up while writing the PNG
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"gamornet evaluate: error: cannot write {out / 'confusion_matrix.png'}: File too large"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing truncated, no temporary file left
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()  # a directory in the way of an output
    assert cli.main(list(map(str, args))) == 2
    assert f"cannot write {out / 'summary.json'}: Is a directory" in capsys.readouterr().err
    with pytest.raises(IsADirectoryError):  # --debug shows the exception and its traceback
        cli.main(["--debug", *map(str, args)])


def test_simulated_set_predicted_and_evaluated_end_to_end(tmp_path, trained_keras_model, capsys):
    model, _ = trained_keras_model  # a (32, 32, 1) model: the CANDELS images are centre-cropped to it
    sim_dir = tmp_path / "sim"
    assert cli.main(["simulate", "--survey", "CANDELS", "-n", "6", "--fits", "--output", str(sim_dir), "--quiet",
                     "--workers", "1"]) == 0
    for name, source in (("fits", sim_dir / "fits"), ("npy", sim_dir / "images.npy")):
        pred = tmp_path / f"pred_{name}.ecsv"
        assert cli.main(["predict", str(source), "--model", model, "--input-shape", "32,32,1", "--crop-pad", "0",
                         "--policy", "keras_candels", "--output", str(pred), "--quiet"]) == 0
        table = Table.read(pred)
        assert table.meta["policy"] == "keras_candels"
        first = "gal_000000.fits" if name == "fits" else "images.npy:0"
        assert str(table["id"][0]) == first
        out = tmp_path / f"report_{name}"
        assert cli.main(["evaluate", str(pred), str(sim_dir / "catalog.ecsv"), "--output", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n"] == 6 and summary["policy"] == "keras_candels"
        probs, true = ev.evaluate_tables(table, Table.read(sim_dir / "catalog.ecsv"))
        assert list(true) == list(Table.read(sim_dir / "catalog.ecsv")["label"])  # row i is galaxy i
    capsys.readouterr()
    stranger = Table.read(tmp_path / "pred_fits.ecsv")
    stranger["id"][0] = "ngc1300.fits"
    stranger.write(tmp_path / "stranger.ecsv")
    assert cli.main(["evaluate", str(tmp_path / "stranger.ecsv"), str(sim_dir / "catalog.ecsv"), "--output",
                     str(tmp_path / "r")]) == 2
    assert "ids missing from CATALOG" in capsys.readouterr().err


# --------------------------------------------------------------------------- thresholds chosen on labelled galaxies


def test_choose_thresholds_by_hand():
    # P_bulge >= 0.5: 0.95 b, 0.85 b, 0.75 i, 0.70 b.  P_disk >= 0.5: 0.90 d, 0.80 d, 0.75 b, 0.69 d, 0.50 d.
    rule = ev.choose_thresholds(PROBS, TRUE, target_purity=0.75)
    assert (rule.disk_min, rule.bulge_min, rule.name) == (0.5, 0.7, "purity_0.75")  # 4/5 disks, 3/4 bulges
    rule = ev.choose_thresholds(PROBS, TRUE, target_purity=0.85, name="mine")
    assert (rule.disk_min, rule.bulge_min, rule.name) == (0.8, 0.85, "mine")  # 2/2 disks, 2/2 bulges
    rule = ev.choose_thresholds(PROBS, TRUE, target_completeness=0.5)
    assert (rule.disk_min, rule.bulge_min) == (0.8, 0.85)  # 2 of 4 disks, 2 of 4 bulges
    assert not (rule.disk_strict or rule.disk_argmax or rule.bulge_argmax)


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true classes drawn from them (surer galaxies are more often right)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.6, 0.6, 0.6], size=n).astype(np.float32)  # float32, as prediction tables hold them
    true = np.array(["disk", "indeterminate", "bulge"])[[rng.choice(3, p=p / p.sum()) for p in probs.astype(float)]]
    return probs, true


def _scores(probs, true, rule) -> dict:
    """Purity and completeness per class through classify_probabilities, counted here."""
    pred = classify_probabilities(probs, rule)
    out = {}
    for cls in ("disk", "bulge"):
        called, members = pred == cls, true == cls
        out[cls] = ((called & members).sum() / called.sum() if called.any() else np.nan,
                    (called & members).sum() / members.sum())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chosen_thresholds_are_the_lowest_reaching_the_purity(seed):
    probs, true = _calibrated(150, seed)
    target = 0.9
    rule = ev.choose_thresholds(probs, true, target_purity=target)
    scores = _scores(probs, true, rule)
    assert scores["disk"][0] >= target and scores["bulge"][0] >= target
    p = probs.astype(np.float64)
    assert rule.bulge_min in p[:, 2] and rule.disk_min in p[:, 0] and min(rule.disk_min, rule.bulge_min) >= 0.5
    for cls, k in (("bulge", 2), ("disk", 0)):  # every lower candidate threshold fails the target
        threshold = getattr(rule, f"{cls}_min")
        lower = np.unique(p[(p[:, k] >= 0.5) & (p[:, k] < threshold), k])
        for value in lower:
            trial = dataclasses.replace(rule, **{f"{cls}_min": float(value)})
            assert _scores(probs, true, trial)[cls][0] < target, (cls, value)
        assert lower.size  # the lower candidates were tried
    # the same thresholds from the float64 values of the table
    assert ev.choose_thresholds(p, true, target_purity=target) == rule


def test_chosen_thresholds_are_the_highest_keeping_the_completeness():
    probs, true = _calibrated(150, 3)
    target = 0.4
    rule = ev.choose_thresholds(probs, true, target_completeness=target)
    scores = _scores(probs, true, rule)
    assert scores["disk"][1] >= target and scores["bulge"][1] >= target
    p = probs.astype(np.float64)
    for cls, k in (("bulge", 2), ("disk", 0)):
        threshold = getattr(rule, f"{cls}_min")
        higher = np.unique(p[p[:, k] > threshold, k])
        assert higher.size
        for value in higher:
            trial = dataclasses.replace(rule, **{f"{cls}_min": float(value)})
            assert _scores(probs, true, trial)[cls][1] < target, (cls, value)


def test_unreachable_target_names_class_target_and_best():
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.2, 0.2, 0.6]])
    true = np.array(["disk", "disk", "bulge", "disk", "bulge"])  # the surest bulge is a disk
    with pytest.raises(ValueError, match=r"no bulge threshold >= 0.5 reaches purity 0.9 on these 5 galaxies: the best "
                                         r"purity is 0.6667 \(at P_bulge >= 0.6, 3 galaxies called bulge\). "
                                         r"Received: target_purity=0.9"):
        ev.choose_thresholds(probs, true, target_purity=0.9)
    rule = ev.choose_thresholds(probs, true, target_purity=0.5)
    assert (rule.disk_min, rule.bulge_min) == (0.6, 0.6)
    with pytest.raises(ValueError, match=r"no disk threshold >= 0.5 reaches completeness 1 .*the best completeness is "
                                         r"0.6667 \(at P_disk >= 0.6"):
        ev.choose_thresholds(probs, true, target_completeness=1.0)  # one disk is called bulge at every threshold
    with pytest.raises(ValueError, match=r"no galaxy has P_disk >= 0.5"):
        ev.choose_thresholds(np.array([[0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]), ["bulge", "disk"], target_purity=0.9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, r"give exactly one of `target_purity` and `target_completeness`. Received: target_purity=None"),
        ({"target_purity": 0.9, "target_completeness": 0.5}, "exactly one"),
        ({"target_purity": 0.0}, r"`target_purity` must be a number in \(0, 1\]. Received: target_purity=0.0"),
        ({"target_completeness": 1.5}, r"Received: target_completeness=1.5"),
        ({"target_purity": True}, r"Received: target_purity=True"),
        ({"target_purity": "0.9"}, r"Received: target_purity='0.9'"),
        ({"target_purity": 0.9, "name": ""}, r"`name` must be a non-empty string. Received: name=''"),
    ],
)
def test_choose_thresholds_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ev.choose_thresholds(PROBS, TRUE, **kwargs)


def test_write_report_with_a_target(tmp_path):
    probs, true = _calibrated(200, 5)
    _prediction_table(probs, {"policy": "keras_sdss"}).write(tmp_path / "pred.ecsv")
    Table({"id": np.arange(200), "label": true}).write(tmp_path / "cat.ecsv")
    result = ev.write_report(tmp_path / "pred.ecsv", tmp_path / "cat.ecsv", tmp_path / "r", target_completeness=0.5)
    rule = load_policy(tmp_path / "r" / "policy.json")
    assert rule == ev.choose_thresholds(probs, true, target_completeness=0.5)
    assert result["policy"] == rule.name == "completeness_0.5" and result["policy_recorded"]
    assert result["chosen"]["achieved"]["disk"]["completeness"] == result["disk_recall"] >= 0.5
    assert result["counts"] == ev.summary(true, probs, rule)["counts"]  # scored with the chosen policy
    with pytest.raises(ValueError, match="give a policy or a target to choose one, not both"):
        ev.write_report(tmp_path / "pred.ecsv", tmp_path / "cat.ecsv", tmp_path / "r2", "keras_sdss",
                        target_purity=0.9)
    true[np.argmax(probs[:, 2])] = "indeterminate"  # the surest bulge is not one: purity 1 is out of reach
    Table({"id": np.arange(200), "label": true}).write(tmp_path / "cat2.ecsv")
    with pytest.raises(ValueError, match="no bulge threshold >= 0.5 reaches purity 1 on these 200 galaxies"):
        ev.write_report(tmp_path / "pred.ecsv", tmp_path / "cat2.ecsv", tmp_path / "r3", target_purity=1.0)
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()  # nothing written


def _sharp_model(directory, images: np.ndarray) -> str:
    """A narrow network whose last layer is rescaled so that its probabilities on ``images`` spread over [0, 1]."""
    import keras

    from gamornet.keras_backend.model import build_keras_model

    model = build_keras_model(images.shape[1:], seed=3, widths=NARROW_WIDTHS)
    last = model.layers[-2]  # the dense layer of the logits, before the softmax
    hidden = np.asarray(keras.Model(model.inputs, last.input)([images], training=False), np.float64)
    kernel, _ = last.get_weights()
    logits = hidden @ kernel
    scale = 3.0 / (logits - logits.mean(axis=0)).std()
    last.set_weights([(kernel * scale).astype(np.float32), (-logits.mean(axis=0) * scale).astype(np.float32)])
    path = os.path.join(directory, "sharp.keras")
    model.save(path)
    return path


def test_target_purity_policy_file_used_by_predict(tmp_path, capsys):
    probs, true = _calibrated(300, 6)
    _prediction_table(probs, {"policy": "keras_sdss"}).write(tmp_path / "pred.ecsv")
    Table({"id": np.arange(300), "label": true}).write(tmp_path / "cat.ecsv")
    out = tmp_path / "report"
    assert cli.main(["evaluate", str(tmp_path / "pred.ecsv"), str(tmp_path / "cat.ecsv"), "--output", str(out),
                     "--target-purity", "0.95"]) == 0
    printed = capsys.readouterr().out
    policy_file = out / "policy.json"
    rule = load_policy(policy_file)
    assert rule == ev.choose_thresholds(probs, true, target_purity=0.95, name="purity_0.95")
    record = json.loads(policy_file.read_text())["provenance"]
    assert record["target_purity"] == 0.95 and record["n_galaxies"] == 300
    assert record["predictions_sha256"] == file_sha256(tmp_path / "pred.ecsv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "purity_0.95" and min(summary["disk_precision"], summary["bulge_precision"]) >= 0.95
    for cls in ("disk", "bulge"):
        achieved = record["achieved"][cls]
        assert achieved["purity"] == summary[f"{cls}_precision"] and achieved["n_true"] == (true == cls).sum()
        assert (f"{cls:6s} P_{cls} >= {getattr(rule, f'{cls}_min'):.6g}: purity {achieved['purity']:.4f}, "
                f"completeness {achieved['completeness']:.4f}") in printed
    assert "computed with this chosen policy" in printed and str(policy_file) in printed

    # gamornet predict --policy policy.json labels with it and records it
    images = np.random.default_rng(1).normal(10.0, 3.0, size=(24, 32, 32, 1)).astype(np.float32)
    images *= np.random.default_rng(2).uniform(0.0, 30.0, size=(24, 1, 1, 1)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    model = _sharp_model(tmp_path, images)
    table_path = tmp_path / "predicted.fits"
    assert cli.main(["predict", str(tmp_path / "images.npy"), "--model", model, "--input-shape", "32,32,1",
                     "--engine", "keras", "--policy", str(policy_file), "--output", str(table_path), "--quiet"]) == 0
    table = read_table(table_path)
    predicted = np.stack([np.asarray(table[f"p_{c}"]) for c in ("disk", "indeterminate", "bulge")], axis=1)
    labels = classify_probabilities(predicted, str(policy_file))
    assert list(table["label"]) == list(labels) and len(set(labels)) == 3  # every class: the thresholds decide
    assert list(labels) != list(classify_probabilities(predicted, "keras_sdss"))
    assert table.meta["POLICY"] == "purity_0.95" and ev.table_policy(table) == rule  # FITS: upper-case keys

    # gamornet evaluate reads the policy back from the table (and the truth from a bt column)
    bt = {"disk": 0.1, "indeterminate": 0.5, "bulge": 0.9}
    Table({"id": np.arange(24), "bt": [bt[c] for c in labels]}).write(tmp_path / "bt.ecsv")
    assert cli.main(["evaluate", str(table_path), str(tmp_path / "bt.ecsv"), "--output", str(tmp_path / "r2")]) == 0
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["policy"] == "purity_0.95" and summary["accuracy"] == 1.0 and summary["indeterminate_fraction"] > 0


def test_evaluate_cli_target_arguments(tmp_path, capsys):
    _catalog().write(tmp_path / "cat.ecsv")
    Table({"id": np.arange(10), "label": np.where(np.arange(10) == 9, "disk", TRUE)}).write(tmp_path / "cat2.ecsv")
    _prediction_table(PROBS).write(tmp_path / "pred.ecsv")
    base = ["evaluate", str(tmp_path / "pred.ecsv"), str(tmp_path / "cat.ecsv"), "--output", str(tmp_path / "r")]
    unreachable = [*base[:2], str(tmp_path / "cat2.ecsv"), *base[3:]]
    for args, message in ((base + ["--target-purity", "1.5"], "Received: target_purity=1.5"),
                          (base + ["--target-completeness", "x"], "Received: target_completeness='x'"),
                          (base + ["--target-purity", "0.9", "--target-completeness", "0.5"], "not allowed with"),
                          (base + ["--target-purity", "0.9", "--policy", "keras_sdss"], "not both"),
                          (unreachable + ["--target-purity", "0.9"],  # the surest bulge (row 9) is a disk
                           "no bulge threshold >= 0.5 reaches purity 0.9 on these 10 galaxies: the best purity is "
                           "0.5000 (at P_bulge >= 0.7, 4 galaxies called bulge)")):
        with contextlib.suppress(SystemExit):  # argparse exits for its own errors
            assert cli.main(args) == 2
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "r").exists()  # nothing written
    assert cli.main(base + ["--target-purity", "0.85"]) == 0
    assert load_policy(tmp_path / "r" / "policy.json") == ev.choose_thresholds(PROBS, TRUE, target_purity=0.85)
