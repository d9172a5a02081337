"""File prediction on a Dask cluster against one process, on this machine (``python -m benchmarks.cluster``).

Measures, on FITS cutouts of random pixels and a randomly initialised model
saved to ``.keras``:

- **throughput**: :func:`gamornet.predict_files` with ``client=`` a
  ``LocalCluster`` of ``--workers`` processes of one thread each, against one
  process whose TensorFlow uses its default pools (one thread per core), both
  warm (model loaded, functions traced) and writing an ECSV table with its
  chunks; in alternating rounds, so that both see the same machine load.
  Reported: the median images/s of each and their ratio (cluster / one
  process);
- **per-task overhead**: the round trip of an empty task (submit to
  result); the idle time per chunk task on the workers during the cluster
  runs, from Dask's task stream (from the first task's start to the last
  one's end, times the worker threads, minus the time spent in tasks, per
  task); and the size of a chunk task as sent to the scheduler (pickled);
- **worker memory**: the peak resident memory (``VmHWM``) of a worker
  process after predicting FITS cutouts with a randomly initialised model,
  for the SDSS (167 x 167, 58 M weights) and CANDELS (83 x 83, 30 M
  weights) shapes, each from a fresh one-worker cluster.

Usage::

    python -m benchmarks.cluster                     # CANDELS cutouts, 2 workers, 5 rounds
    python -m benchmarks.cluster --quick             # 256 cutouts, 2 rounds, SDSS worker memory only (~2 min)
    python -m benchmarks.cluster --shape SDSS --n 1024 --rounds 3 --json cluster.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.config import SURVEYS  # noqa: E402
from benchmarks.predict_memory import write_inputs  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (as ``lscpu`` shows it) and the number of CPUs."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def _worker_peak_rss_mb() -> float:
    from benchmarks.children import peak_rss_mb

    return peak_rss_mb()


def _noop(i: int) -> int:
    return i


def task_round_trip(client, repeats: int = 50) -> float:
    """Median seconds from submitting an empty task to having its result."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        client.submit(_noop, i, pure=False).result()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def task_bytes_per_image(inputs: str, shape: tuple) -> float:
    """Pickled size of a chunk task (file names, layout, positions) per image, as sent for every chunk."""
    from gamornet.predict.distributed import chunk_task
    from gamornet.predict.images import scan_images
    from gamornet.predict.inputs import list_images
    from gamornet.predict.passes import ChunkPlan

    good, _ = scan_images(list_images(inputs)[0], shape)
    plan = ChunkPlan(good, range(len(good)), [0], 1, len(good))
    return len(pickle.dumps(chunk_task(0, plan, {}))) / len(good)


def _cluster(n_workers: int):
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.CRITICAL)


def worker_memory(inputs: str, model: str, shape: tuple, batch_size: int, chunk_size: int) -> float:
    """Peak RSS (MB) of a fresh worker process that predicted ``inputs``."""
    from distributed import Client

    from gamornet.predict import predict_files

    with _cluster(1) as cluster, Client(cluster) as client:
        predict_files(inputs, model, input_shape=shape, batch_size=batch_size, chunk_size=chunk_size,
                      progress=False, client=client)
        return next(iter(client.run(_worker_peak_rss_mb).values()))


def measure(args) -> dict:
    """Run every measurement; returns the figures (and every timed run)."""
    from distributed import Client, get_task_stream

    from gamornet.keras_backend.model import build_keras_model
    from gamornet.predict import predict_files

    shape = SURVEYS[args.shape]
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gamornet-cluster-bench-") as tmp:
        model = os.path.join(tmp, "model.keras")
        build_keras_model(shape, seed=0).save(model)
        inputs = write_inputs(os.path.join(tmp, "cutouts"), args.n, shape, "fits")
        settings = {"input_shape": shape, "batch_size": args.batch_size, "chunk_size": args.chunk_size,
                    "progress": False, "overwrite": True}
        one_out, cluster_out = os.path.join(tmp, "one.ecsv"), os.path.join(tmp, "cluster.ecsv")
        runs: dict[str, list[float]] = {"one_process": [], "cluster": []}
        idle_per_task: list[float] = []
        busy_rates: list[float] = []
        payload = task_bytes_per_image(inputs, shape)
        with _cluster(args.workers) as cluster, Client(cluster) as client:
            predict_files(inputs, model, output=one_out, **settings)  # warm-up: load, trace
            predict_files(inputs, model, output=cluster_out, client=client, **settings)
            for _ in range(args.rounds):
                started = time.perf_counter()
                predict_files(inputs, model, output=one_out, **settings)
                runs["one_process"].append(args.n / (time.perf_counter() - started))
                with get_task_stream(client) as stream:
                    started = time.perf_counter()
                    predict_files(inputs, model, output=cluster_out, client=client, **settings)
                    wall = time.perf_counter() - started
                runs["cluster"].append(args.n / wall)
                chunk_tasks = [task for task in stream.data if str(task["key"]).startswith("gamornet-chunk-")]
                spans = [(s["start"], s["stop"]) for task in chunk_tasks for s in task["startstops"]
                         if s["action"] == "compute"]
                busy = sum(stop - start for start, stop in spans)
                active = max(stop for _, stop in spans) - min(start for start, _ in spans)
                idle_per_task.append((active * args.workers - busy) / len(spans))
                busy_rates.append(args.n * args.workers / busy)
                load.append(os.getloadavg())
            round_trip = task_round_trip(client)
        peaks = {}
        for survey in args.memory_surveys:
            survey_shape = SURVEYS[survey]
            survey_model = os.path.join(tmp, f"{survey}.keras")
            build_keras_model(survey_shape, seed=0).save(survey_model)
            survey_inputs = write_inputs(os.path.join(tmp, f"memory_{survey}"), args.memory_n, survey_shape, "fits")
            peaks[survey] = worker_memory(survey_inputs, survey_model, survey_shape, args.batch_size,
                                          args.chunk_size)
    one, many = statistics.median(runs["one_process"]), statistics.median(runs["cluster"])
    return {
        "cpu": cpu_model(), "shape": args.shape, "images": args.n, "batch_size": args.batch_size,
        "chunk_size": args.chunk_size, "workers": args.workers, "rounds": args.rounds,
        "one_process_img_s": one, "cluster_img_s": many, "ratio": many / one,
        "task_round_trip_ms": 1e3 * round_trip, "idle_per_chunk_task_ms": 1e3 * statistics.median(idle_per_task),
        "task_bytes_per_image": payload, "cluster_busy_img_s": statistics.median(busy_rates),
        "worker_peak_rss_mb": peaks, "load_average": load, "runs": runs,
    }


def report(result: dict) -> str:
    """The figures as the lines printed (and quoted on the performance page)."""
    loads = ", ".join(f"{a:.2f}" for a, _, _ in result["load_average"])
    return "\n".join([
        f"CPU: {result['cpu']}; 1-minute load average during the rounds: {loads}",
        f"{result['images']} {result['shape']} FITS cutouts, batch {result['batch_size']}, chunks of "
        f"{result['chunk_size']}, {result['rounds']} alternating rounds (medians):",
        f"  one process, TensorFlow's default threads   {result['one_process_img_s']:8.1f} images/s",
        f"  {result['workers']} Dask workers x 1 thread (LocalCluster) {result['cluster_img_s']:8.1f} images/s",
        f"  ratio cluster / one process                 {result['ratio']:8.2f}",
        f"  cluster, counting only time inside tasks    {result['cluster_busy_img_s']:8.1f} images/s",
        f"per-task overhead: empty task round trip {result['task_round_trip_ms']:.1f} ms; idle worker time per chunk "
        f"task {result['idle_per_chunk_task_ms']:.1f} ms; task size {result['task_bytes_per_image']:.0f} bytes per "
        f"image ({result['task_bytes_per_image'] * 4096 / 1024:.0f} KiB per chunk of 4096)",
        "peak RSS of a worker process predicting: " + ", ".join(
            f"{survey} {mb:.0f} MB" for survey, mb in result["worker_peak_rss_mb"].items()),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SURVEYS), default="CANDELS", help="cutout size (default: CANDELS)")
    parser.add_argument("--n", type=int, default=1536, help="cutouts per run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=128, help="images per chunk task (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--memory-n", type=int, default=256, help="cutouts per worker-memory run")
    parser.add_argument("--quick", action="store_true",
                        help="256 cutouts, 2 rounds, worker memory for the SDSS shape only on 64 cutouts")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    args.memory_surveys = sorted(SURVEYS)
    if args.quick:
        args.n, args.rounds, args.memory_n, args.memory_surveys = 256, 2, 64, ["SDSS"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = measure(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
