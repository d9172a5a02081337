"""Inference engines side by side: speed, agreement and label changes of every engine and precision installed.

Run from a checkout::

    python -m benchmarks.engines             # CANDELS and SDSS
    python -m benchmarks.engines --quick     # CANDELS, fewer images and rounds
    python -m benchmarks.engines --variants  # also other OpenVINO settings (threads, hints, call styles)

For each survey shape, one randomly initialised GaMorNet (seed 0, Keras
LRN) predicts simulated galaxies of that survey (:mod:`gamornet.simulate`)
on every engine installed, in one process:

- ``tf float32``: today's Keras path on TensorFlow (the compiled
  ``tf.function`` of :func:`gamornet.keras_backend.forward.load_forward`),
  the reference of every ratio;
- ``keras bfloat16``: the model built under ``mixed_bfloat16``;
- ``openvino float32`` / ``openvino bfloat16``: :func:`gamornet.engines.load_forward`
  (converted once, compiled with ``INFERENCE_PRECISION_HINT``); the
  precision column gives what the compiled model really uses;
- peers: ``torch float32`` (the same network in PyTorch with the same
  weights, :mod:`benchmarks.torch_port`, channels-last, inference mode),
  ``torch bfloat16`` (``torch.autocast`` on the CPU) and ``onnxruntime
  float32`` (that PyTorch model exported to ONNX; needs ``onnx``, else
  skipped).

Every engine runs the same images in batches of 64, in rounds whose order
alternates (forward, then backward), so every engine sees the same load; a
figure is the median over rounds of images per second (wall clock), with
images per CPU-second of this process beside it.  Where the CPU has no
native bfloat16, bfloat16 engines are emulated and much slower: they are
timed on one batch per round only.  Agreement is measured against ``tf
float32`` on the images: the largest probability difference, and the
fraction of galaxies whose label changes (argmax, and the published Keras
policy of the survey).  Then start-up: a fresh process running
``predict_files`` on one batch, on the Keras engine and on the OpenVINO
engine with the conversion already stored (and whether TensorFlow was
imported).

Ratios: ``/tf`` to ``tf float32``, ``/peer`` to the fastest peer
(PyTorch, ONNX Runtime).  Nothing is asserted; ``--json FILE`` keeps every
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BATCH = 64
SURVEYS = {"CANDELS": (83, 83, 1), "SDSS": (167, 167, 1)}
POLICIES = {"CANDELS": "keras_candels", "SDSS": "keras_sdss"}
#: Images and rounds per mode: survey -> (simulated images, images per timed round), rounds.
MODES = {
    "full": ({"CANDELS": (256, 512), "SDSS": (192, 256)}, 5),
    "quick": ({"CANDELS": (128, 192), "SDSS": (64, 128)}, 3),
    "tiny": ({"CANDELS": (16, 64), "SDSS": (16, 64)}, 1),
}
PEERS = ("torch", "onnxruntime")
#: Other OpenVINO settings timed with ``--variants``: (PERFORMANCE_HINT, other properties, label).
VARIANTS = (
    ("LATENCY", {"ENABLE_CPU_PINNING": True, "TBB_PARTITIONER": "STATIC"}, "LATENCY, pinned, static (OpenVINO's)"),
    ("LATENCY", {"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "STATIC"}, "LATENCY, not pinned, static"),
    ("LATENCY", {"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "AUTO"}, "LATENCY, not pinned, auto partitioner"),
    ("THROUGHPUT", {"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "AUTO"},
     "THROUGHPUT, not pinned, auto partitioner"),
    ("LATENCY", {"INFERENCE_NUM_THREADS": 1}, "LATENCY, 1 thread"),
)


@dataclass
class Engine:
    """One engine measured: ``run(batch) -> probabilities``."""

    name: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray] | None
    peer: bool = False
    emulated: bool = False
    note: str = ""
    error: str | None = None
    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)
    images: list = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dist_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU model and flags (as ``lscpu`` would give them), cores, load average, versions."""
    from gamornet import __version__
    from gamornet.core.hardware import CPU_FLAGS, cpu_flags, cpu_model, native_bfloat16

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "native_bfloat16": native_bfloat16(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "versions": {name: dist_version(name) for name in ("tensorflow-cpu", "tensorflow", "keras", "openvino",
                                                              "torch", "onnxruntime", "onnx", "numpy")}
                    | {"gamornet": __version__},
    }


# --------------------------------------------------------------------------- engines


def batched(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def run(images: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(forward(images[i:i + BATCH]), np.float32)
                               for i in range(0, len(images), BATCH)])

    return run


def keras_engines(path: str, shape: tuple, bfloat16: bool = True) -> list[Engine]:
    from gamornet import engines

    out = []
    for precision in ("float32", "bfloat16") if bfloat16 else ("float32",):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forward = engines.load_forward(path, shape, engines.choose_engine("keras", precision, warn=False))
        name = "tf" if precision == "float32" else "keras"
        out.append(Engine(name, precision, batched(forward), emulated=precision == "bfloat16" and not _native(),
                          note="tf.function" if precision == "float32" else "mixed_bfloat16 policy"))
    return out


def _native() -> bool:
    from gamornet.core.hardware import native_bfloat16

    return native_bfloat16()


def openvino_engines(path: str, shape: tuple, variants: bool) -> list[Engine]:
    from gamornet import engines

    if not engines.openvino_available():
        return [Engine("openvino", p, None, error="skipped: openvino is not installed") for p in ("float32",
                                                                                                 "bfloat16")]
    from gamornet.openvino_backend import runtime

    out: list[Engine] = []
    for precision in ("float32", "bfloat16"):
        if precision == "bfloat16" and not runtime.native_bfloat16():
            out.append(Engine("openvino", precision, None, error="skipped: this CPU has no native bfloat16, so "
                              "OpenVINO computes a bfloat16 request in float32 (the row above)"))
            continue
        choice = engines.choose_engine("openvino", precision, warn=False)
        forward = engines.load_forward(path, shape, choice, progress=False, reuse=False)
        out.append(Engine("openvino", forward.precision, batched(forward),
                          note=f"asked {precision}; {runtime.PERFORMANCE_HINT}, {forward.streams} streams, "
                          f"{forward.threads} threads"))
    if variants:  # each on its own compiled model: one call style per compiled model
        xml = engines.converted_model(path, shape, progress=False)
        core = runtime.core()

        def compiled(hint, **extra):
            return core.compile_model(core.read_model(str(xml)), "CPU", {**runtime.compile_options("float32", hint),
                                                                          **extra})

        for hint, extra, label in VARIANTS:
            forward = runtime.OpenVINOForward(compiled(hint, **extra), "float32")
            out.append(Engine("openvino", "float32", batched(forward), note=f"variant: {label}"))
    return out


def peer_engines(model, shape: tuple, workdir: str) -> list[Engine]:
    """PyTorch (float32, bfloat16 autocast) and ONNX Runtime (the PyTorch model exported), with the Keras weights."""
    from gamornet.keras_backend.model import weighted_layers

    if dist_version("torch") is None:
        return [Engine("torch", p, None, peer=True, error="skipped: torch is not installed")
                for p in ("float32", "bfloat16")] + [Engine("onnxruntime", "float32", None, peer=True,
                                                            error="skipped: needs torch to export the model")]
    import torch

    from benchmarks.torch_port import build_torch_model, torch_set_weights

    net = build_torch_model(shape)
    torch_set_weights(net, [layer.get_weights() for layer in weighted_layers(model)])
    net = net.eval().to(memory_format=torch.channels_last)

    def torch_run(autocast: bool):
        def forward(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return torch.softmax(net(x).float(), dim=1).numpy()

        return batched(forward)

    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads, channels_last"
    out = [Engine("torch", "float32", torch_run(False), peer=True, note=note),
           Engine("torch", "bfloat16", torch_run(True), peer=True, emulated=not _native(), note=note + ", autocast")]
    out.append(_onnx_engine(net, shape, workdir, torch))
    return out


def _onnx_engine(net, shape: tuple, workdir: str, torch) -> Engine:
    if dist_version("onnxruntime") is None:
        return Engine("onnxruntime", "float32", None, peer=True, error="skipped: onnxruntime is not installed")
    if dist_version("onnx") is None:
        return Engine("onnxruntime", "float32", None, peer=True,
                      error="skipped: no ONNX converter (the PyTorch exporter needs the onnx package)")
    import onnxruntime as ort

    path = os.path.join(workdir, "model.onnx")
    example = torch.zeros((2, shape[2], shape[0], shape[1]))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), path, dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}}, opset_version=17)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def forward(batch: np.ndarray) -> np.ndarray:
        logits = session.run(None, {"images": np.ascontiguousarray(batch.transpose(0, 3, 1, 2))})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)

    return Engine("onnxruntime", "float32", batched(forward), peer=True,
                  note=f"onnxruntime {ort.__version__}, exported from PyTorch (opset 17)")


# --------------------------------------------------------------------------- measuring


def measure(engines: list[Engine], images: np.ndarray, rounds: int) -> None:
    """Alternating rounds over ``images`` (one batch for emulated bfloat16); every engine warmed up first."""
    runnable = [e for e in engines if e.run is not None]
    for engine in runnable:
        try:
            engine.run(images[:BATCH])  # warm-up: compilation, first-batch allocations
        except Exception as exc:  # a broken engine must not stop the others
            engine.error, engine.run = f"{type(exc).__name__}: {exc}", None
            log(f"  {engine.name} {engine.precision}: {engine.error}")
    runnable = [e for e in engines if e.run is not None]
    for r in range(rounds):
        for engine in runnable if r % 2 == 0 else runnable[::-1]:
            batch = images[:BATCH] if engine.emulated else images
            wall, cpu = time.perf_counter(), time.process_time()
            engine.run(batch)
            engine.wall.append(time.perf_counter() - wall)
            engine.cpu.append(time.process_time() - cpu)
            engine.images.append(len(batch))
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{e.name} {e.precision} {e.images[-1] / e.wall[-1]:.0f}" for e in runnable) +
            f" img/s; load {os.getloadavg()[0]:.1f}")


def summarise(engines: list[Engine], reference: np.ndarray, images: np.ndarray, policy: str) -> list[dict]:
    from gamornet.core.thresholds import classify_probabilities

    rows = []
    labels = classify_probabilities(reference, policy)
    for engine in engines:
        row = {"engine": engine.name, "precision": engine.precision, "peer": engine.peer, "note": engine.note,
               "emulated": engine.emulated, "error": engine.error}
        if engine.run is not None and engine.wall:
            rates = [n / t for n, t in zip(engine.images, engine.wall)]
            row.update(images_per_s=statistics.median(rates), rounds=rates,
                       images_per_cpu_s=statistics.median(n / c for n, c in zip(engine.images, engine.cpu) if c > 0),
                       timed_images=engine.images[0])
            probabilities = engine.run(images)
            row.update(max_abs_difference=float(np.abs(probabilities - reference).max()),
                       argmax_changed=float(np.mean(probabilities.argmax(1) != reference.argmax(1))),
                       policy_changed=float(np.mean(classify_probabilities(probabilities, policy) != labels)))
        rows.append(row)
    tf = next(r for r in rows if r["engine"] == "tf" and r["precision"] == "float32")
    peers = [r["images_per_s"] for r in rows if r["peer"] and "images_per_s" in r]
    for row in rows:
        if "images_per_s" in row:
            row["ratio_tf"] = row["images_per_s"] / tf["images_per_s"]
            row["ratio_tf_paired"] = statistics.median(a / b for a, b in zip(row["rounds"], tf["rounds"]))
            row["ratio_tf_cpu"] = row["images_per_cpu_s"] / tf["images_per_cpu_s"]
            row["ratio_peer"] = row["images_per_s"] / max(peers) if peers else None
    return rows


def startup(path: str, shape: tuple, images: np.ndarray, workdir: str, repeats: int) -> dict:
    """Seconds from a fresh process's start to its first batch, Keras vs OpenVINO (conversion stored)."""
    data = os.path.join(workdir, "batch.npy")
    np.save(data, images[:BATCH])
    code = ("import sys, time; t = time.perf_counter(); import numpy as np; "
            "from gamornet.predict import predict_files; "
            "predict_files(np.load(sys.argv[1]), sys.argv[2], input_shape=tuple(map(int, sys.argv[3].split(','))), "
            "engine=sys.argv[4], progress=False); print(time.perf_counter() - t, 'tensorflow' in sys.modules)")
    out: dict = {}
    imported: dict = {}
    engines = ["keras"] + (["openvino"] if dist_version("openvino") else [])
    for _ in range(repeats):
        for engine in engines:
            proc = subprocess.run([sys.executable, "-c", code, data, path, ",".join(map(str, shape)), engine],
                                  capture_output=True, text=True, env=_child_env(), timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"start-up child ({engine}) failed: {proc.stderr[-1500:]}")
            seconds, tensorflow = proc.stdout.split()[-2:]
            out.setdefault(engine, []).append(float(seconds))
            imported[engine] = tensorflow == "True"
    return {engine: {"median_s": statistics.median(v), "runs": v, "imports_tensorflow": imported[engine]}
            for engine, v in out.items()}


def _child_env() -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# --------------------------------------------------------------------------- the run


def run_survey(survey: str, mode: str, variants: bool, workdir: str, with_startup: bool,
               only: tuple[str, ...] | None = None, rounds: int | None = None, timed: int | None = None) -> dict:
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.simulate import simulate_galaxies

    shape = SURVEYS[survey]
    (n_images, n_timed), rounds = MODES[mode][0][survey], rounds or MODES[mode][1]
    n_timed = timed or n_timed
    log(f"--- {survey} {'x'.join(map(str, shape))}: simulating {n_images} galaxies")
    images, _ = simulate_galaxies(n_images, survey, seed=0, progress=False)
    timed_images = np.concatenate([images] * -(-n_timed // n_images))[:n_timed]
    model = build_keras_model(shape, seed=0)
    path = os.path.join(workdir, f"{survey}.keras")
    model.save(path)
    log("    building the engines (the OpenVINO conversion is stored in the run's own cache)")
    def wanted(*names: str) -> bool:
        return not only or any(name in only for name in names)

    engines = keras_engines(path, shape, bfloat16=wanted("keras"))
    engines += openvino_engines(path, shape, variants) if wanted("openvino") else []
    engines += [e for e in peer_engines(model, shape, workdir) if wanted(e.name)] if wanted(*PEERS) else []
    log(f"    {rounds} alternating rounds of {n_timed} images (emulated bfloat16: {BATCH})")
    measure(engines, timed_images, rounds)
    reference = engines[0].run(images)
    rows = summarise(engines, reference, images, POLICIES[survey])
    result = {"shape": list(shape), "images": n_images, "timed_images": n_timed, "rounds": rounds,
              "policy": POLICIES[survey], "engines": rows}
    if with_startup:
        log("    start-up: fresh processes, one batch")
        result["startup"] = startup(path, shape, images, workdir, 1 if mode != "full" else 3)
    return result


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"GaMorNet inference engines, {report['mode']} mode, {report['elapsed_s']:.0f} s",
             f"CPU: {m['cpu']}, {m['cores']} cores; flags: {' '.join(m['flags']) or '-'}; native bfloat16: "
             f"{'yes' if m['native_bfloat16'] else 'no (bfloat16 is emulated or falls back to float32)'}",
             f"load average {' '.join(f'{x:.2f}' for x in m['load_average'])} at start, "
             f"{' '.join(f'{x:.2f}' for x in report['load_average_end'])} at end",
             "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), ""]
    header = (f"{'engine':<12} {'precision':<9} {'img/s':>7} {'img/cpu-s':>9} {'/tf':>5} {'paired':>6} {'cpu':>5} "
              f"{'/peer':>5} {'max|dp|':>8} {'argmax':>7} {'policy':>7}  note")
    for survey, result in report["surveys"].items():
        lines += [f"[{survey} {'x'.join(map(str, result['shape']))}] {result['rounds']} rounds of "
                  f"{result['timed_images']} images, medians; agreement on {result['images']} simulated galaxies "
                  f"vs tf float32 (label changes: argmax, policy {result['policy']})", header, "-" * len(header)]
        for row in result["engines"]:
            if "images_per_s" not in row:
                lines.append(f"{row['engine']:<12} {row['precision']:<9} {row['error'] or 'not run'}")
                continue
            ratio_peer = "" if row["ratio_peer"] is None else f"{row['ratio_peer']:.2f}"
            note = row["note"] + (f"; emulated, timed on {row['timed_images']} images" if row["emulated"] else "")
            lines.append(f"{row['engine']:<12} {row['precision']:<9} {row['images_per_s']:>7.1f} "
                         f"{row['images_per_cpu_s']:>9.1f} {row['ratio_tf']:>5.2f} {row['ratio_tf_paired']:>6.2f} "
                         f"{row['ratio_tf_cpu']:>5.2f} {ratio_peer:>5} "
                         f"{row['max_abs_difference']:>8.1e} {row['argmax_changed']:>7.2%} "
                         f"{row['policy_changed']:>7.2%}  {note}")
        if "startup" in result:
            parts = [f"{engine} {v['median_s']:.1f} s ({'imports' if v['imports_tensorflow'] else 'no'} TensorFlow)"
                     for engine, v in result["startup"].items()]
            lines.append("start-up (fresh process, predict_files on 64 images; OpenVINO's conversion stored): "
                         + ", ".join(parts))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CANDELS only, fewer images and rounds")
    parser.add_argument("--tiny", action="store_true", help="a few images, one round: checks that everything runs")
    parser.add_argument("--survey", choices=("CANDELS", "SDSS", "both"), default=None)
    parser.add_argument("--variants", action="store_true", help="also time other OpenVINO settings")
    parser.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up figures")
    parser.add_argument("--only", metavar="NAMES", type=lambda text: tuple(text.split(",")),
                        help="measure only these engines (comma-separated: tf, keras, openvino, torch, onnxruntime; "
                        "tf float32 is always measured)")
    parser.add_argument("--rounds", type=int, metavar="N", help="alternating rounds (default: 5 full, 3 quick)")
    parser.add_argument("--timed", type=int, metavar="N", help="images per engine and round (default: 512 CANDELS / "
                        "256 SDSS, 192 / 128 quick)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    surveys = (("CANDELS", "SDSS") if args.survey == "both" or (args.survey is None and mode == "full")
               else (args.survey or "CANDELS",))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    report = {"mode": mode, "machine": machine(), "surveys": {}}
    with tempfile.TemporaryDirectory(prefix="gamornet-engines-") as workdir:
        os.environ["GAMORNET_HOME"] = os.path.join(workdir, "cache")  # conversions of this run only
        for survey in surveys:
            report["surveys"][survey] = run_survey(survey, mode, args.variants, workdir, not args.no_startup,
                                                   args.only, args.rounds, args.timed)
    report["elapsed_s"] = time.perf_counter() - start
    report["load_average_end"] = list(os.getloadavg())
    text = format_report(report)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
