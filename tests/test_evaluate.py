"""Tests of gamornet.evaluate on hand-made predictions (expected numbers worked out by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from gamornet import cli
from gamornet import evaluate as ev

from helpers import REPO, run_gamornet

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
