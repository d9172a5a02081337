"""Time and peak memory of a gallery page (:func:`gamornet.gallery.make_gallery`) of an N-row prediction table.

The table is a ``.parquet`` file written in record batches (ids
``stack.npy:i``, Dirichlet probabilities, a label column), the images one
sparse memory-mapped ``.npy`` stack of ``(N, size, size)`` float32 (only a
few images hold pixels; the rest takes no disk).  The page is made in a
fresh subprocess, whose peak resident memory is its ``VmHWM``
(``/proc/self/status``): it should hardly grow with N, since the table is
read in batches and a stack's images are never listed.

Usage::

    python -m benchmarks.gallery --rows 100000 1000000 10000000 [--size 16] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Rows written per record batch of the table.
WRITE_BATCH = 1_000_000
#: Rows per row group of the table: pyarrow's default, which astropy's ``Table.write`` uses.
ROW_GROUP = 1 << 20


def write_inputs(directory: str, rows: int, size: int = 16, seed: int = 0,
                 row_group: int = ROW_GROUP) -> tuple[str, str]:
    """A ``rows``-row ``.parquet`` prediction table and its sparse ``.npy`` stack in ``directory``; their paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    stack_path, table_path = os.path.join(directory, "stack.npy"), os.path.join(directory, "predictions.parquet")
    images = np.lib.format.open_memmap(stack_path, mode="w+", dtype=np.float32, shape=(rows, size, size))
    pattern = np.arange(size * size, dtype=np.float32).reshape(size, size)
    for index in range(0, rows, 997):  # a few images hold light; the rest of the file stays sparse
        images[index] = pattern
    images.flush()
    del images
    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.string()), ("p_disk", pa.float64()), ("p_indeterminate", pa.float64()),
                        ("p_bulge", pa.float64()), ("label", pa.string())])
    with pq.ParquetWriter(table_path, schema) as writer:
        for start in range(0, rows, WRITE_BATCH):
            n = min(WRITE_BATCH, rows - start)
            p = rng.dirichlet([0.6, 0.6, 0.6], n)
            label = np.where(p[:, 2] >= 0.7, "bulge", np.where(p[:, 0] >= 0.7, "disk", "indeterminate"))
            ids = np.char.add("stack.npy:", np.arange(start, start + n).astype(str))
            columns = [pa.array(ids, pa.string()), *(pa.array(p[:, i]) for i in range(3)), pa.array(label, pa.string())]
            writer.write_table(pa.table(columns, schema=schema), row_group_size=row_group)
    return table_path, stack_path


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(table: str, images: str, output: str) -> None:
    """In the measured process: import, make the page, print seconds and peak memory as JSON."""
    from gamornet.gallery import make_gallery

    base = _peak_rss_mb()
    start = time.perf_counter()
    make_gallery(table, images, output, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
                      "import_rss_mb": round(base, 1), "page_bytes": os.path.getsize(output)}))


def measure(table: str, images: str, output: str) -> dict:
    """Seconds, peak resident memory (MB) and page size of one page, made in a fresh subprocess."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gallery", "--child", table, images, output],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Write the inputs of each row count, measure a page of each, print a line per count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--dir", help="where to write the inputs (default: a temporary folder, removed)")
    parser.add_argument("--child", nargs=3, metavar=("TABLE", "IMAGES", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for rows in args.rows:
            folder = os.path.join(tmp, str(rows))
            start = time.perf_counter()
            table, images = write_inputs(folder, rows, args.size)
            written = time.perf_counter() - start
            result = measure(table, images, os.path.join(folder, "gallery.html"))
            print(f"rows {rows:>10d}  page {result['seconds']:8.2f} s  peak RSS {result['peak_rss_mb']:8.1f} MB "
                  f"(after imports {result['import_rss_mb']:.1f} MB)  page {result['page_bytes'] / 1e3:.1f} kB  "
                  f"(inputs written in {written:.1f} s)", flush=True)
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
