import json
import os

import numpy as np
import pytest
from astropy.table import Table

from gamornet.cli import main
from gamornet.demo import DemoSettings, run_demo
from gamornet.keras_module import gamornet_predict_keras
from gamornet.simulate import simulate_galaxies

pytestmark = pytest.mark.usefixtures("narrow_network")  # the demo's network: its width does not matter here

REPORT_FILES = {"predictions.ecsv", "confusion_matrix.png", "threshold_sweep.png", "summary.json", "summary.txt",
                "model", "gallery.html"}


def test_tiny_demo_writes_every_report_file(tmp_path, capsys):
    settings = DemoSettings(n_train=24, n_validation=8, n_test=12, epochs=1, batch_size=8)
    result = run_demo(str(tmp_path / "report"), settings, workers=1, verbose=1)
    assert REPORT_FILES <= set(os.listdir(tmp_path / "report"))
    assert {"metrics.csv", "trained_model.keras"} <= set(os.listdir(tmp_path / "report" / "model"))
    table = Table.read(tmp_path / "report" / "predictions.ecsv")
    assert len(table) == 12 and set(table["label"]) <= {"disk", "indeterminate", "bulge"}
    np.testing.assert_allclose(table["p_disk"] + table["p_indeterminate"] + table["p_bulge"], 1.0, atol=1e-5)
    saved = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert saved["n"] == 12 and saved["indeterminate_fraction"] == pytest.approx(result["indeterminate_fraction"])
    assert "disk precision" in capsys.readouterr().out
    for png in ("confusion_matrix.png", "threshold_sweep.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gallery = (tmp_path / "report" / "gallery.html").read_text()
    for name in ("disk", "indeterminate", "bulge"):  # a section per label, counting the table's labels
        assert f'id="{name}" data-count="{np.sum(table["label"] == name)}"' in gallery
    wrong = np.sum(table["label"] != table["true_label"])
    assert f'id="mistakes" data-count="{wrong}"' in gallery
    assert gallery.count("<img ") == gallery.count('class="thumb"') >= 12


def test_saved_model_scales_raw_images_itself(tmp_path):
    """The demo model carries its pixel scaling: raw images give the same answer at any brightness scale."""
    settings = DemoSettings(n_train=16, n_validation=8, n_test=8, epochs=1, batch_size=8)
    run_demo(str(tmp_path / "r"), settings, workers=1, verbose=0)
    images, _ = simulate_galaxies(4, "CANDELS", seed=5, workers=1, progress=False)
    path = str(tmp_path / "r" / "model" / "trained_model.keras")
    raw = gamornet_predict_keras(images, path, "CANDELS")
    scaled = gamornet_predict_keras(images * 100.0, path, "CANDELS")
    np.testing.assert_allclose(raw, scaled, atol=1e-5)


def test_demo_cli_arguments_are_checked(tmp_path, capsys):
    assert main(["demo", "-n", "0", "--output", str(tmp_path / "x"), "--quiet"]) == 2
    assert "`n_train` must be an integer >= 1. Received: n_train=0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_same_seed_gives_the_same_report(tmp_path):
    """Everything random in the demo (galaxies, initial weights, batch order, dropout) follows its seed."""
    settings = DemoSettings(n_train=16, n_validation=8, n_test=8, epochs=2, batch_size=8)
    runs = []
    for name in ("a", "b"):
        run_demo(str(tmp_path / name), settings, workers=1, verbose=0)
        table = Table.read(tmp_path / name / "predictions.ecsv")
        metrics = (tmp_path / name / "model" / "metrics.csv").read_text()
        runs.append((np.stack([table[c] for c in ("p_disk", "p_indeterminate", "p_bulge")], axis=1), metrics))
    # same operations on the same inputs in one process: identical, not merely close
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    other = run_demo(str(tmp_path / "c"), DemoSettings(**{**settings.__dict__, "seed": 7}), workers=1, verbose=0)
    assert other["n"] == 8
    assert (tmp_path / "c" / "model" / "metrics.csv").read_text() != runs[0][1]
