"""The measurements of one survey shape: inference rounds, model loading, file prediction, training, memory."""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.children import measure_prediction_memory, run_child
from benchmarks.config import BATCH_SIZE, SURVEY_FIGURES, SURVEYS, Settings
from benchmarks.report import Results, dist_version, log, quiet, rates, section, timed
from gamornet.core.network import forward_flops

# --------------------------------------------------------------------------- one survey


@dataclass
class Workspace:
    survey: str
    shape: tuple
    directory: str
    images: np.ndarray  # simulated galaxies (n_sim, H, W, 1)
    onehot: np.ndarray
    fits_files: list
    keras_path: str = ""
    h5_path: str = ""
    tflearn_prefix: str = ""
    model: Any = None
    model16: Any = None
    file_inputs: dict = field(default_factory=dict)


def _tile(images: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(images, np.arange(n) % len(images), axis=0))


def _link_files(files: list, directory: str, n: int) -> str:
    """A directory of ``n`` FITS files, hard links (or copies) cycling through ``files``."""
    os.makedirs(directory)
    for i in range(n):
        target = os.path.join(directory, f"g{i:07d}.fits")
        try:
            os.link(files[i % len(files)], target)
        except OSError:
            shutil.copyfile(files[i % len(files)], target)
    return directory


def _prepare(survey: str, settings: Settings, tmp: str) -> Workspace:
    from astropy.table import Table

    from gamornet.convert import write_tflearn_checkpoint
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.simulate import simulate_to_disk

    shape = SURVEYS[survey]
    n_sim = max(settings.n_files[survey], settings.n_memory[survey], BATCH_SIZE)
    start = time.perf_counter()
    sim = os.fspath(simulate_to_disk(os.path.join(tmp, "sim"), n_sim, survey, seed=0, fits=True, progress=False))
    catalog = Table.read(os.path.join(sim, "catalog.ecsv"))
    images = np.load(os.path.join(sim, "images.npy"))
    onehot = np.eye(3, dtype=np.float32)[np.asarray(catalog["class_index"], dtype=int)]
    fits_dir = os.path.join(sim, "fits")
    fits_files = sorted(os.path.join(fits_dir, f) for f in os.listdir(fits_dir) if f.endswith(".fits"))
    log(f"[{survey}] simulated {n_sim} galaxies (FITS and .npy) in {time.perf_counter() - start:.1f} s")
    ws = Workspace(survey, shape, tmp, images, onehot, fits_files)
    ws.model = build_keras_model(shape, seed=0)
    ws.keras_path = os.path.join(tmp, "model.keras")
    ws.model.save(ws.keras_path)
    with quiet():
        ws.h5_path = os.path.join(tmp, "model.h5")
        ws.model.save(ws.h5_path)
        ws.tflearn_prefix = write_tflearn_checkpoint(ws.model, os.path.join(tmp, "tflearn", "model"), shape)
    return ws


def _inference_rounds(ws: Workspace, settings: Settings, results: Results) -> None:
    """The inference speeds, measured in interleaved rounds so that each ratio compares like with like.

    Every round runs the raw forward pass, both predict functions, the
    bfloat16 forward pass and ``gamornet predict`` on both file kinds once;
    each figure is the median over the rounds.  Everything is loaded,
    compiled and run once before the first round.
    """
    import tensorflow as tf

    from gamornet import predict_files
    from gamornet.cli import main as cli_main
    from gamornet.keras_backend.model import build_keras_model
    from gamornet.keras_backend.training import mixed_precision_policy
    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.tflearn_module import gamornet_predict_tflearn

    survey, shape = ws.survey, ws.shape
    batches = settings.forward_batches[survey]
    x = tf.constant(_tile(ws.images, BATCH_SIZE))
    arr = _tile(ws.images, settings.n_predict[survey])
    n_files = settings.n_files[survey]
    out = os.path.join(ws.directory, "files_out.ecsv")

    def compiled_loop(model) -> Callable[[], None]:
        compiled = tf.function(lambda t: model(t, training=False))

        def run():
            for _ in range(batches):
                compiled(x).numpy()

        return run

    def bf16_loop() -> Callable[[], None]:
        with mixed_precision_policy("bfloat16"):
            ws.model16 = build_keras_model(shape, seed=0)
        ws.model16.set_weights(ws.model.get_weights())
        return compiled_loop(ws.model16)

    def tflearn_predict() -> None:
        with quiet():
            gamornet_predict_tflearn(arr, ws.tflearn_prefix, shape, progress=False)

    def files_setup(kind: str) -> Callable[[], None]:
        if kind == "fits":
            inputs = _link_files(ws.fits_files, os.path.join(ws.directory, "files_fits"), n_files)
        else:
            inputs = os.path.join(ws.directory, "files.npy")
            np.save(inputs, _tile(ws.images, n_files))
        ws.file_inputs[kind] = inputs
        predict_files(ws.images[:BATCH_SIZE], ws.keras_path, input_shape=shape, progress=False)  # load, compile

        def run():
            code = cli_main(["predict", inputs, "--model", ws.keras_path, "--input-shape", survey, "--output", out,
                             "--overwrite", "--quiet"])
            if code != 0:
                raise RuntimeError(f"gamornet predict exited with {code}")

        return run

    plan: list[tuple[str, Callable[[], Callable[[], None]], int, str]] = [
        ("raw_forward_images_per_s", lambda: compiled_loop(ws.model), batches * BATCH_SIZE,
         "tf.function(model) on one batch of 64 already in TensorFlow memory"),
        ("predict_keras_images_per_s",
         lambda: lambda: gamornet_predict_keras(arr, ws.keras_path, shape, progress=False), len(arr),
         f"{len(arr)} images per call, model loaded (reuse cache)"),
        ("predict_tflearn_images_per_s", lambda: tflearn_predict, len(arr),
         f"{len(arr)} images per call, network kept for reuse (TFLearn's depth LRN)"),
        ("bf16_forward_images_per_s", bf16_loop, batches * BATCH_SIZE,
         "model built under the keras policy mixed_bfloat16, same weights as float32"),
        ("files_fits_images_per_s", lambda: files_setup("fits"), n_files,
         f"{n_files} FITS files, `gamornet predict DIR ... --output table.ecsv` in-process, model loaded"),
        ("files_npy_images_per_s", lambda: files_setup("npy"), n_files,
         f"{n_files}-image .npy stack, `gamornet predict STACK.npy ... --output table.ecsv` in-process"),
    ]
    runners: dict[str, Callable[[], None]] = {}
    for name, setup, _, _ in plan:
        with section(results, survey, [name], f"warm-up of {name}"):
            runner = setup()
            runner()
            runners[name] = runner
    times: dict[str, list[float]] = {name: [] for name in runners}
    log(f"--- {survey}: {settings.repeats} interleaved rounds of {', '.join(runners)}")
    for _ in range(settings.repeats):
        for name in list(runners):
            try:
                times[name] += timed(runners[name], 1)
            except Exception as exc:  # a broken part must not stop the others
                log(f"[{survey}] {name} failed: {type(exc).__name__}: {exc}")
                results.fail(survey, [name], f"{type(exc).__name__}: {exc}")
                runners.pop(name)
    for name, _, n, note in plan:
        if name in runners:
            results.add(survey, name, rates(n, times[name]), note=note)
    raw = results.figures[survey].get("raw_forward_images_per_s")
    if raw is not None and raw.runs:
        flops = forward_flops(shape)
        results.add(survey, "raw_forward_gflops", [r * flops / 1e9 for r in raw.runs],
                    note=f"{flops / 1e9:.2f} GFLOP per image (gamornet.core.network.forward_flops)")
    else:
        results.fail(survey, ["raw_forward_gflops"], "no raw forward figure")


def _profile_sections(ws: Workspace, results: Results) -> None:
    for kind, inputs in ws.file_inputs.items():
        with section(results, ws.survey, [], f"profile of gamornet predict on {kind}"):
            profile = _profile_files(ws, inputs)
            measured = results.figures[ws.survey].get(f"files_{kind}_images_per_s")
            profile["end_to_end_s"] = (profile["images"] / measured.value if measured is not None and measured.value
                                       else None)
            results.profiles.setdefault(ws.survey, {})[f"files_{kind}"] = profile


def _profile_files(ws: Workspace, inputs: str) -> dict:
    """Seconds of each stage of file prediction, run one after the other in this thread."""
    from astropy.table import Table

    from gamornet.core.network import CLASS_NAMES
    from gamornet.core.thresholds import classify_probabilities
    from gamornet.keras_backend.forward import compiled_forward
    from gamornet.keras_backend.model import load_keras_model
    from gamornet.predict.images import ImageReader, scan_images
    from gamornet.predict.inputs import list_images

    stages: dict[str, float] = {}
    start = time.perf_counter()
    refs, _ = list_images(inputs)
    stages["list_s"] = time.perf_counter() - start
    start = time.perf_counter()
    good, _ = scan_images(refs, ws.shape)
    stages["validate_s"] = time.perf_counter() - start
    reader = ImageReader(ws.shape)
    start = time.perf_counter()
    batches = [reader.read(good[s : s + BATCH_SIZE]) for s in range(0, len(good), BATCH_SIZE)]
    stages["read_s"] = time.perf_counter() - start
    forward = compiled_forward(load_keras_model(ws.keras_path, ws.shape))
    start = time.perf_counter()
    probs = np.concatenate([forward(b.images) for b in batches])
    stages["forward_s"] = time.perf_counter() - start
    start = time.perf_counter()
    table = Table({"id": [str(i) for b in batches for i in b.ids]})
    for j, name in enumerate(CLASS_NAMES):
        table[f"p_{name}"] = probs[:, j]
    table["label"] = classify_probabilities(probs, "keras_candels" if ws.survey == "CANDELS" else "keras_sdss")
    table.write(os.path.join(ws.directory, "profile.ecsv"), format="ascii.ecsv", overwrite=True)
    stages["table_s"] = time.perf_counter() - start
    stages["images"] = len(good)
    return stages


def _load_sections(ws: Workspace, settings: Settings, results: Results) -> None:
    from gamornet.keras_backend.model import clear_model_cache, load_keras_model
    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.tflearn_module import clear_tflearn_models, gamornet_predict_tflearn

    survey, shape, repeats = ws.survey, ws.shape, settings.load_repeats
    one = ws.images[:BATCH_SIZE]
    for name, path in (("model_load_keras_first_s", ws.keras_path), ("model_load_h5_first_s", ws.h5_path)):
        with section(results, survey, [name], name):
            times = []
            for _ in range(repeats):
                clear_model_cache()
                gc.collect()
                times += timed(lambda path=path: load_keras_model(path, shape), 1)
            results.add(survey, name, times, note="read the file, build the model, set the weights")
    with section(results, survey, ["model_load_keras_cached_s"], "reuse-cache hit"):
        load_keras_model(ws.keras_path, shape)
        results.add(survey, "model_load_keras_cached_s", timed(lambda: load_keras_model(ws.keras_path, shape), 5))

    def keras_call():
        gamornet_predict_keras(one, ws.keras_path, shape, progress=False)

    def tflearn_call():
        with quiet():
            gamornet_predict_tflearn(one, ws.tflearn_prefix, shape, progress=False)

    for flavor, call, clear in (("keras", keras_call, clear_model_cache), ("tflearn", tflearn_call,
                                                                           clear_tflearn_models)):
        names = [f"predict_{flavor}_first_call_s", f"predict_{flavor}_repeat_call_s"]
        with section(results, survey, names, f"gamornet_predict_{flavor} first and repeat call"):
            first, repeat = [], []
            for _ in range(repeats):
                clear()
                gc.collect()
                first += timed(call, 1)
                repeat += timed(call, 1)
            what = ("read the file, build the model, trace, predict" if flavor == "keras"
                    else "build the TFLearn graph, restore the checkpoint, predict")
            results.add(survey, names[0], first, note=f"{what} (TensorFlow already imported and warm)")
            results.add(survey, names[1], repeat, note="same model_load_path: reuse-cache hit")
    clear_tflearn_models()


def child_train(payload: dict) -> dict:
    """Seconds of each training epoch of one backend, in this fresh process.

    Keras: :func:`gamornet_train_keras` for ``1 + k`` epochs with an epoch
    timer passed as ``callbacks``.  TFLearn: :func:`gamornet_train_tflearn`
    for the warm-up epoch, then ``k`` more epochs of the ``tflearn.DNN`` it
    returns, fitted with the arguments the module uses plus an epoch timer.
    Either way every epoch shuffles, trains and validates.
    """
    x, y = np.load(payload["x"]), np.load(payload["y"])
    vx, vy = x[:BATCH_SIZE].copy(), y[:BATCH_SIZE].copy()
    shape, k = tuple(payload["shape"]), int(payload["epochs"])
    common = dict(files_save_path=os.devnull, batch_size=BATCH_SIZE, lr=1e-4, momentum=0.9, save_model=False)
    seconds: list[tuple[float, float, float]] = []  # (wall, CPU, system CPU) of each epoch
    if payload["backend"] == "keras":
        import keras

        from gamornet.keras_module import gamornet_train_keras

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = clocks()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(since(self.start))

        gamornet_train_keras(x, y, vx, vy, shape, epochs=1 + k, verbose=0, seed=0, callbacks=[Timer()], **common)
    else:
        from gamornet.tflearn_backend.compat import import_tflearn
        from gamornet.tflearn_module import gamornet_train_tflearn

        tflearn = import_tflearn()

        class TFLearnTimer(tflearn.callbacks.Callback):
            def on_epoch_begin(self, training_state):
                self.start = clocks()

            def on_epoch_end(self, training_state):
                seconds.append(since(self.start))

        with quiet():
            start = clocks()
            dnn = gamornet_train_tflearn(x, y, vx, vy, shape, epochs=1, show_metric=False, **common)
            seconds.append(since(start))  # warm-up, dropped
            dnn.fit(x, y, n_epoch=k, validation_set=(vx, vy), show_metric=False, batch_size=BATCH_SIZE,
                    shuffle=True, snapshot_epoch=True, run_id="gamornet", callbacks=[TFLearnTimer()])
    return {"epoch_seconds": [t[0] for t in seconds], "epoch_cpu_seconds": [t[1] for t in seconds],
            "epoch_system_seconds": [t[2] for t in seconds], "images": len(x)}


def clocks() -> tuple[float, float, float]:
    """Wall time, CPU time (user + system, all threads) and system CPU time of this process."""
    t = os.times()
    return time.perf_counter(), t.user + t.system, t.system


def since(start: tuple[float, float, float]) -> tuple[float, float, float]:
    now = clocks()
    return now[0] - start[0], now[1] - start[1], now[2] - start[2]


def _training_sections(ws: Workspace, settings: Settings, results: Results) -> None:
    survey = ws.survey
    n, k = settings.n_train[survey], settings.train_epochs
    names = ["train_tflearn_images_per_s", "train_keras_images_per_s"]
    with section(results, survey, names, "training data"):
        x_path, y_path = os.path.join(ws.directory, "train_x.npy"), os.path.join(ws.directory, "train_y.npy")
        np.save(x_path, _tile(ws.images, n))
        np.save(y_path, _tile(ws.onehot, n))
    note = (f"{n} images per epoch, batch 64, SGD momentum 0.9, 64 validation images; the mean of {k} epochs after "
            "a warm-up epoch, each backend in a fresh process")
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(settings.train_repeats):
        for name in names:
            with section(results, survey, [name], name):
                out = run_child("train", {"backend": name.split("_")[1], "x": x_path, "y": y_path,
                                           "shape": list(ws.shape), "epochs": k})
                images = k * out["images"]
                rates[name].append(images / sum(out["epoch_seconds"][1:]))
                cpu[name].append((1e3 * sum(out["epoch_cpu_seconds"][1:]) / images,
                                  1e3 * sum(out["epoch_system_seconds"][1:]) / images))
    for name in names:
        if rates[name]:
            per_image = {"cpu_ms_per_image": statistics.median(c for c, _ in cpu[name]),
                         "system_ms_per_image": statistics.median(s for _, s in cpu[name])}
            results.profiles.setdefault(survey, {})[name.replace("_images_per_s", "")] = per_image
            results.add(survey, name, rates[name], note=f"{note}; CPU {per_image['cpu_ms_per_image']:.1f} ms/image "
                                                        f"(system {per_image['system_ms_per_image']:.1f})")


def _bf16_labels(ws: Workspace, results: Results) -> None:
    from benchmarks.report import predict_probabilities
    from gamornet.core.thresholds import classify_probabilities

    names = ["bf16_label_change_fraction", "bf16_policy_label_change_fraction", "bf16_max_abs_difference"]
    with section(results, ws.survey, names, "bfloat16 labels"):
        if ws.model16 is None:
            raise RuntimeError("the bfloat16 model could not be built")
        p32 = predict_probabilities(ws.model, ws.images)
        p16 = predict_probabilities(ws.model16, ws.images)
        what = f"{len(ws.images)} simulated {ws.survey} galaxies, randomly initialised model (seed 0)"
        results.add(ws.survey, names[0], [np.mean(p32.argmax(1) != p16.argmax(1))], note=what)
        policy = "keras_candels" if ws.survey == "CANDELS" else "keras_sdss"
        changed = classify_probabilities(p32, policy) != classify_probabilities(p16, policy)
        results.add(ws.survey, names[1], [np.mean(changed)], note=f"{what}; policy {policy}")
        results.add(ws.survey, names[2], [np.max(np.abs(p32 - p16))], note=what)
        ws.model16 = None


def _torch_sections(ws: Workspace, settings: Settings, results: Results) -> None:
    names = ["torch_forward_images_per_s", "torch_train_images_per_s", "torch_max_abs_difference"]
    if dist_version("torch") is None:
        results.fail(ws.survey, names, "skipped: torch is not installed")
        log(f"[{ws.survey}] PyTorch: skipped (not installed)")
        return
    from benchmarks.report import predict_probabilities
    from gamornet.keras_backend.model import weighted_layers

    with section(results, ws.survey, names, "PyTorch"):
        images = _tile(ws.images, BATCH_SIZE)
        data = os.path.join(ws.directory, "torch_data.npz")
        arrays = {}
        for i, layer in enumerate(weighted_layers(ws.model)):
            arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.get_weights()
        np.savez(data, images=images, labels=_tile(ws.onehot, BATCH_SIZE).argmax(1),
                 probabilities=predict_probabilities(ws.model, images), **arrays)
        del arrays
        out = run_child("torch", {"data": data, "shape": list(ws.shape), "repeats": settings.repeats,
                                   "forward_batches": settings.forward_batches[ws.survey],
                                   "train_steps": settings.torch_train_steps[ws.survey]})
        os.remove(data)
        note = f"torch {out['torch']}, {out['threads']} threads, channels_last, subprocess"
        results.add(ws.survey, names[0], out["forward"], note=note + ", inference_mode")
        results.add(ws.survey, names[1], out["train"], note=note + ", SGD momentum 0.9, cross-entropy")
        results.add(ws.survey, names[2], [out["max_abs_difference"]], note="same weights, one batch")


def _memory_sections(ws: Workspace, settings: Settings, results: Results) -> None:
    names = ["memory_n_peak_rss_mb", "memory_10n_peak_rss_mb"]
    with section(results, ws.survey, names, "file-prediction peak memory"):
        n = settings.n_memory[ws.survey]
        for name, count in zip(names, (n, 10 * n)):
            directory = _link_files(ws.fits_files, os.path.join(ws.directory, f"memory_{count}"), count)
            out = measure_prediction_memory(directory, ws.keras_path, ws.shape)
            results.add(ws.survey, name, [out["peak_rss_mb"]],
                        note=f"{count} FITS files, predict_files in a fresh process "
                             f"({out['images'] / out['seconds']:.0f} img/s including load), VmHWM")
            shutil.rmtree(directory, ignore_errors=True)


def measure_survey(survey: str, settings: Settings, results: Results) -> None:
    with tempfile.TemporaryDirectory(prefix=f"gamornet-bench-{survey}-") as tmp:
        ws = None
        with section(results, survey, list(SURVEY_FIGURES), "setup"):
            ws = _prepare(survey, settings, tmp)
        if ws is None:
            return
        _inference_rounds(ws, settings, results)
        _bf16_labels(ws, results)
        _profile_sections(ws, results)
        _load_sections(ws, settings, results)
        _training_sections(ws, settings, results)
        _torch_sections(ws, settings, results)
        _memory_sections(ws, settings, results)
        from gamornet.keras_backend.model import clear_model_cache

        clear_model_cache()
        ws.model = None
        gc.collect()
