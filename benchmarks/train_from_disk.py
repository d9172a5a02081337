"""Peak memory of training from a memory-mapped stack on disk (default: 100,000 SDSS-size images).

Usage::

    python benchmarks/train_from_disk.py --n 100000 --steps 150 --dir /path/with/12GB/free

The stack is made by tiling a block of simulated galaxies (the pixels do not
matter for memory), then ``gamornet_train_keras`` trains on the ``.npy`` path
in a fresh process for ``--steps`` batches; the script prints that process's
peak resident memory (``VmHWM``) next to the stack's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import json, sys, time
import keras
import numpy as np
from gamornet.keras_module import gamornet_train_keras

path, labels_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Stop(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == 10:
            self.t0 = time.perf_counter()
        if batch + 1 >= steps:
            self.rate = (steps - 10) * 64 / (time.perf_counter() - self.t0)
            self.model.stop_training = True

labels = np.load(labels_path)
val = np.load(path, mmap_mode="r")[:64]
stop = Stop()
gamornet_train_keras(path, labels, np.array(val), labels[:64], "SDSS", files_save_path="/dev/null", epochs=1,
                     batch_size=64, verbose=0, callbacks=[stop])
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"images_per_s": stop.rate, "peak_kib": hwm}))
"""


def make_stack(directory: str, n: int, block: int = 1024) -> tuple[str, str]:
    """``images.npy`` (n, 167, 167, 1) float32 and ``labels.npy`` (n, 3), tiled from simulated galaxies."""
    from gamornet.simulate import simulate_galaxies

    path, labels_path = os.path.join(directory, "images.npy"), os.path.join(directory, "labels.npy")
    if os.path.exists(path) and np.load(path, mmap_mode="r").shape[0] == n:
        return path, labels_path
    os.makedirs(directory, exist_ok=True)
    images, catalog = simulate_galaxies(block, "SDSS", seed=1, progress=False)
    onehot = np.eye(3, dtype=np.float32)[np.asarray(catalog["class_index"])]
    stack = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(n, 167, 167, 1))
    for start in range(0, n, block):
        stop = min(start + block, n)
        stack[start:stop] = images[: stop - start]
        stack.flush()
    del stack
    os.replace(path + ".part", path)
    np.save(labels_path, np.tile(onehot, (n // block + 1, 1))[:n])
    return path, labels_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--dir", default="train_from_disk_data")
    args = parser.parse_args()
    t0 = time.time()
    path, labels_path = make_stack(args.dir, args.n)
    print(f"stack: {args.n} images, {os.path.getsize(path) / 2**30:.1f} GiB ({time.time() - t0:.0f} s to make)")
    out = subprocess.run([sys.executable, "-c", CHILD, path, labels_path, str(args.steps)], capture_output=True,
                         text=True, check=True)
    # VmHWM of the child's own address space: ru_maxrss of a child also counts the
    # parent's resident memory at the time of the fork.
    result = json.loads(out.stdout.strip().splitlines()[-1])
    peak, rate = result["peak_kib"] / 2**20, result["images_per_s"]
    print(f"training {args.steps} batches of 64 from disk: peak resident memory {peak:.2f} GiB, {rate:.1f} images/s")


if __name__ == "__main__":
    main()
