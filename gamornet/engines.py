"""Which engine computes the probabilities, in which precision; Keras models converted for OpenVINO.

Engines
-------
``"keras"``
    The Keras model's compiled forward pass on the active Keras backend
    (:func:`gamornet.keras_backend.forward.load_forward`).  With
    ``precision="bfloat16"`` the model is built under Keras'
    ``mixed_bfloat16`` policy with the same weights.  The only engine with
    Monte-Carlo dropout and ``tf.distribute`` strategies.
``"openvino"``
    The model converted for OpenVINO (a dependency of gamornet), on the CPU:
    the conversion (``openvino.convert_model`` of the Keras model on the
    TensorFlow backend) runs once per model file, input shape,
    LRN flavour and versions of gamornet / Keras / OpenVINO, and is stored in
    ``<cache>/openvino`` (:mod:`gamornet.openvino_backend.store`); later
    runs load it without importing Keras or TensorFlow.  float32 agrees
    with Keras to float32 rounding (about 2e-6).
``"tflearn"``
    TFLearn itself, for TFLearn checkpoints (float32 only).
``"auto"`` (default)
    OpenVINO in the precision asked for when ``openvino`` is installed,
    TensorFlow is installed (it converts the model) and no NVIDIA GPU is
    visible (there the Keras backend's GPU path is faster); else Keras
    (TFLearn for TFLearn models in float32).  Keras whenever Monte-Carlo
    dropout or an explicit ``tf.distribute`` strategy is asked for.

Precisions
----------
``"float32"`` (default) reproduces published predictions.  ``"bfloat16"``
computes convolutions and matrix products in bfloat16 (probabilities move
by up to about 1e-2, labels rarely).  It pays only on CPUs with native
bfloat16 (``avx512_bf16``, ``amx_bf16``); elsewhere OpenVINO computes in
float32 anyway and Keras emulates bfloat16, which is slower than float32.
Both cases warn.  The precision a forward pass really uses is its
``precision`` attribute and goes into the tables of
:func:`gamornet.predict_files`.

What each choice costs
----------------------
The speed, start-up time and memory of each engine and precision, and how
closely each agrees with Keras in float32, are measured on the
performance page of the documentation (``python -m benchmarks.engines``).

Monte-Carlo dropout (``mc_samples``) and ``tf.distribute`` strategies need
the Keras engine; so does a GPU (OpenVINO runs here on the CPU).  int8
quantisation is not offered: it changes 3-13% of the labels, because it
loses the faint end of raw galaxy pixels.

Telemetry: OpenVINO's Python package reports usage unless the user opts
out; gamornet imports and converts with it declined (see
:mod:`gamornet.openvino_backend.runtime`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import warnings
from contextlib import nullcontext

from gamornet import __version__
from gamornet.core.cache import ModelCache
from gamornet.core.hardware import cpu_summary, native_bfloat16, nvidia_gpu_visible
from gamornet.core.validation import check_engine, check_input_shape
from gamornet.openvino_backend import is_available as openvino_available
from gamornet.weights.paths import fingerprint, model_kind, strip_checkpoint_suffix

__all__ = ["EngineChoice", "EngineUnavailableError", "choose_engine", "load_forward", "openvino_available",
           "conversion_description", "converted_model", "convert_keras_model", "openvino_cache_root"]


class EngineUnavailableError(RuntimeError):
    """An engine was asked for whose package is not installed."""


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    """An engine and the precision it will compute in.

    Attributes
    ----------
    engine : {"keras", "openvino", "tflearn"}
    precision : {"float32", "bfloat16"}
        The precision the engine computes in on this machine (OpenVINO
        computes a bfloat16 request in float32 where the CPU lacks bfloat16).
    requested : {"float32", "bfloat16"}
        The precision asked for.
    """

    engine: str
    precision: str
    requested: str

    @property
    def label(self) -> str:
        """``"<engine>, <precision>"``, as progress lines show it."""
        return f"{self.engine}, {self.precision}"


def _explicit_strategy(strategy) -> bool:
    return strategy is not None and not (isinstance(strategy, str) and strategy == "auto")


def _tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (it converts Keras models for OpenVINO), checked without importing it."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def choose_engine(engine: str = "auto", precision: str = "float32", *, flavor: str = "keras", mc_samples: int = 0,
                  strategy="auto", warn: bool = True) -> EngineChoice:
    """Resolve ``engine`` / ``precision`` for one prediction, before anything heavy runs.

    Parameters
    ----------
    engine : {"auto", "keras", "openvino", "tflearn"}
        See the module docstring (``"tflearn"`` only for ``flavor="tflearn"``).
    precision : {"float32", "bfloat16"}
    flavor : {"keras", "tflearn"}
        What kind of model file is predicted.
    mc_samples : int
        Monte-Carlo dropout passes (Keras only).
    strategy : "auto", None or tf.distribute.Strategy
        A strategy object needs the Keras engine.
    warn : bool
        Warn when bfloat16 is asked for on a CPU without native bfloat16.

    Returns
    -------
    EngineChoice

    Raises
    ------
    ValueError
        For an unknown engine or precision, or one that cannot do what is
        asked (Monte-Carlo dropout or a strategy with OpenVINO).
    EngineUnavailableError
        For ``engine="openvino"`` without the ``openvino`` package.
    """
    if isinstance(engine, str) and engine == "tflearn" and flavor != "tflearn":
        raise ValueError(f"engine='tflearn' runs TFLearn checkpoints only: it needs flavor='tflearn' (--flavor "
                         f"tflearn on the command line); for a Keras model choose engine 'auto', 'keras' or "
                         f"'openvino'. Received: engine='tflearn', flavor={flavor!r}")
    engine, precision = check_engine(engine, precision, flavor)
    if engine == "auto":
        if mc_samples or _explicit_strategy(strategy):
            engine = "keras"
        elif openvino_available() and _tensorflow_installed() and not nvidia_gpu_visible():
            engine = "openvino"
        else:
            engine = "tflearn" if flavor == "tflearn" and precision == "float32" else "keras"
    if engine == "openvino":
        if mc_samples:
            raise ValueError(f"Monte-Carlo dropout needs engine='keras' (or 'auto'): a model converted for OpenVINO "
                             f"holds no dropout. Received: engine='openvino', mc_samples={mc_samples}")
        if _explicit_strategy(strategy):
            raise ValueError(f"A tf.distribute strategy needs engine='keras' (or 'auto'); OpenVINO runs on the CPU. "
                             f"Received: engine='openvino', strategy={strategy!r}")
        if not openvino_available():
            raise EngineUnavailableError("engine='openvino' needs the openvino package (a dependency of "
                                         "gamornet: pip install openvino), or use engine='keras' / 'auto'. "
                                         "Received: engine='openvino'")
    computed = precision
    if precision == "bfloat16" and engine == "openvino":
        from gamornet.openvino_backend.runtime import native_bfloat16 as openvino_bfloat16

        computed = "bfloat16" if openvino_bfloat16() else "float32"
    if warn and precision == "bfloat16" and not native_bfloat16():
        _warn_emulated(engine, computed)
    return EngineChoice(engine, computed, precision)


def _warn_emulated(engine: str, computed: str) -> None:
    cpu = cpu_summary()
    if engine == "openvino":
        outcome = (f"OpenVINO computes in {computed} instead (recorded as precision={computed!r}), no faster than "
                   "float32")
    else:
        outcome = ("Keras emulates it with float32 arithmetic plus conversions, several times slower than float32 "
                   "(unless the model runs on a GPU)")
    warnings.warn(f"precision='bfloat16' on a CPU without native bfloat16 arithmetic (no avx512_bf16 or amx_bf16; "
                  f"this CPU: {cpu}): {outcome}. bfloat16 is faster only where the CPU multiplies bfloat16 "
                  "numbers itself; use precision='float32' here.", UserWarning, stacklevel=3)


# ---------------------------------------------------------------- forward passes


def load_forward(path, input_shape, choice: EngineChoice, *, lrn: str | None = None, strategy="auto",
                 reuse: bool = True, source: str | None = None, trainable_bools=None, progress: bool = True):
    """The forward pass of a saved model on the chosen engine.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` / HDF5 file or a TFLearn checkpoint prefix (published
        names are resolved by the caller).
    input_shape : tuple of int
        ``(height, width, channels)``.
    choice : EngineChoice
        From :func:`choose_engine`.
    lrn : {"keras", "tflearn"}, optional
        LRN flavour (Keras and OpenVINO; by default the file's).
    strategy : "auto", None or tf.distribute.Strategy
        Keras only.
    reuse : bool
        Reuse a model loaded (or compiled) earlier from the same, unchanged file.
    source : str, optional
        Name of the model for messages.
    trainable_bools : sequence of 8 bool, optional
        TFLearn only (no effect on predictions).
    progress : bool
        Say when a model is converted for OpenVINO.

    Returns
    -------
    callable
        ``forward(batch)`` -> probabilities, with attributes ``engine`` and
        ``precision`` (the precision it computes in).

    Raises
    ------
    RuntimeError
        If the engine computes in another precision than ``choice`` says.
    """
    path = os.fspath(path)
    shape = check_input_shape(input_shape)
    if choice.engine == "tflearn":
        from gamornet.tflearn_backend.network import load_forward as load_tflearn

        forward = load_tflearn(path, shape, trainable_bools=trainable_bools, reuse=reuse, source=source)
    elif choice.engine == "openvino":
        forward = _openvino_forward(path, shape, lrn, choice.requested, reuse, source or path, progress)
    elif choice.requested == "bfloat16":
        forward = _keras_bfloat16_forward(path, shape, lrn, strategy, reuse)
    else:
        from gamornet.keras_backend.forward import load_forward as load_keras

        forward = load_keras(path, shape, lrn=lrn, strategy=strategy, reuse=reuse)
    if forward.engine != choice.engine or forward.precision != choice.precision:
        raise RuntimeError(f"The {forward.engine} engine computes in {forward.precision}, not in {choice.precision} "
                           f"as planned for engine={choice.engine!r}, precision={choice.requested!r}.")
    return forward


#: Keras models built under the mixed_bfloat16 policy (the two most recently used).
_BFLOAT16_MODELS = ModelCache(2)


def _keras_bfloat16_forward(path: str, shape: tuple, lrn, strategy, reuse: bool):
    """A KerasForward of the model built under ``mixed_bfloat16`` with the weights of the float32 model."""
    from gamornet.keras_backend.forward import KerasForward, choose_strategy
    from gamornet.keras_backend.layers import pixel_scaling_config
    from gamornet.keras_backend.model import build_keras_model, load_keras_model, model_lrn_flavor, model_widths
    from gamornet.keras_backend.training import mixed_precision_policy

    strategy = choose_strategy(strategy)
    key = (fingerprint(_model_path(path)), shape, lrn)
    model = _BFLOAT16_MODELS.get(key) if reuse and strategy is None else None
    if model is None:
        base = load_keras_model(path, shape, lrn=lrn, reuse=reuse)
        with strategy.scope() if strategy is not None else nullcontext(), mixed_precision_policy("bfloat16"):
            model = build_keras_model(shape, lrn=model_lrn_flavor(base), preprocessing=pixel_scaling_config(base),
                                      widths=model_widths(base))
            model.set_weights(base.get_weights())
        if reuse and strategy is None:
            _BFLOAT16_MODELS.put(key, model)
    forward = KerasForward(model, strategy)
    forward.precision = "bfloat16"
    return forward


# ---------------------------------------------------------------- OpenVINO conversion


def openvino_cache_root():
    """``<cache>/openvino``: where converted models are stored."""
    from gamornet.published.models import cache_dir

    return cache_dir() / "openvino"


def _model_path(path: str) -> str:
    return strip_checkpoint_suffix(path) if model_kind(path) == "checkpoint" else path


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def conversion_description(path, input_shape, lrn: str | None = None) -> dict:
    """What identifies a conversion: the model file (path, modification time, size), shape, LRN, versions."""
    path = os.path.abspath(_model_path(os.fspath(path)))
    return {
        "source": path,
        "fingerprint": [list(item) for item in fingerprint(path)],
        "input_shape": [int(n) for n in input_shape],
        "lrn": lrn,
        "versions": {"gamornet": __version__, "keras": _dist_version("keras"), "openvino": _dist_version("openvino")},
    }


def convert_keras_model(model):
    """``openvino.convert_model`` of a Keras model (TensorFlow backend), batch dimension dynamic.

    Runs with OpenVINO's telemetry declined and without the warning Keras
    gives when OpenVINO calls the model with a list of inputs.
    """
    from gamornet.openvino_backend.runtime import import_openvino, telemetry_declined

    ov = import_openvino()
    with telemetry_declined(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*structure of `?inputs`? doesn't match", category=UserWarning)
        converted = ov.convert_model(model)
    shape = converted.input(0).get_partial_shape()
    if shape.rank.get_length() != 4 or not shape[0].is_dynamic:
        converted.reshape([-1, *[int(n) for n in model.input_shape[1:]]])
    return converted


def _saver(path: str, shape: tuple, lrn: str | None):
    """``save(xml_path)``: convert the model at ``path`` and write it there (in this process on TensorFlow)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda xml: _convert_in_child(path, shape, lrn, xml)
    from gamornet.keras_backend.model import load_keras_model
    from gamornet.openvino_backend.runtime import import_openvino

    converted = convert_keras_model(_float32_model(load_keras_model(path, shape, lrn=lrn)))
    return lambda xml: import_openvino().save_model(converted, xml, compress_to_fp16=False)


def _float32_model(model):
    """``model`` itself if it computes in float32, else the same network built in float32 with its weights.

    A model trained with ``mixed_precision`` keeps its ``mixed_*`` dtype
    policies when saved; its casts are not something OpenVINO's converter
    takes, and the stored conversion is float32 whatever precision it later
    runs in (the precision is OpenVINO's, at compile time).
    """
    import keras

    from gamornet.keras_backend.layers import pixel_scaling_config
    from gamornet.keras_backend.model import build_keras_model, model_lrn_flavor, model_widths

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        rebuilt = build_keras_model(model.input_shape[1:], lrn=model_lrn_flavor(model),
                                    preprocessing=pixel_scaling_config(model), widths=model_widths(model))
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _convert_in_child(path: str, shape: tuple, lrn: str | None, xml: str) -> None:
    """Convert in a child process on Keras' TensorFlow backend (the active backend is another)."""
    if _dist_version("tensorflow") is None and _dist_version("tensorflow-cpu") is None:
        raise EngineUnavailableError("Converting a model for OpenVINO needs TensorFlow (the conversion traces the "
                                     "Keras model on its TensorFlow backend); install tensorflow or use "
                                     f"engine='keras'. Received: model_load_path={path!r}")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "gamornet.engines", path, ",".join(map(str, shape)), lrn or "", xml]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"Converting {path} for OpenVINO failed: {lines[-1] if lines else proc.returncode}")


def converted_model(path, input_shape, lrn: str | None = None, progress: bool = True, source: str | None = None):
    """The ``model.xml`` of the stored conversion of a model file, converting it first if needed.

    A stored conversion whose files no longer match the checksums recorded
    when they were written is converted again, with a warning.  Converting
    holds the store's lock; afterwards the store is tidied and pruned (see
    :mod:`gamornet.openvino_backend.store`).

    Returns
    -------
    pathlib.Path or openvino.Model
        The stored ``model.xml``; the converted model itself where the cache
        cannot be written (with a warning).
    """
    from gamornet.openvino_backend import store

    path, shape = os.fspath(path), check_input_shape(input_shape)
    root = openvino_cache_root()
    description = conversion_description(path, shape, lrn)
    found = store.find_entry(root, description)
    if found is not None:
        return found
    try:
        lock = store.conversion_lock(root)
        lock.acquire()
    except OSError as exc:
        warnings.warn(f"Cannot store models converted for OpenVINO in {root} ({exc}); converting {source or path} "
                      "in memory, again in every run. Set GAMORNET_HOME to a writable directory.", stacklevel=3)
        return _in_memory(path, shape, lrn)
    try:
        found = store.find_entry(root, description, warn=False)  # stored by another process meanwhile?
        if found is None:
            if progress:
                print(f"Converting {source or path} for OpenVINO (once; stored in {root})", file=sys.stderr,
                      flush=True)
            found = store.save_entry(root, description, _saver(path, shape, lrn))
            store.prune_entries(root, description)
    finally:
        lock.release()
    return found


def _in_memory(path: str, shape: tuple, lrn: str | None):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise EngineUnavailableError(f"Converting a model for OpenVINO on the {keras.backend.backend()} backend of "
                                     f"Keras needs a writable cache directory. Received: model_load_path={path!r}")
    from gamornet.keras_backend.model import load_keras_model

    return convert_keras_model(load_keras_model(path, shape, lrn=lrn))


def _openvino_forward(path: str, shape: tuple, lrn, precision: str, reuse: bool, source: str, progress: bool):
    from gamornet.openvino_backend import runtime, store

    model = converted_model(path, shape, lrn, progress, source)
    if not isinstance(model, os.PathLike):
        return runtime.compile_forward(model, precision, source)
    try:
        return runtime.load_forward(model, precision, reuse=reuse, source=source)
    except RuntimeError as exc:  # e.g. written by another OpenVINO version under the same key: convert again
        warnings.warn(f"The stored OpenVINO conversion {model.parent} could not be read ({exc}); converting "
                      f"{source} again.", stacklevel=3)
        store.remove_entry(model.parent)
        return runtime.load_forward(converted_model(path, shape, lrn, progress, source), precision, reuse=reuse,
                                    source=source)


def _main(argv: list[str]) -> int:
    """``python -m gamornet.engines MODEL H,W,C LRN XML``: convert MODEL and save it as XML (used by a child)."""
    path, shape, lrn, xml = argv
    import keras

    from gamornet.keras_backend.model import load_keras_model
    from gamornet.openvino_backend.runtime import import_openvino

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"KERAS_BACKEND must be tensorflow here, not {keras.backend.backend()}")
    model = load_keras_model(path, tuple(int(n) for n in shape.split(",")), lrn=lrn or None)
    import_openvino().save_model(convert_keras_model(model), xml, compress_to_fp16=False)
    return 0


if __name__ == "__main__":  # pragma: no cover - run by _convert_in_child
    sys.exit(_main(sys.argv[1:]))
