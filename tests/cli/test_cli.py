import os
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
