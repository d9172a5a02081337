"""GaMorNet on each Keras backend: ``gamornet_predict_keras`` against the raw compiled forward pass, on CPU or GPU.

Wheels for a GPU machine that has PyTorch and JAX but no TensorFlow (Python 3.12, x86_64), gathered here::

    sh benchmarks/gpu_wheels.sh .whl          # 21 wheels, 26 MB; .whl/ is git-ignored

Install and run there (no internet needed; nothing touches the preinstalled torch / jax / numpy)::

    pip install --no-index --no-deps --target .site .whl/*.whl && \\
    PYTHONPATH=.site:. python benchmarks/gpu.py --device gpu --out gpu.json

On CPU (CI's quick form; ``--backends tensorflow,jax,torch`` adds TensorFlow where it is installed)::

    python benchmarks/gpu.py --device cpu --quick --out cpu.json

Each backend runs in a process of its own (``KERAS_BACKEND`` set before Keras
is imported; JAX with ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so its peak
memory is what it uses).  Per survey shape and dtype (``float32``, and
``bfloat16`` through Keras' ``mixed_bfloat16`` policy) it measures:

- predict images/s at each batch size: ``gamornet_predict_keras`` (numpy in,
  numpy out, as users call it) and the raw forward pass of the same model
  (TensorFlow: ``tf.function``; JAX: ``jax.jit`` of ``stateless_call``, the
  weights passed as arguments; PyTorch: the model under
  ``torch.inference_mode``), also fed numpy batches, rounds alternating, median;
- training images/s (``gamornet_train_keras``, the last of two epochs);
- peak device memory (PyTorch ``max_memory_allocated``, JAX
  ``peak_bytes_in_use``; the process's peak RSS on CPU);
- the largest difference of its float32 probabilities from a CPU reference
  (computed once, by PyTorch on CPU, from the same weights and images).

The network is GaMorNet with weights drawn from a fixed seed (no trained
model is needed, nothing is downloaded); the images are seeded random blobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SURVEYS = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1), "small": (32, 32, 1)}
#: Largest |probability difference| from the CPU reference accepted, per dtype and device.  On GPUs
#: float32 convolutions and matrix products may run in TF32 (10-bit mantissa), bfloat16 has an 8-bit one.
TOLERANCE = {("float32", "cpu"): 1e-5, ("float32", "gpu"): 5e-3, ("bfloat16", "cpu"): 5e-2,
             ("bfloat16", "gpu"): 5e-2}
CHECK_IMAGES = 64


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def blobs(n: int, shape: tuple, seed: int = 0) -> np.ndarray:
    """``n`` float32 images of elliptical Gaussian blobs on noise, from ``seed``."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    y, x = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        cx, cy = rng.uniform(0.4, 0.6, 2) * (w, h)
        sx, sy = rng.uniform(0.03, 0.15, 2) * (w, h)
        image = rng.uniform(1, 20) * np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
        out[i] = (image + rng.normal(0, 0.1, (h, w)))[..., None]
    return out


# --------------------------------------------------------------------------- inside one backend's process


def _device_tools(backend: str, device: str) -> dict:
    """Name of the device, a synchronisation function, and peak-memory readers of the backend."""
    import keras

    tools = {"sync": lambda: None, "reset": lambda: None, "peak_mb": None}
    if backend == "torch":
        import torch

        gpu = device == "gpu"
        if gpu and not torch.cuda.is_available():
            raise RuntimeError("--device gpu: PyTorch sees no CUDA device")
        tools["name"] = torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu"
        if gpu:
            tools["sync"] = torch.cuda.synchronize
            tools["reset"] = torch.cuda.reset_peak_memory_stats
            tools["peak_mb"] = lambda: torch.cuda.max_memory_allocated() / 2**20
        tools["versions"] = {"torch": torch.__version__}
    elif backend == "jax":
        import jax

        dev = jax.devices()[0]
        if device == "gpu" and dev.platform != "gpu":
            raise RuntimeError(f"--device gpu: JAX's first device is {dev}")
        tools["name"] = getattr(dev, "device_kind", str(dev))

        def peak():
            stats = dev.memory_stats()  # None on CPU
            return stats["peak_bytes_in_use"] / 2**20 if stats else None

        tools["peak_mb"] = peak
        tools["versions"] = {"jax": jax.__version__}
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise RuntimeError("--device gpu: TensorFlow sees no GPU")
        tools["name"] = "GPU:0" if device == "gpu" else platform.processor() or "cpu"
        if device == "gpu":
            tools["reset"] = lambda: tf.config.experimental.reset_memory_stats("GPU:0")
            tools["peak_mb"] = lambda: tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        tools["versions"] = {"tensorflow": tf.__version__}
    tools["versions"]["keras"] = keras.__version__
    return tools


def raw_forward(model, backend: str):
    """The framework's own compiled forward pass of ``model`` on a numpy batch, returning numpy."""
    if backend == "jax":
        import jax

        @jax.jit
        def run(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return lambda x: np.asarray(run(trainable, non_trainable, x))
    if backend == "torch":
        import torch

        device = model.weights[0].value.device

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x).to(device), training=False).float().cpu().numpy()

        return run
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda x: fn(x).numpy()


def _rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


def _child(args) -> dict:
    import keras

    from gamornet.keras_backend.model import clear_model_cache, load_keras_model
    from gamornet.keras_module import gamornet_predict_keras, gamornet_train_keras

    backend = keras.backend.backend()
    tools = _device_tools(backend, args.device)
    shape = SURVEYS[args.survey]
    out = {"backend": backend, "device": args.device, "device_name": tools["name"], "survey": args.survey,
           "dtype": args.dtype, "versions": tools["versions"], "predict": [], "python": platform.python_version()}
    path = os.path.join(args.work, f"{args.survey}_{args.dtype}.keras")
    images = blobs(max(args.batch_sizes) * args.batches, shape, seed=1)
    tools["reset"]()
    model = load_keras_model(path, shape)
    raw = raw_forward(model, backend)
    for batch in args.batch_sizes:
        n = batch * args.batches
        x = images[:n]

        def run_raw(x=x, batch=batch):
            for s in range(0, len(x), batch):
                raw(x[s : s + batch])

        def run_gamornet(x=x, batch=batch):
            gamornet_predict_keras(x, path, shape, batch_size=batch, progress=False)

        times: dict[str, list] = {"raw": [], "gamornet": []}
        start = time.perf_counter()
        run_raw(), run_gamornet()  # compile both
        tools["sync"]()
        compile_s = time.perf_counter() - start
        for _ in range(args.rounds):
            for name, fn in (("raw", run_raw), ("gamornet", run_gamornet)):
                t = time.perf_counter()
                fn()
                tools["sync"]()
                times[name].append(time.perf_counter() - t)
        raw_rate, gm_rate = _rate(n, times["raw"]), _rate(n, times["gamornet"])
        out["predict"].append({"batch": batch, "images": n, "raw_img_s": raw_rate, "gamornet_img_s": gm_rate,
                               "ratio": gm_rate / raw_rate, "warmup_s": compile_s})
        _log(f"  [{backend} {args.survey} {args.dtype}] batch {batch}: gamornet {gm_rate:.1f} img/s, "
             f"raw {raw_rate:.1f} img/s, ratio {gm_rate / raw_rate:.3f}")
    peak = tools["peak_mb"]() if tools["peak_mb"] else None
    out["predict_peak_mb"] = peak
    check = blobs(CHECK_IMAGES, shape, seed=2)
    probs = gamornet_predict_keras(check, path, shape, batch_size=min(args.batch_sizes), progress=False)
    reference = np.load(os.path.join(args.work, f"{args.survey}_reference.npy"))
    out["max_abs_diff_vs_cpu"] = float(np.abs(np.asarray(probs, np.float64) - reference).max())
    out["argmax_agree"] = float(np.mean(np.argmax(probs, 1) == np.argmax(reference, 1)))
    out["tolerance"] = TOLERANCE[(args.dtype, args.device)]
    out["agrees"] = out["max_abs_diff_vs_cpu"] <= out["tolerance"]
    clear_model_cache()
    if args.train_images:
        n = args.train_images
        x, y = images[:n], np.eye(3, dtype=np.float32)[np.arange(n) % 3]
        ends: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                ends.append(time.perf_counter())

            def on_epoch_end(self, epoch, logs=None):
                tools["sync"]()
                ends[-1] = time.perf_counter() - ends[-1]

        tools["reset"]()
        del model
        gamornet_train_keras(x, y, None, None, shape, files_save_path=os.path.join(args.work, "train"), epochs=2,
                             batch_size=args.train_batch, verbose=0, save_model=False, seed=0, callbacks=[Clock()],
                             mixed_precision=None if args.dtype == "float32" else args.dtype)
        out["train_img_s"] = n / ends[-1]
        out["train_peak_mb"] = tools["peak_mb"]() if tools["peak_mb"] else None
        _log(f"  [{backend} {args.survey} {args.dtype}] training: {out['train_img_s']:.1f} img/s")
    out["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    return out


def _prepare(args) -> None:
    """Save each survey's model (float32 and bfloat16, same weights) and the CPU reference probabilities."""
    import keras

    from gamornet.keras_backend.model import build_keras_model
    from gamornet.keras_module import gamornet_predict_keras

    for survey in args.surveys:
        shape = SURVEYS[survey]
        model = build_keras_model(shape, seed=0)
        path = os.path.join(args.work, f"{survey}_float32.keras")
        model.save(path)
        if "bfloat16" in args.dtypes:
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy("mixed_bfloat16")
            try:
                half = build_keras_model(shape, seed=0)
            finally:
                keras.config.set_dtype_policy(previous)
            half.set_weights(model.get_weights())
            half.save(os.path.join(args.work, f"{survey}_bfloat16.keras"))
        probs = gamornet_predict_keras(blobs(CHECK_IMAGES, shape, seed=2), path, shape, progress=False)
        np.save(os.path.join(args.work, f"{survey}_reference.npy"), np.asarray(probs, np.float64))


# --------------------------------------------------------------------------- the parent process


def _environment(backend: str, device: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, XLA_PYTHON_CLIENT_PREALLOCATE="false",
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), repo) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _spawn(args, extra: list[str], backend: str, device: str) -> subprocess.CompletedProcess:
    command = [sys.executable, os.path.abspath(__file__), *extra, "--work", args.work]
    return subprocess.run(command, env=_environment(backend, device), stdout=subprocess.PIPE, text=True,
                          timeout=args.timeout)


def table(results: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = (f"{'backend':8} {'survey':8} {'dtype':8} {'batch':>5} {'gamornet':>9} {'raw':>9} {'ratio':>6} "
            f"{'train':>8} {'peak MB':>8} {'|dp| cpu':>9} ok")
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['backend']:8} {r['survey']:8} {r['dtype']:8} FAILED: {r['error']}")
            continue
        peaks = [p for p in (r.get("predict_peak_mb"), r.get("train_peak_mb")) if p is not None]
        peak = f"{max(peaks):8.0f}" if peaks else f"{'-':>8}"
        for i, p in enumerate(r["predict"]):
            train = f"{r['train_img_s']:8.1f}" if i == 0 and "train_img_s" in r else f"{'':8}"
            extra = (f"{peak} {r['max_abs_diff_vs_cpu']:9.1e} {'yes' if r['agrees'] else 'NO'}" if i == 0
                     else "")
            lines.append(f"{r['backend']:8} {r['survey']:8} {r['dtype']:8} {p['batch']:5d} "
                         f"{p['gamornet_img_s']:9.1f} {p['raw_img_s']:9.1f} {p['ratio']:6.3f} {train} {extra}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--quick", action="store_true", help="32x32 images, float32, few batches (a smoke test)")
    parser.add_argument("--backends", default="jax,torch", help="comma-separated Keras backends")
    parser.add_argument("--surveys", default=None, help="comma-separated: SDSS, CANDELS, small")
    parser.add_argument("--dtypes", default=None, help="comma-separated: float32, bfloat16")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes")
    parser.add_argument("--batches", type=int, default=None, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per method")
    parser.add_argument("--train-images", type=int, default=None, help="images per training epoch (0: no training)")
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per backend process")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--child", choices=("prepare", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--survey", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu, quick = args.device == "gpu", args.quick
    defaults = dict(surveys="small" if quick else ("SDSS,CANDELS" if gpu else "CANDELS"),
                    dtypes="float32,bfloat16" if gpu else "float32",
                    batch_sizes="8" if quick else ("64,512" if gpu else "64"),
                    batches=2 if quick else (8 if gpu else 4), rounds=2 if quick else 5,
                    train_images=16 if quick else (2048 if gpu else 256), train_batch=8 if quick else 64)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("surveys", "dtypes", "backends"):
        setattr(args, key, [s.strip() for s in getattr(args, key).split(",") if s.strip()])
    args.batch_sizes = [int(s) for s in str(args.batch_sizes).split(",")]
    if args.child == "measure":
        result = _child(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.child == "prepare":
        _prepare(args)
        return 0
    bad = [s for s in args.surveys if s not in SURVEYS] + [d for d in args.dtypes if d not in ("float32", "bfloat16")]
    bad += [b for b in args.backends if b not in ("tensorflow", "jax", "torch")]
    if bad:
        parser.error(f"unknown survey, dtype or backend: {bad}")
    common = ["--surveys", ",".join(args.surveys), "--dtypes", ",".join(args.dtypes)]
    results = []
    with tempfile.TemporaryDirectory(prefix="gamornet-backends-") as work:
        args.work = work
        started = time.perf_counter()
        _log(f"preparing models and CPU reference probabilities in {work}")
        done = _spawn(args, ["--child", "prepare", *common], "torch" if "torch" in args.backends else
                      args.backends[0], "cpu")
        if done.returncode:
            _log("preparation failed")
            return 1
        for backend in args.backends:
            for survey in args.surveys:
                for dtype in args.dtypes:
                    extra = ["--child", "measure", "--device", args.device, "--survey", survey, "--dtype", dtype,
                             "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--batches", str(args.batches),
                             "--rounds", str(args.rounds), "--train-images", str(args.train_images),
                             "--train-batch", str(args.train_batch)]
                    _log(f"{backend} {survey} {dtype} on {args.device}")
                    try:
                        done = _spawn(args, extra, backend, args.device)
                        lines = [s for s in done.stdout.splitlines() if s.startswith("RESULT ")]
                        if lines:
                            results.append(json.loads(lines[-1][len("RESULT "):]))
                            continue
                        error = f"exit status {done.returncode}"
                    except subprocess.TimeoutExpired:
                        error = f"timed out after {args.timeout} s"
                    results.append({"backend": backend, "survey": survey, "dtype": dtype, "error": error})
        total = time.perf_counter() - started
    print(table(results))
    names = sorted({r.get("device_name", "?") for r in results if "error" not in r})
    print(f"device: {args.device} ({', '.join(names)}); {total:.0f} s in all")
    if args.out:
        with open(args.out, "w", encoding="utf8") as f:
            json.dump({"device": args.device, "quick": quick, "seconds": total, "results": results}, f, indent=1)
    failed = [r for r in results if "error" in r or not r["agrees"] or
              (r["backend"] != "tensorflow" and r["tensorflow_imported"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
