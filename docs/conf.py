"""Sphinx configuration of the GaMorNet documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
The API pages come from the docstrings (autodoc + napoleon, numpy style), the
command-line reference from :func:`gamornet.cli.build_parser` and the
tutorials from the notebooks in ``tutorials/``, which the build executes (small
sizes by default, a few minutes; see ``docs/_ext/gamornet_docs.py``) so that
their pages show the figures.  The figure of the package's layers on the
architecture page is drawn from ``pyproject.toml`` at build time
(``docs/_ext/gamornet_layers.py``); ``GAMORNET_DOCS_EXECUTE=0`` skips the
notebooks for a quick build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gamornet  # noqa: E402

project = "GaMorNet"
author = "GaMorNet contributors"
copyright = "2020-2025, Aritra Ghosh and GaMorNet contributors"
release = gamornet.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "gamornet_docs",
    "gamornet_layers",
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
gamornet_repository_root = str(ROOT)

# autodoc / napoleon: numpy-style docstrings, members in source order, type
# hints in the signatures only (the docstrings spell out the types).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False

nitpicky = False
suppress_warnings: list[str] = []

html_theme = "furo"
html_title = f"GaMorNet {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "sphinx"
# Plain ``::`` blocks are not highlighted as Python: every Python example is a
# ``.. code-block:: python`` block, which tests/test_docs.py runs.
highlight_language = "text"
