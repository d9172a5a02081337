"""Peak memory and throughput of file prediction (:func:`gamornet.predict_files`) at N and 10N images.

Each measurement runs in a fresh subprocess, whose peak resident memory is
read with ``resource.getrusage(RUSAGE_SELF).ru_maxrss``:

- ``forward``: the model alone, the compiled forward pass on an in-memory
  array (peak memory of the model alone);
- ``files``: ``predict_files`` on N and 10N images stored as FITS files (one
  per image) or one ``.npy`` stack, writing an ECSV table; then, in the same
  process, the forward pass alone on as many in-memory images (the rate the
  file pipeline should approach, measured under the same machine load).

Peak memory should hardly grow from N to 10N (images are read batch by
batch; only the ids and the table grow), and the file rate should stay close
to the forward rate (reading overlaps with the model).  Timings exclude the
model load and compilation (a warm-up batch runs first).

Usage::

    python benchmarks/predict_memory.py --n 256 --shape CANDELS --kind fits
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _child_forward(model: str, shape: tuple, n: int, batch_size: int) -> dict:
    import numpy as np

    from gamornet.keras_model import load_keras_model
    from gamornet.keras_module import _forward_function

    forward = _forward_function(load_keras_model(model, shape))
    images = np.random.default_rng(0).normal(10, 3, size=(batch_size, *shape)).astype(np.float32)
    forward(images)  # compile
    batches = max(1, n // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        forward(images)
    seconds = time.perf_counter() - start
    return {"images": batches * batch_size, "seconds": seconds}


def _child_files(model: str, shape: tuple, inputs: str, batch_size: int) -> dict:
    import numpy as np

    from gamornet.batch_predict import predict_files

    with tempfile.TemporaryDirectory() as tmp:
        warm = np.zeros((batch_size, *shape), np.float32)
        predict_files(warm, model, input_shape=shape, batch_size=batch_size, progress=False)  # load and compile
        start = time.perf_counter()
        table = predict_files(inputs, model, input_shape=shape, batch_size=batch_size, progress=False,
                              output=os.path.join(tmp, "out.ecsv"))
        seconds = time.perf_counter() - start
    rss = _peak_rss_mb()
    forward = _child_forward(model, shape, len(table), batch_size)  # same process, right after: same machine load
    return {"images": len(table), "seconds": seconds, "peak_rss_mb": rss,
            "forward_rate": forward["images"] / forward["seconds"]}


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_inputs(directory: str, n: int, shape: tuple, kind: str) -> str:
    import numpy as np
    from astropy.io import fits

    os.makedirs(directory)
    rng = np.random.default_rng(n)
    if kind == "npy":
        stack = np.lib.format.open_memmap(os.path.join(directory, "stack.npy"), "w+", np.float32, (n, *shape))
        for start in range(0, n, 1024):
            stop = min(start + 1024, n)
            stack[start:stop] = rng.normal(10, 3, size=(stop - start, *shape))
        stack.flush()
        del stack
    else:
        for i in range(n):
            fits.writeto(os.path.join(directory, f"g{i:07d}.fits"), rng.normal(10, 3, size=shape[:2]).astype("f4"))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="smaller run size N (default: %(default)s)")
    parser.add_argument("--factor", type=int, default=10, help="larger run is N * factor (default: %(default)s)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="CANDELS")
    parser.add_argument("--kind", choices=("fits", "npy"), default="fits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    if args.child:
        mode, model, target = args.child
        result = (_child_forward(model, shape, int(target), args.batch_size) if mode == "forward"
                  else _child_files(model, shape, target, args.batch_size))
        result.setdefault("peak_rss_mb", _peak_rss_mb())
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="gamornet-bench-") as tmp:
        model = os.path.join(tmp, "model.keras")
        setup = ("from gamornet.keras_model import build_keras_model; "
                 f"build_keras_model({shape!r}, seed=0).save({model!r})")
        subprocess.run([sys.executable, "-c", setup], check=True, env=dict(os.environ, PYTHONPATH=REPO,
                                                                            TF_CPP_MIN_LOG_LEVEL="3"))
        sizes = (args.n, args.n * args.factor)
        rows = []
        for n in sizes:
            forward = _run_child(["forward", model, str(n)] + ["--shape", args.shape, "--batch-size",
                                                              str(args.batch_size)])
            inputs = _write_inputs(os.path.join(tmp, f"in{n}"), n, shape, args.kind)
            files = _run_child(["files", model, inputs] + ["--shape", args.shape, "--batch-size",
                                                          str(args.batch_size)])
            rows.append((n, forward, files))

    print(f"predict_files on {args.kind} inputs, {args.shape} {shape}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")
    print("(img/s: the forward rate is measured in the files process right after predict_files, so both see the "
          "same machine load)")
    print(f"{'images':>8} | {'peak RSS MB: model only':>23} {'files':>8} | "
          f"{'img/s: forward':>14} {'files':>8} {'ratio':>6}")
    for n, forward, files in rows:
        f_rate = files["forward_rate"]
        p_rate = files["images"] / files["seconds"]
        print(f"{n:>8} | {forward['peak_rss_mb']:>23.0f} {files['peak_rss_mb']:>8.0f} | "
              f"{f_rate:>14.1f} {p_rate:>8.1f} {p_rate / f_rate:>6.2f}")
    growth = rows[1][2]["peak_rss_mb"] - rows[0][2]["peak_rss_mb"]
    print(f"peak RSS growth from {sizes[0]} to {sizes[1]} images: {growth:+.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
