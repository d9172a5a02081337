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
