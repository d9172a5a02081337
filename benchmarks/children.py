"""Measurements in fresh subprocesses (``python -m benchmarks --child KIND JSON``): imports, memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks.config import BATCH_SIZE

# --------------------------------------------------------------------------- subprocesses


def package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_root(), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_child(kind: str, payload: dict, timeout: float = 900) -> dict:
    """Run ``python -m benchmarks --child KIND JSON`` in a fresh process; its last stdout line is JSON."""
    cmd = [sys.executable, "-m", "benchmarks", "--child", kind, json.dumps(payload)]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_seconds(module: str) -> float:
    code = ("import time; _t = time.perf_counter(); import " + module +
            "; print(time.perf_counter() - _t)")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space (MB).

    ``VmHWM`` where ``/proc`` has it: a child's ``ru_maxrss`` also counts the
    memory of the parent it was started from.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux, bytes on macOS


def child_memory(payload: dict) -> dict:
    """Peak memory of ``predict_files`` on a directory of FITS files, in this fresh process."""
    from gamornet import predict_files

    start = time.perf_counter()
    table = predict_files(payload["inputs"], payload["model"], input_shape=tuple(payload["shape"]),
                          batch_size=payload["batch_size"], progress=False, output=payload["output"],
                          overwrite=True)
    return {"images": len(table), "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def measure_prediction_memory(inputs: str, model: str, input_shape, batch_size: int = BATCH_SIZE,
                              output: str | None = None) -> dict:
    """Peak resident memory of :func:`gamornet.predict_files`, run in a fresh subprocess.

    Parameters
    ----------
    inputs : str
        A directory of FITS files, a ``.npy`` stack, or anything else
        ``predict_files`` accepts as one path.
    model : str
        Model file (``.keras``, ``.h5``) or published model name.
    input_shape : str or tuple
        ``"SDSS"``, ``"CANDELS"`` or ``(height, width, channels)``.
    batch_size : int
        Images per forward pass.
    output : str, optional
        Table to write (default: a temporary ``.ecsv``, removed afterwards).

    Returns
    -------
    dict
        ``peak_rss_mb`` (``VmHWM`` of the subprocess), ``images``,
        ``seconds`` (the whole ``predict_files`` call, model load included).
    """
    from gamornet.core.validation import check_input_shape

    with tempfile.TemporaryDirectory(prefix="gamornet-memory-") as tmp:
        return run_child("memory", {"inputs": os.fspath(inputs), "model": os.fspath(model),
                                     "shape": list(check_input_shape(input_shape)), "batch_size": int(batch_size),
                                     "output": output or os.path.join(tmp, "table.ecsv")})
