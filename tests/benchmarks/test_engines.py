"""The engine benchmark's bookkeeping (``python -m benchmarks.engines``): alternating rounds, ratios, label changes.

The engines here are numpy functions, so the test needs no framework and
runs in milliseconds; the real engines are tested in tests/test_engines.py.
"""

from __future__ import annotations

import numpy as np

from benchmarks import engines as bench


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_rounds_alternate_and_figures_compare_with_tf_float32():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(bench.BATCH * 2, 4)).astype(np.float32)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    order: list[str] = []

    def engine(name: str, shift: float = 0.0, peer: bool = False, emulated: bool = False) -> bench.Engine:
        def run(batch: np.ndarray) -> np.ndarray:
            order.append(name)
            logits = batch @ weights
            logits[:, 0] += shift  # moves some galaxies across the argmax
            return _softmax(logits)

        return bench.Engine(name, "float32", bench.batched(run), peer=peer, emulated=emulated)

    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("cannot compile")

    engines = [engine("tf"), engine("shifted", shift=0.5), engine("peer", peer=True, emulated=True),
               bench.Engine("broken", "float32", broken), bench.Engine("absent", "float32", None, error="skipped: x")]
    bench.measure(engines, images, rounds=2)
    assert order[:3] == ["tf", "shifted", "peer"]  # warm-up: one batch each (the broken engine fails there)
    # round 1 forward, round 2 backward; two batches per round, one for the emulated engine
    assert order[3:] == ["tf", "tf", "shifted", "shifted", "peer", "peer", "shifted", "shifted", "tf", "tf"]
    assert engines[2].images == [bench.BATCH, bench.BATCH]  # emulated engines: one batch per round
    assert engines[3].error == "RuntimeError: cannot compile" and engines[3].run is None

    reference = engines[0].run(images)
    rows = bench.summarise(engines, reference, images, "keras_candels")
    tf, shifted, peer = rows[:3]
    assert tf["ratio_tf"] == 1.0 and tf["max_abs_difference"] == 0.0 and tf["argmax_changed"] == 0.0
    changed = np.mean(engines[1].run(images).argmax(1) != reference.argmax(1))
    assert shifted["argmax_changed"] == changed > 0 and shifted["max_abs_difference"] > 0.01
    assert shifted["ratio_peer"] == shifted["images_per_s"] / peer["images_per_s"]
    assert tf["ratio_tf_paired"] == 1.0

    report = {"mode": "tiny", "elapsed_s": 1.0, "load_average_end": [0.0, 0.0, 0.0],
              "machine": {"cpu": "CPU X", "cores": 2, "flags": ["avx2"], "native_bfloat16": False,
                          "load_average": [0.0, 0.0, 0.0], "versions": {"numpy": np.__version__}},
              "surveys": {"CANDELS": {"shape": [4, 1, 1], "rounds": 2, "timed_images": len(images),
                                      "images": len(images), "policy": "keras_candels", "engines": rows,
                                      "startup": {"keras": {"median_s": 5.0, "imports_tensorflow": True},
                                                  "openvino": {"median_s": 0.7, "imports_tensorflow": False}}}}}
    text = bench.format_report(report)
    assert "flags: avx2; native bfloat16: no" in text
    assert f"{100 * changed:.2f}%" in text
    assert "broken       float32   RuntimeError: cannot compile" in text
    assert "absent       float32   skipped: x" in text
    assert "keras 5.0 s (imports TensorFlow), openvino 0.7 s (no TensorFlow)" in text
