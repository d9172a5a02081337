"""The cluster benchmark of the checkout (``python -m benchmarks.cluster``).

- ``test_quick_settings``: ``--quick`` gives every worker at least 4 chunk
  tasks, whatever ``--workers``.
- ``test_report``: the printed table holds the three figures (cluster / one
  process, the Dask overhead, cluster / workers x one-thread process) from a
  made-up result.
- ``test_quick_run`` (slow, about a minute on 2 cores, a ``LocalCluster`` of 2
  workers): ``python -m benchmarks.cluster --quick --json FILE`` in a
  subprocess; the JSON must hold every figure, finite, and the table must
  print them.  The table is written to the test log; nothing about speed is
  asserted.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.cluster import parse_args, report

from helpers import run_benchmark_quick

#: The figures of the JSON that the table prints.
FIGURES = ("one_process_img_s", "cluster_img_s", "ratio", "busy_fraction", "task_round_trip_ms",
           "idle_per_chunk_task_ms", "cluster_busy_img_s", "task_bytes_per_image", "one_thread_img_s",
           "one_thread_x_workers_img_s", "ratio_to_one_thread_x_workers", "one_process_cores", "one_thread_cores")


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_quick_settings(workers):
    args = parse_args(["--quick", "--workers", str(workers)])
    assert math.ceil(args.n / args.chunk_size) >= 4 * workers
    assert args.rounds >= 2 and args.memory_surveys == ["SDSS"]
    default = parse_args([])
    assert (default.n, default.chunk_size, default.workers) == (1536, 128, 2)


def _result(**figures) -> dict:
    result = {"cpu": "test CPU, 2 CPUs", "cpus": 2, "shape": "CANDELS", "images": 512, "batch_size": 64,
              "chunk_size": 64, "workers": 2, "rounds": 2, "chunk_tasks": 8, "load_average": [(0.5, 0.4, 0.3)] * 4,
              "worker_peak_rss_mb": {"SDSS": 1812.0}, "runs": {}}
    result.update({name: 1.0 + i / 100 for i, name in enumerate(FIGURES)}, **figures)
    return result


def test_report():
    text = report(_result(ratio=0.79, busy_fraction=0.95, ratio_to_one_thread_x_workers=0.93,
                          task_round_trip_ms=10.6, idle_per_chunk_task_ms=7.0))
    assert "(8 chunk tasks, 4 per worker)" in text
    for line in ("ratio cluster / one process", "busy fraction", "empty task round trip",
                 "idle worker time per chunk task", "ratio cluster / (2 x one-thread process)"):
        assert line in text, line
    assert " 0.79\n" in text and " 95 %\n" in text and " 0.93\n" in text
    assert "10.6 ms" in text and "7.0 ms" in text and "SDSS 1812 MB" in text


@pytest.mark.slow
def test_quick_run(tmp_path, capsys):
    figures, stdout = run_benchmark_quick("benchmarks.cluster", tmp_path / "figures.json", capsys)
    assert figures["chunk_tasks"] >= 4 * figures["workers"]
    for name in FIGURES:
        assert isinstance(figures[name], float) and math.isfinite(figures[name]) and figures[name] > 0, name
    assert 0 < figures["busy_fraction"] <= 1
    assert report(figures) in stdout
