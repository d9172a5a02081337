"""Benchmarks of GaMorNet: speed against the hardware's ceiling, memory and import time.

Run ``python -m benchmarks`` from a checkout or ``gamornet bench`` (the same
code); ``--quick`` for a short run, ``--json FILE`` to keep the figures.

Everything is measured in one run on one machine, and every speed is also
given as a ratio to its reference measured in the same run, so figures from
a busy machine can still be judged.  Each figure is the median of repeated
runs (``runs`` in the JSON holds them all); the inference speeds are taken in
interleaved rounds, so a ratio compares runs made under the same load.

What is measured, for each survey shape (SDSS 167x167x1, CANDELS 83x83x1):

- the ceiling: float32 ``tf.matmul`` of two 4096 x 4096 matrices (GFLOP/s),
  and the raw compiled forward pass, ``tf.function(model)`` on a fixed batch
  of 64 already in TensorFlow memory (images/s, and effective GFLOP/s from
  :func:`gamornet.core.network.forward_flops`);
- :func:`gamornet.keras_module.gamornet_predict_keras` and
  :func:`gamornet.tflearn_module.gamornet_predict_tflearn` on an in-memory
  array, model already loaded (ratio to the raw forward pass); model loading
  apart: the first load of a ``.keras`` and of a legacy ``.h5`` file, the
  reuse-cache hit, and the first and a repeated predict call of one batch;
- ``gamornet predict`` end to end (the command line's ``main`` in-process,
  writing an ECSV table) on a directory of simulated FITS cutouts and on a
  ``.npy`` stack (ratio to the raw forward pass), with a breakdown of where
  the time goes (listing, validation, reading, forward, table);
- training images/s of :func:`gamornet.keras_module.gamornet_train_keras`
  and :func:`gamornet.tflearn_module.gamornet_train_tflearn` on the same
  simulated images (batch 64, SGD with momentum 0.9, validation on 64
  images every epoch), each backend in a fresh process: the mean of ``k``
  epochs after a warm-up epoch, with the CPU time per image (ratio Keras /
  TFLearn);
- the same network in PyTorch, built from :data:`gamornet.core.network.LAYERS`
  (:func:`build_torch_model`) with the Keras model's weights, in a
  subprocess: forward pass and training step (only if torch is installed);
- peak resident memory (``VmHWM``) of ``predict_files`` on N and 10N
  FITS files, each in a fresh subprocess, and the import time of
  ``gamornet``, ``gamornet.keras_module``, ``gamornet.tflearn_module`` and
  ``gamornet.predict``, each in fresh subprocesses;
- bfloat16 inference: the model built under the Keras policy
  ``mixed_bfloat16`` with the same weights (images/s, ratio to float32), and
  the fraction of simulated galaxies whose label changes versus float32, for
  a randomly initialised model (seed 0).

JSON layout (``--json``): ``figures`` maps a group (``"common"``, ``"SDSS"``,
``"CANDELS"``) to figures keyed by the names of :data:`COMMON_FIGURES` and
:data:`SURVEY_FIGURES`; each figure has ``value`` (the median), ``unit``,
``runs``, ``reference`` and ``ratio`` (value / reference's value, see
:data:`REFERENCES`), ``note`` and ``error`` (why there is no value).
``targets`` lists the checks of :data:`TARGETS` with ``status`` PASS, MISS
or n/a; ``profiles`` holds, per survey, the stages of file prediction
(``files_fits``, ``files_npy``) and the CPU time per training image
(``train_keras``, ``train_tflearn``), and the seconds of each part of the
run (``section_seconds``); ``machine`` and ``settings`` say where and how it
ran.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from benchmarks.children import child_memory, import_seconds, peak_rss_mb
from benchmarks.config import (
    COMMON_FIGURES,
    IMPORT_MODULES,
    MATMUL_SIZE,
    REFERENCES,
    SURVEY_FIGURES,
    TARGETS,
    Settings,
    add_arguments,
    settings_for,
)
from benchmarks.report import Results, format_table, log, machine_info, section, timed
from benchmarks.sections import child_train, measure_survey
from benchmarks.torch_port import child_torch

# --------------------------------------------------------------------------- the run


def _matmul(settings: Settings, results: Results) -> None:
    with section(results, "common", ["matmul_gflops"], "matmul ceiling"):
        import tensorflow as tf

        a = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE), seed=1)
        b = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE), seed=2)
        product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
        product().numpy()  # trace
        calls = max(1, min(5, round(0.5 / timed(lambda: product().numpy(), 1)[0])))  # about 0.5 s per repeat
        times = timed(lambda: [product().numpy() for _ in range(calls)], max(settings.repeats, 3))
        results.add("common", "matmul_gflops", [calls * 2 * MATMUL_SIZE**3 / t / 1e9 for t in times],
                    note=f"{calls} product(s) per timed repeat")


def _imports(settings: Settings, results: Results) -> None:
    for module in IMPORT_MODULES:
        name = "import_" + module.split(".")[-1] + "_s"
        with section(results, "common", [name], f"import {module}"):
            repeats = settings.import_repeats + (2 if module == "gamornet" else 0)
            results.add("common", name, [import_seconds(module) for _ in range(repeats)],
                        note="fresh subprocess each time, interpreter start excluded")


def _finish(results: Results) -> list[dict]:
    """Ratios to the references, then the targets."""
    for group, figures in results.figures.items():
        if group == "common":
            continue
        for name, (ref_group, ref_name) in REFERENCES.items():
            fig = figures.get(name)
            ref = results.figures["common" if ref_group == "common" else group].get(ref_name)
            if fig is None or ref is None:
                continue
            fig.reference = f"{'common' if ref_group == 'common' else group}/{ref_name}"
            if fig.value is not None and ref.value:
                fig.ratio = fig.value / ref.value
    targets = []
    for ref_group, name, attr, op, threshold in TARGETS:
        groups = ["common"] if ref_group == "common" else [g for g in results.figures if g != "common"]
        for group in groups:
            fig = results.figures[group].get(name)
            value = None if fig is None else getattr(fig, attr)
            if value is None:
                status = "n/a"
            else:
                ok = {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[op]
                status = "PASS" if ok else "MISS"
            targets.append({"group": group, "figure": name, "field": attr, "operator": op, "threshold": threshold,
                            "value": value, "status": status})
    return targets


def run_benchmarks(settings: Settings) -> dict:
    """Run every measurement of ``settings``; returns the JSON-able report (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    machine = machine_info()
    results = Results(settings)
    log(f"GaMorNet benchmark ({settings.mode}; {', '.join(settings.surveys)}) on {machine['cpu']}, "
         f"{machine['cores_available']} cores, load average {machine['load_average']}")
    _imports(settings, results)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # TFLearn's deprecation notes
    _matmul(settings, results)
    for survey in settings.surveys:
        measure_survey(survey, settings, results)
    results.fail("common", COMMON_FIGURES, "not measured")
    for survey in settings.surveys:
        results.fail(survey, SURVEY_FIGURES, "not measured")
    for group, figures in results.figures.items():  # the documented order
        spec = COMMON_FIGURES if group == "common" else SURVEY_FIGURES
        results.figures[group] = {name: figures[name] for name in spec if name in figures}
    targets = _finish(results)
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "format": 1,
        "mode": settings.mode,
        "settings": asdict(settings),
        "machine": machine,
        "figures": {g: {n: asdict(f) for n, f in figs.items()} for g, figs in results.figures.items()},
        "targets": targets,
        "profiles": results.profiles,
        "peak_rss_mb": peak_rss_mb(),
        "elapsed_s": time.perf_counter() - start,
    }



# --------------------------------------------------------------------------- command line


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed options; print the table (stdout), write the JSON."""
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    report = run_benchmarks(settings_for(mode, args.survey))
    text = format_table(report)
    print(text, end="", flush=True)
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks``, also run by ``gamornet bench`` in a source checkout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, payload = args.child[0], json.loads(args.child[1])
        result = {"memory": child_memory, "torch": child_torch, "train": child_train}[kind](payload)
        print(json.dumps(result))
        return 0
    return run_from_args(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
