"""GaMorNet's benchmarks, run from a source checkout with ``python -m benchmarks`` (or ``gamornet bench``).

- :mod:`benchmarks.suite`: the one-run suite (:func:`~benchmarks.suite.main`);
  its modules :mod:`~benchmarks.config` (what is measured, targets),
  :mod:`~benchmarks.report` (figures, table), :mod:`~benchmarks.children`
  (fresh-process measurements), :mod:`~benchmarks.sections` (one survey's
  measurements) and :mod:`~benchmarks.torch_port` (the network in PyTorch);
- ``benchmarks/predict_memory.py`` measures file-prediction memory alone,
  ``benchmarks/train_from_disk.py`` training from a stack on disk.
"""
