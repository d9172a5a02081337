"""File prediction on a Dask cluster against one process, on this machine (``python -m benchmarks.cluster``).

Measures, on FITS cutouts of random pixels and a randomly initialised model
saved to ``.keras``, with :func:`gamornet.predict_files` warm (model loaded,
functions traced) and writing an ECSV table with its chunks, three ways in
alternating rounds, so that all see the same machine load:

- **cluster**: ``client=`` a ``LocalCluster`` of ``--workers`` processes of
  one thread each (what ``gamornet predict --workers N`` starts);
- **one process**: no client, TensorFlow with its default pools (one thread
  per core), i.e. the same total threads as the cluster on a machine with
  as many cores as workers;
- **one-thread process**: no client, in a separate process whose TensorFlow
  pools have one thread each, like a worker's (same ``read_threads``).

Reported (medians over the rounds):

- (a) **cluster / one process**: what a user gets from the cluster against
  one process on the same machine;
- (b) **Dask overhead**: the fraction of the workers' time (workers x the
  run's wall time) spent inside chunk tasks, from Dask's task stream; the
  round trip of an empty task (submit to result); the idle worker time per
  chunk task (from the first task's start to the last one's end, times the
  worker threads, minus the time in tasks, per task); and the size of a chunk
  task as sent to the scheduler (pickled);
- (c) **cluster / (workers x one-thread process)**: the cluster against as
  many one-thread processes' worth of work, assuming they would scale
  perfectly; what separates the cost of Dask from that of one-thread
  against many-thread TensorFlow;
- **worker memory**: the peak resident memory (``VmHWM``) of a worker
  process after predicting FITS cutouts with a randomly initialised model,
  for the SDSS (167 x 167, 58 M weights) and CANDELS (83 x 83, 30 M
  weights) shapes, each from a fresh one-worker cluster.

Usage::

    python -m benchmarks.cluster              # 1,536 CANDELS cutouts in chunks of 128, 2 workers, 5 rounds
    python -m benchmarks.cluster --quick      # 4 chunks of 64 per worker, 2 rounds, SDSS worker memory (~2 min)
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


def _one_thread_tensorflow() -> None:
    """Process initialiser: one CPU (where the system allows), TensorFlow's pools of one thread (as a worker's)."""
    import tensorflow as tf

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _timed_predict(inputs: str, model: str, output: str, settings: dict) -> tuple[float, float]:
    """Wall and CPU seconds (of this process) :func:`gamornet.predict_files` takes on ``inputs``."""
    from gamornet.predict import predict_files

    started, cpu = time.perf_counter(), time.process_time()
    predict_files(inputs, model, output=output, **settings)
    return time.perf_counter() - started, time.process_time() - cpu


def _task_stream_figures(stream_data: list, workers: int, wall: float) -> tuple[float, float, int]:
    """Busy fraction (time in chunk tasks / workers x wall), idle seconds per chunk task, chunk tasks."""
    spans = [(s["start"], s["stop"]) for task in stream_data if str(task["key"]).startswith("gamornet-chunk-")
             for s in task["startstops"] if s["action"] == "compute"]
    busy = sum(stop - start for start, stop in spans)
    active = max(stop for _, stop in spans) - min(start for start, _ in spans)
    return busy / (workers * wall), (active * workers - busy) / len(spans), len(spans)


def _rounds(args, client, one_thread, inputs: str, model: str, tmp: str, load: list) -> dict:
    """Warm-up, then ``args.rounds`` alternating rounds of the three ways; images/s and task-stream figures."""
    from distributed import get_task_stream

    settings = {"input_shape": SURVEYS[args.shape], "batch_size": args.batch_size, "chunk_size": args.chunk_size,
                "progress": False, "overwrite": True}
    outputs = {way: os.path.join(tmp, f"{way}.ecsv") for way in ("one_process", "one_thread", "cluster")}
    runs: dict[str, list[float]] = {way: [] for way in outputs}
    cores: dict[str, list[float]] = {"one_process": [], "one_thread": []}
    stream: dict[str, list[float]] = {"busy_fraction": [], "idle_per_task": [], "busy_img_s": [], "tasks": []}

    def cluster_run() -> float:
        with get_task_stream(client) as tasks:
            wall, _ = _timed_predict(inputs, model, outputs["cluster"], {**settings, "client": client})
        busy, idle, n_tasks = _task_stream_figures(tasks.data, args.workers, wall)
        stream["busy_fraction"].append(busy)
        stream["idle_per_task"].append(idle)
        stream["busy_img_s"].append(args.n / (busy * wall))
        stream["tasks"].append(n_tasks)
        return wall

    _timed_predict(inputs, model, outputs["one_process"], settings)  # warm-up: load, trace
    one_thread.submit(_timed_predict, inputs, model, outputs["one_thread"], settings).result()
    _timed_predict(inputs, model, outputs["cluster"], {**settings, "client": client})
    for _ in range(args.rounds):
        for way, timed in (("one_process", _timed_predict(inputs, model, outputs["one_process"], settings)),
                           ("one_thread", one_thread.submit(_timed_predict, inputs, model, outputs["one_thread"],
                                                            settings).result())):
            runs[way].append(args.n / timed[0])
            cores[way].append(timed[1] / timed[0])
        runs["cluster"].append(args.n / cluster_run())
        load.append(os.getloadavg())
    return {"runs": runs, "stream": stream, "cores": cores}


def measure(args) -> dict:
    """Run every measurement; returns the figures (and every timed run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from distributed import Client

    from gamornet.keras_backend.model import build_keras_model

    shape = SURVEYS[args.shape]
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gamornet-cluster-bench-") as tmp:
        model = os.path.join(tmp, "model.keras")
        build_keras_model(shape, seed=0).save(model)
        inputs = write_inputs(os.path.join(tmp, "cutouts"), args.n, shape, "fits")
        payload = task_bytes_per_image(inputs, shape)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread_tensorflow) as one_thread, \
                _cluster(args.workers) as cluster, Client(cluster) as client:
            measured = _rounds(args, client, one_thread, inputs, model, tmp, load)
            round_trip = task_round_trip(client)
        peaks = {}
        for survey in args.memory_surveys:
            survey_shape = SURVEYS[survey]
            survey_model = os.path.join(tmp, f"{survey}.keras")
            build_keras_model(survey_shape, seed=0).save(survey_model)
            survey_inputs = write_inputs(os.path.join(tmp, f"memory_{survey}"), args.memory_n, survey_shape, "fits")
            peaks[survey] = worker_memory(survey_inputs, survey_model, survey_shape, args.batch_size,
                                          args.chunk_size)
    load.append(os.getloadavg())
    runs, stream = measured["runs"], measured["stream"]
    one, single, many = (statistics.median(runs[way]) for way in ("one_process", "one_thread", "cluster"))
    return {
        "cpu": cpu_model(), "cpus": os.cpu_count(), "shape": args.shape, "images": args.n,
        "batch_size": args.batch_size, "chunk_size": args.chunk_size, "workers": args.workers, "rounds": args.rounds,
        "chunk_tasks": max(stream["tasks"]), "one_process_img_s": one, "cluster_img_s": many, "ratio": many / one,
        "one_thread_img_s": single, "one_thread_x_workers_img_s": single * args.workers,
        "ratio_to_one_thread_x_workers": many / (single * args.workers),
        "busy_fraction": statistics.median(stream["busy_fraction"]),
        "one_process_cores": statistics.median(measured["cores"]["one_process"]),
        "one_thread_cores": statistics.median(measured["cores"]["one_thread"]),
        "task_round_trip_ms": 1e3 * round_trip,
        "idle_per_chunk_task_ms": 1e3 * statistics.median(stream["idle_per_task"]),
        "task_bytes_per_image": payload, "cluster_busy_img_s": statistics.median(stream["busy_img_s"]),
        "worker_peak_rss_mb": peaks, "load_average": load, "runs": runs,
    }


def report(result: dict) -> str:
    """The figures as the lines printed (and quoted on the performance page)."""
    loads = ", ".join(f"{a:.2f}" for a, _, _ in result["load_average"])
    workers, tasks = result["workers"], result["chunk_tasks"]
    rows = [
        ("(a) what a user gets", None),
        (f"one process, TensorFlow's default threads ({result['cpus']}, one per core)",
         f"{result['one_process_img_s']:.1f} images/s"),
        (f"{workers} Dask workers x 1 thread (LocalCluster)", f"{result['cluster_img_s']:.1f} images/s"),
        ("ratio cluster / one process", f"{result['ratio']:.2f}"),
        ("(b) what Dask costs", None),
        ("worker time inside chunk tasks (busy fraction)", f"{100 * result['busy_fraction']:.0f} %"),
        ("empty task round trip (submit to result)", f"{result['task_round_trip_ms']:.1f} ms"),
        ("idle worker time per chunk task", f"{result['idle_per_chunk_task_ms']:.1f} ms"),
        ("cluster, counting only time inside tasks", f"{result['cluster_busy_img_s']:.1f} images/s"),
        ("task size", f"{result['task_bytes_per_image']:.0f} bytes per image"),
        ("(c) Dask against one-thread TensorFlow", None),
        ("one process on 1 CPU, TensorFlow pools of 1 thread", f"{result['one_thread_img_s']:.1f} images/s"),
        (f"  x {workers} (as many one-thread processes, ideal)",
         f"{result['one_thread_x_workers_img_s']:.1f} images/s"),
        (f"ratio cluster / ({workers} x one-thread process)", f"{result['ratio_to_one_thread_x_workers']:.2f}"),
        ("CPUs used (CPU time / wall): one process; one-thread",
         f"{result['one_process_cores']:.2f}; {result['one_thread_cores']:.2f}"),
    ]
    width = max(len(label) for label, value in rows if value is not None)
    lines = [
        f"CPU: {result['cpu']}; 1-minute load average before, after each round and at the end: {loads}",
        f"{result['images']} {result['shape']} FITS cutouts, batch {result['batch_size']}, chunks of "
        f"{result['chunk_size']} ({tasks} chunk tasks, {tasks / workers:.0f} per worker), {result['rounds']} "
        "alternating rounds (medians):",
    ]
    lines += [label if value is None else f"  {label:<{width}}  {value:>16}" for label, value in rows]
    lines.append("peak RSS of a worker process predicting: " + ", ".join(
        f"{survey} {mb:.0f} MB" for survey, mb in result["worker_peak_rss_mb"].items()))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``--quick`` applied."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SURVEYS), default="CANDELS", help="cutout size (default: CANDELS)")
    parser.add_argument("--n", type=int, default=1536, help="cutouts per run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=128, help="images per chunk task (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--memory-n", type=int, default=256, help="cutouts per worker-memory run")
    parser.add_argument("--quick", action="store_true",
                        help="chunks of 64, 4 per worker, 2 rounds, worker memory for the SDSS shape only on 64 "
                             "cutouts")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    args.memory_surveys = sorted(SURVEYS)
    if args.quick:
        args.chunk_size, args.rounds, args.memory_n, args.memory_surveys = 64, 2, 64, ["SDSS"]
        args.n = 4 * args.workers * args.chunk_size  # every worker gets at least 4 chunk tasks
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = measure(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
