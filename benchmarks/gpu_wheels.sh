#!/bin/sh
# Gather into one folder (default .whl/) the wheels GaMorNet's Keras path needs on a machine
# that already has PyTorch and/or JAX and numpy but no TensorFlow (Python 3.12,
# manylinux x86_64): gamornet itself, Keras 3 and the packages Keras and GaMorNet import.
# Needs setuptools and wheel in $PYTHON (default: .venv/bin/python where it exists, else python3).
# Install them there, without the network and without touching the installed frameworks:
#   pip install --no-index --no-deps --target .site .whl/*.whl && export PYTHONPATH=.site
set -eu
DIR=${1:-.whl}
PYTHON_SET=${PYTHON:-}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && [ -z "${PYTHON_SET:-}" ] && PYTHON=.venv/bin/python
mkdir -p "$DIR"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" .
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR" \
    keras==3.15.1 absl-py rich markdown-it-py mdurl pygments namex optree ml-dtypes packaging \
    typing-extensions h5py astropy pyerfa astropy-iers-data pyyaml progressbar2 python-utils filelock platformdirs pillow
du -sh "$DIR"
