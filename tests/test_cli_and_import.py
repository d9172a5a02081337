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
        "import sys, gamornet, gamornet.utils, gamornet.network, gamornet.registry, gamornet.thresholds; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tflearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tensorflow_pools_cpu_memory_unless_the_user_chose_otherwise():
    code = (
        "import os, gamornet, tensorflow as tf; tf.ones(3); "
        "print(os.environ['TF_CPU_ALLOCATOR_USE_BFC']); "
        "print(sorted(tf.config.experimental.get_memory_info('CPU:0')))"  # only a BFC allocator reports memory
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split("\n")[:2] == ["true", "['current', 'peak']"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "TF_CPU_ALLOCATOR_USE_BFC": "false"})
    assert out.stdout.split() == ["false"] and out.returncode != 0 and "ValueError" in out.stderr
