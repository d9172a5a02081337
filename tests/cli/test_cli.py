import os
import re
import subprocess
import sys

import gamornet
from gamornet.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"gamornet {gamornet.__version__}"
    assert main([]) == 0
    assert "usage: gamornet" in capsys.readouterr().out


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "gamornet", "--help"], capture_output=True, text=True, check=True)
    assert "usage: gamornet" in out.stdout


def test_import_is_light():
    code = (
        "import sys, gamornet, gamornet.utils, gamornet.core.network, gamornet.published.registry, "
        "gamornet.core.thresholds, gamornet.cli, gamornet.weights, gamornet.predict; "
        "gamornet.cli.build_parser(); "
        "heavy = [m for m in ('tensorflow', 'keras', 'tflearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pooled_cpu_allocator_is_asked_for_unless_the_user_chose():
    """``import gamornet`` sets TF_CPU_ALLOCATOR_USE_BFC=true when unset and keeps any value the user set."""
    code = "import os, gamornet; print(os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    for given, expected in ((None, "true"), ("false", "false"), ("true", "true"), ("0", "0")):
        run_env = env if given is None else {**env, "TF_CPU_ALLOCATOR_USE_BFC": given}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=run_env)
        assert out.stdout.strip() == expected, given


def test_tensorflow_pools_cpu_memory_by_default():
    """TensorFlow reads the setting at its first op, also when imported before gamornet.

    Only the positive case is asserted: with the pooling (BFC) allocator TensorFlow
    reports CPU memory statistics.  What a build does without it is its own affair
    (some builds report statistics from another allocator too).
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    for order in ("import gamornet, tensorflow as tf", "import tensorflow as tf, gamornet"):
        code = f"{order}; tf.ones(3); print(sorted(tf.config.experimental.get_memory_info('CPU:0')))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert out.stdout.split("\n")[0] == "['current', 'peak']", order


# --------------------------------------------------------------------------- what reaches the terminal

#: Start-up lines of TensorFlow's C++ code and absl that a command must not show.
STARTUP_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cuInit", "cpu_feature_guard", "cudart_stub",
                 "This TensorFlow binary is optimized")
AMX_FLAGS = "avx2 fma avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16"


def _env(**extra) -> dict:
    """This environment without TF_CPP_MIN_LOG_LEVEL or GAMORNET_CPU_FLAGS, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GAMORNET_CPU_FLAGS",
                                                             "PROGRESSBAR_IS_TERMINAL")}
    return {**env, **extra}


def _gamornet(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "gamornet", *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _predict_args(tmp_path) -> list[str]:
    import numpy as np

    from helpers import NARROW_WIDTHS, make_data, saved_keras_model

    if not (tmp_path / "x.npy").exists():
        np.save(tmp_path / "x.npy", make_data(8)[0])
        saved_keras_model(tmp_path, widths=NARROW_WIDTHS)
    return ["predict", str(tmp_path / "x.npy"), "--model", str(tmp_path / "tiny.keras"), "--input-shape", "32,32,1",
            "--engine", "keras", "--output", str(tmp_path / "out.ecsv"), "--overwrite"]


def test_predict_shows_no_tensorflow_startup_lines_unless_the_user_sets_the_log_level(tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL no C++ / absl start-up line reaches stderr; a level the user set is kept."""
    args = _predict_args(tmp_path)
    err = _gamornet(args, _env(GAMORNET_CPU_FLAGS="avx2 fma"), tmp_path).stderr
    assert not [noise for noise in STARTUP_NOISE if noise in err], err
    assert "bfloat16" not in err  # no native bfloat16: no notice
    assert "Predicting 8 images" in err
    # the default engine converting the model first (TensorFlow imported after a look-up of whether it is installed)
    auto = [a for a in args if a not in ("--engine", "keras")]
    err = _gamornet(auto, _env(GAMORNET_CPU_FLAGS="avx2 fma", GAMORNET_HOME=str(tmp_path / "home")), tmp_path).stderr
    assert not [noise for noise in STARTUP_NOISE if noise in err], err
    assert "Predicting 8 images" in err
    loud = _gamornet(args, _env(GAMORNET_CPU_FLAGS="avx2 fma", TF_CPP_MIN_LOG_LEVEL="0"), tmp_path).stderr
    assert [noise for noise in STARTUP_NOISE if noise in loud], loud  # the user's level 0 shows them again


def test_the_command_line_sets_the_log_level_only_when_the_user_did_not():
    code = "import os, gamornet.cli as cli; cli.quiet_startup(); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    for given, expected in ((None, "3"), ("1", "1"), ("0", "0")):
        env = _env() if given is None else _env(TF_CPP_MIN_LOG_LEVEL=given)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert out.stdout.strip() == expected, given


def test_bfloat16_notice_once_on_a_bfloat16_cpu_and_quiet_silences_it(tmp_path):
    args = _predict_args(tmp_path)
    err = _gamornet(args, _env(GAMORNET_CPU_FLAGS=AMX_FLAGS), tmp_path).stderr
    assert err.count("--precision bfloat16") == 1 and "4.57x" in err and "0.00-0.78%" in err, err
    assert err.index("--precision bfloat16") < err.index("Predicting")  # in the first lines
    assert err.startswith("gamornet predict: note: ")
    quiet = _gamornet([*args, "--quiet"], _env(GAMORNET_CPU_FLAGS=AMX_FLAGS), tmp_path)
    assert "bfloat16" not in quiet.stderr + quiet.stdout


def test_training_into_a_pipe_prints_one_plain_line_per_epoch(tmp_path):
    """`gamornet train` with stdout and stderr piped: no escape codes, no carriage returns, one line per epoch."""
    import numpy as np
    from astropy.table import Table

    from helpers import make_data

    x, y = make_data(40)
    np.save(tmp_path / "images.npy", x)
    Table({"label": np.asarray(["disk", "indeterminate", "bulge"])[np.argmax(y, 1)]}).write(tmp_path / "cat.ecsv")
    out = _gamornet(["train", str(tmp_path / "images.npy"), "--catalog", str(tmp_path / "cat.ecsv"), "--output",
                     str(tmp_path / "run"), "--epochs", "2", "--batch-size", "16", "--seed", "1"], _env(), tmp_path)
    text = out.stdout + out.stderr
    assert "\x1b[" not in text and "\r" not in text, text
    epochs = [line for line in out.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"], out.stdout
    assert all(re.search(r"\(\d[\d,.]* img/s\) - ", line) and "val_loss" in line for line in epochs), epochs
    assert not [noise for noise in STARTUP_NOISE if noise in out.stderr], out.stderr
