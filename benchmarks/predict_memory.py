"""Peak memory and speed of file prediction (:func:`gamornet.predict_files`) at N and 10N images.

Each run is a fresh subprocess (:func:`benchmarks.children.measure_prediction_memory`)
whose peak resident memory is its ``VmHWM``.  Peak memory should hardly grow
from N to 10N: images are read batch by batch and only the ids and the
table grow.  ``python -m benchmarks`` measures the same (FITS files, as
``memory_n_peak_rss_mb`` / ``memory_10n_peak_rss_mb``) among its other
figures; this script is the quick way to look at memory alone, for FITS
files or a ``.npy`` stack of random images.

Usage::

    python benchmarks/predict_memory.py --n 256 --shape CANDELS --kind fits
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.children import measure_prediction_memory  # noqa: E402
from benchmarks.config import SURVEYS  # noqa: E402


def write_inputs(directory: str, n: int, shape: tuple, kind: str) -> str:
    """``n`` random images as one FITS file each (``kind="fits"``) or one ``.npy`` stack; returns the input path."""
    import numpy as np
    from astropy.io import fits

    os.makedirs(directory)
    rng = np.random.default_rng(n)
    if kind == "npy":
        path = os.path.join(directory, "stack.npy")
        stack = np.lib.format.open_memmap(path, "w+", np.float32, (n, *shape))
        for start in range(0, n, 1024):
            stop = min(start + 1024, n)
            stack[start:stop] = rng.normal(10, 3, size=(stop - start, *shape))
        stack.flush()
        del stack
        return path
    for i in range(n):
        fits.writeto(os.path.join(directory, f"g{i:07d}.fits"), rng.normal(10, 3, size=shape[:2]).astype("f4"))
    return directory


def main(argv: list[str] | None = None) -> int:
    """Measure N and ``factor`` x N images; print peak memory and speed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="smaller run size N (default: %(default)s)")
    parser.add_argument("--factor", type=int, default=10, help="larger run is N * factor (default: %(default)s)")
    parser.add_argument("--shape", choices=sorted(SURVEYS), default="CANDELS")
    parser.add_argument("--kind", choices=("fits", "npy"), default="fits")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    shape = SURVEYS[args.shape]
    from gamornet.keras_backend.model import build_keras_model

    with tempfile.TemporaryDirectory(prefix="gamornet-bench-") as tmp:
        model = os.path.join(tmp, "model.keras")
        build_keras_model(shape, seed=0).save(model)
        rows = []
        for n in (args.n, args.n * args.factor):
            inputs = write_inputs(os.path.join(tmp, f"in{n}"), n, shape, args.kind)
            rows.append((n, measure_prediction_memory(inputs, model, shape, args.batch_size)))
    print(f"predict_files on {args.kind} inputs, {args.shape} {shape}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'images':>8} {'peak RSS MB':>12} {'img/s (load included)':>22}")
    for n, out in rows:
        print(f"{n:>8} {out['peak_rss_mb']:>12.0f} {out['images'] / out['seconds']:>22.1f}")
    growth = rows[1][1]["peak_rss_mb"] / rows[0][1]["peak_rss_mb"]
    print(f"peak RSS at {rows[1][0]} images / at {rows[0][0]}: {growth:.2f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
