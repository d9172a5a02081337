"""Distribution ``gamornet-cpu``: GaMorNet with the CPU-only TensorFlow build.

Build it with ``python setup-cpu.py bdist_wheel`` and install the wheel from ``dist/``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from setuptools import setup  # noqa: E402

from setup_common import setup_kwargs  # noqa: E402

setup(**setup_kwargs("gamornet-cpu", "tensorflow-cpu>=2.16,<2.22"))
