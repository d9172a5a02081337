"""Distribution ``gamornet``: GaMorNet with TensorFlow (GPU support where available)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from setuptools import setup  # noqa: E402

from setup_common import setup_kwargs  # noqa: E402

setup(**setup_kwargs("gamornet", "tensorflow>=2.16,<2.22"))
