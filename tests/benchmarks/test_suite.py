"""The benchmark suite of the checkout (``python -m benchmarks``, ``gamornet bench``).

- ``test_quick_run``: ``python -m benchmarks --quick --json FILE`` in a
  subprocess (CANDELS, about 2 to 3 minutes on 2 cores); the JSON must hold
  every figure, ratio and target documented in ``docs/performance.rst`` and
  the table must print them.  The table is written to the test log (so CI
  shows the figures); nothing about speed is asserted.
- The other tests check the settings, the command line, the documentation of
  the keys and the PyTorch port of the network (when torch is installed).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from benchmarks.config import (
    COMMON_FIGURES,
    REFERENCES,
    SURVEY_FIGURES,
    SURVEYS,
    TARGETS,
    settings_for,
)

from helpers import REPO, run_benchmark_quick

#: Every key of a figure in the JSON.
FIGURE_FIELDS = {"label", "unit", "value", "runs", "reference", "ratio", "note", "error"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check_figure(group: str, name: str, figure: dict) -> None:
    assert set(figure) == FIGURE_FIELDS, (group, name)
    if name.startswith("torch_") and figure["error"] and figure["error"].startswith("skipped"):
        assert not _torch_installed()
        return
    assert figure["error"] is None, (group, name, figure["error"])
    assert isinstance(figure["value"], float) and math.isfinite(figure["value"]), (group, name)
    assert figure["runs"] and all(math.isfinite(r) for r in figure["runs"]), (group, name)
    if name in REFERENCES:
        ref_group, ref_name = REFERENCES[name]
        assert figure["reference"] == f"{'common' if ref_group == 'common' else group}/{ref_name}"
        assert isinstance(figure["ratio"], float) and figure["ratio"] > 0, (group, name)
    else:
        assert figure["ratio"] is None and figure["reference"] is None


@pytest.mark.slow
def test_quick_run(tmp_path, capsys):
    report, table = run_benchmark_quick("benchmarks", tmp_path / "bench.json", capsys, timeout=1200, env=_env())
    assert report["mode"] == "quick" and report["settings"]["surveys"] == ["CANDELS"]
    assert set(report["figures"]) == {"common", "CANDELS"}
    assert list(report["figures"]["common"]) == list(COMMON_FIGURES)
    assert list(report["figures"]["CANDELS"]) == list(SURVEY_FIGURES)
    for group, figures in report["figures"].items():
        for name, figure in figures.items():
            _check_figure(group, name, figure)

    expected = {("common" if g == "common" else "CANDELS", name) for g, name, *_ in TARGETS}
    assert {(t["group"], t["figure"]) for t in report["targets"]} == expected
    assert all(t["status"] in ("PASS", "MISS") for t in report["targets"])

    machine = report["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["versions"]["tensorflow"]
    profiles = report["profiles"]["CANDELS"]
    assert set(profiles) == {"files_fits", "files_npy", "train_keras", "train_tflearn"}
    for kind in ("files_fits", "files_npy"):
        assert {"list_s", "validate_s", "read_s", "forward_s", "table_s", "end_to_end_s"} <= set(profiles[kind])
    for kind in ("train_keras", "train_tflearn"):
        assert set(profiles[kind]) == {"cpu_ms_per_image", "system_ms_per_image"}

    for label, _ in [*COMMON_FIGURES.values(), *SURVEY_FIGURES.values()]:
        assert label in table
    assert table.count("PASS") + table.count("MISS") >= len(expected)


def test_settings():
    quick, full = settings_for("quick"), settings_for("full")
    assert quick.surveys == ("CANDELS",) and full.surveys == ("SDSS", "CANDELS")
    assert settings_for("quick", "both").surveys == ("SDSS", "CANDELS")
    assert settings_for("full", "SDSS").surveys == ("SDSS",)
    assert quick.repeats < full.repeats and quick.n_files["CANDELS"] < full.n_files["CANDELS"]
    for mode in ("quick", "full", "tiny"):
        s = settings_for(mode, "both")
        assert all(s.n_files[v] >= s.n_memory[v] for v in SURVEYS)
    with pytest.raises(ValueError, match="mode"):
        settings_for("slow")
    with pytest.raises(ValueError, match="surveys"):
        settings_for("quick", "HST")


def test_command_line():
    from gamornet.cli import COMMAND_MODULES, build_parser

    assert "gamornet.cli.performance" in COMMAND_MODULES
    args = build_parser().parse_args(["bench", "--quick", "--json", "out.json", "--survey", "both"])
    assert (args.quick, args.json, args.survey, args.tiny) == (True, "out.json", "both", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--survey", "HST"])
    from benchmarks.suite import main

    with pytest.raises(SystemExit):
        main(["--help"])


def test_keys_are_documented():
    text = (REPO / "docs" / "performance.rst").read_text(encoding="utf-8")
    for name in [*COMMON_FIGURES, *SURVEY_FIGURES]:
        assert f"``{name}``" in text, name
    assert "python -m benchmarks" in text and "gamornet bench" in text


@pytest.mark.torch
@pytest.mark.skipif(not _torch_installed(), reason="torch is not installed (CI installs its CPU build for this test)")
def test_torch_model_matches_keras():
    import torch

    from benchmarks.torch_port import build_torch_model, torch_set_weights
    from gamornet.core.network import count_params
    from gamornet.keras_backend.model import build_keras_model, weighted_layers

    shape = (32, 32, 1)  # asymmetric "same" padding in the first convolution and the first pooling
    keras_model = build_keras_model(shape, seed=3)
    torch_model = build_torch_model(shape)
    assert sum(p.numel() for p in torch_model.parameters()) == count_params(shape)
    torch_set_weights(torch_model, [layer.get_weights() for layer in weighted_layers(keras_model)])
    torch_model.eval()
    images = np.random.default_rng(0).normal(10, 3, size=(4, *shape)).astype(np.float32)
    with torch.inference_mode():
        logits = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    probabilities = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(probabilities, keras_model.predict_on_batch(images), atol=1e-5)
