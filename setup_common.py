"""Metadata shared by setup.py (gamornet) and setup-cpu.py (gamornet-cpu)."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    with open(os.path.join(HERE, "gamornet", "__init__.py"), encoding="utf8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def read_readme() -> str:
    with open(os.path.join(HERE, "README.md"), encoding="utf8") as f:
        return f.read()


#: Every dependency except TensorFlow itself, which the two distributions choose.
COMMON_REQUIRES = [
    "keras>=3.3",
    "tflearn==0.5.0",
    "numpy>=1.24",
    "scipy>=1.10",
    "h5py>=3.8",
    "requests>=2.28",
    "progressbar2>=4.2",
    "astropy>=5.3",
    "reproject>=0.13",
    "matplotlib>=3.7",
    "filelock>=4",
    "platformdirs>=3.0",
    "Pillow>=9",
    # The OpenVINO engine: engine "auto" runs it on machines without an NVIDIA GPU (exact float32, the fastest
    # CPU engine; see the performance page).  A 59 MB wheel needing only numpy and openvino-telemetry.
    "openvino>=2024.0",
    # Survey images given as http(s):// URLs (``gamornet cutout``, ``predict --catalog``): read in parts through
    # fsspec's HTTP file system, which needs aiohttp.
    "fsspec>=2023.1",
    "aiohttp>=3.8",
]

_DOCS = ["sphinx>=7", "furo", "nbformat>=5", "nbclient>=0.8", "ipykernel>=6"]

#: PyTorch, for the benchmark's PyTorch port of the network.  Not in the test
#: extra: from PyPI alone pip takes a CUDA build of several GB on Linux.  Install
#: the CPU build first where no GPU is wanted (see the performance page).
_TORCH = "torch>=2.1"

#: Prediction on a Dask cluster (``client=``, ``--workers``, ``--scheduler``); dask-jobqueue for HPC batch systems.
_DASK = ["distributed>=2024.8", "dask-jobqueue>=0.9"]

EXTRAS = {
    "test": ["pytest>=7.4", "hypothesis>=6.90", "pyftpdlib>=1.5.9", "ruff>=0.5", "import-linter>=2.1",
             "tf-keras>=2.16,<2.22", "pyarrow>=14", "selenium>=4.15", *_DOCS, *_DASK],
    "bench": [_TORCH, "onnxruntime>=1.17", "onnx>=1.15"],
    "openvino": [],  # OpenVINO is a dependency: the extra is kept so that install commands naming it work
    "docs": _DOCS,
    "parquet": ["pyarrow>=14"],
    "dask": _DASK,
    "cloud": ["s3fs>=2023.1"],  # survey images given as s3:// URLs
}


def setup_kwargs(name: str, tensorflow: str) -> dict:
    """Arguments of ``setuptools.setup`` for one of the two distributions."""
    from setuptools import find_packages

    extras = {key: list(value) for key, value in EXTRAS.items()}
    if tensorflow.startswith("tensorflow-cpu"):
        # tf-keras (used by the tests to write Keras 2 files) requires the full
        # tensorflow distribution; the CPU tests install it with --no-deps.
        extras["test"] = [r for r in extras["test"] if not r.startswith("tf-keras")]

    return dict(
        name=name,
        version=read_version(),
        description="GaMorNet: a convolutional neural network to classify galaxy morphology",
        long_description=read_readme(),
        long_description_content_type="text/markdown",
        author="GaMorNet contributors",
        license="GPL-3.0-or-later",
        url="https://github.com/aritraghsh09/GaMorNet",
        packages=find_packages(include=["gamornet", "gamornet.*"]),
        python_requires=">=3.10",
        install_requires=[tensorflow, *COMMON_REQUIRES],
        extras_require=extras,
        entry_points={"console_scripts": ["gamornet = gamornet.cli:main"]},
        classifiers=[
            "Programming Language :: Python :: 3",
            "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
            "Topic :: Scientific/Engineering :: Astronomy",
            "Intended Audience :: Science/Research",
        ],
    )
