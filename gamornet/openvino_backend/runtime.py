"""The OpenVINO runtime: compiled models, told their precision explicitly, run with one inference request each.

Precision
    Every model is compiled with ``INFERENCE_PRECISION_HINT`` set: ``f32``
    for ``"float32"``, ``bf16`` for ``"bfloat16"`` (left alone, OpenVINO
    picks bfloat16 by itself on CPUs that have it).  A CPU without native
    bfloat16 computes a ``bf16`` request in float32, silently;
    :attr:`OpenVINOForward.precision` reads back the precision the compiled
    model actually uses.

One calling style
    Each :class:`OpenVINOForward` compiles its own model and runs every
    batch through its own inference requests (one per stream: one with the
    default latency hint), always copying the batch in
    (``share_inputs=False``) and the probabilities out.  With OpenVINO
    2026.4, a zero-copy call (``CompiledModel.__call__``) followed by a
    copying call on another request of the same dynamic-batch model can
    write into the first call's input array; requests that all copy never
    do.

Threads
    The CPU plugin's own defaults pin its threads to cores and split work
    statically between them; when other processes share the cores (a
    laptop, a login node, a shared cluster node), a pinned thread waits for
    its core and the others wait for it.  Models are compiled with threads
    not pinned and work shared out dynamically (:data:`THREADING`).

Telemetry
    OpenVINO's Python package sends usage events (a forked process posting
    to Google Analytics) when it is imported and on every conversion,
    unless the user opted out (``opt_in_out --opt_out``) or the process
    runs in CI.  GaMorNet imports OpenVINO and converts models inside
    :func:`telemetry_declined`, which sets ``CI=true`` for the duration of
    that import or conversion only (OpenVINO then declines the events) and
    restores the variable afterwards.  Set ``GAMORNET_OPENVINO_TELEMETRY=1``
    to leave the decision to OpenVINO's own setting.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gamornet.core.cache import ModelCache

__all__ = ["TELEMETRY_VARIABLE", "OV_PRECISIONS", "PERFORMANCE_HINT", "THREADING", "telemetry_declined",
           "import_openvino", "core", "native_bfloat16", "compile_options", "OpenVINOForward", "load_forward",
           "compile_forward", "clear_forward_cache", "openvino_version"]

#: Set to 1 to leave OpenVINO's telemetry to its own setting instead of declining it.
TELEMETRY_VARIABLE = "GAMORNET_OPENVINO_TELEMETRY"
#: GaMorNet's precision names -> OpenVINO's ``INFERENCE_PRECISION_HINT``.
OV_PRECISIONS: dict[str, str] = {"float32": "f32", "bfloat16": "bf16"}
_FROM_OV = {"f32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "f16": "float16",
            "float16": "float16"}

#: OpenVINO's performance hint used by :func:`compile_forward` (see :func:`compile_options`).
PERFORMANCE_HINT = "LATENCY"
#: Threading properties of every compiled model: no pinning, dynamic work sharing.
THREADING: dict = {"ENABLE_CPU_PINNING": False, "TBB_PARTITIONER": "AUTO"}
_SUPPORTED: frozenset[str] | None = None

_ENVIRON_LOCK = threading.Lock()
_CORE_LOCK = threading.Lock()
_CORE = None


@contextlib.contextmanager
def telemetry_declined() -> Iterator[None]:
    """Run the block with OpenVINO's telemetry declined (``CI=true`` inside, restored after).

    Does nothing when ``GAMORNET_OPENVINO_TELEMETRY`` is 1 / true / yes / on.
    """
    if os.environ.get(TELEMETRY_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        yield
        return
    with _ENVIRON_LOCK:
        previous = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = previous


def import_openvino():
    """The ``openvino`` module, imported (the first time) with its telemetry declined."""
    module = sys.modules.get("openvino")
    if module is not None and hasattr(module, "Core"):
        return module
    with telemetry_declined():
        import openvino

    return openvino


def openvino_version() -> str:
    """OpenVINO's full version string (e.g. ``2026.4.1-22982-...``)."""
    return import_openvino().get_version()


def core():
    """The process's ``openvino.Core`` (created once)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = import_openvino().Core()
        return _CORE


def native_bfloat16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively here (``BF16`` among its capabilities)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_options(precision: str, hint: str = PERFORMANCE_HINT) -> dict:
    """The CPU plugin's configuration for ``precision`` (``"float32"`` or ``"bfloat16"``).

    - ``INFERENCE_PRECISION_HINT``: always given.
    - ``PERFORMANCE_HINT``: ``hint``; ``"LATENCY"`` (the default here)
      runs each batch as one stream on every core, ``"THROUGHPUT"`` makes
      several streams of fewer threads, between which
      :class:`OpenVINOForward` splits every batch.
    - :data:`THREADING`: threads not pinned to cores, work shared out
      dynamically (OpenVINO's own defaults pin threads and split work
      statically, which loses when other processes share the cores; see the
      performance page of the documentation).  Left out where the
      installed OpenVINO does not know a property.
    """
    if precision not in OV_PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(OV_PRECISIONS)}. Received: precision={precision!r}")
    if hint not in ("THROUGHPUT", "LATENCY"):
        raise ValueError(f"`hint` must be 'THROUGHPUT' or 'LATENCY'. Received: hint={hint!r}")
    known = _supported_properties()
    threading_options = {key: value for key, value in THREADING.items() if key in known}
    return {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision], "PERFORMANCE_HINT": hint, **threading_options}


def _supported_properties() -> frozenset[str]:
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = frozenset(core().get_property("CPU", "SUPPORTED_PROPERTIES"))
    return _SUPPORTED


def _precision_name(value) -> str:
    """GaMorNet's name of an OpenVINO element type (``<Type: 'float32'>``, ``"f32"`` ...)."""
    text = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _FROM_OV.get(text.lower(), text.lower())


class OpenVINOForward:
    """A converted model's forward pass on the CPU: ``forward(batch)`` -> probabilities ``(b, 3)`` float32.

    Parameters
    ----------
    compiled : openvino.CompiledModel
        The model, compiled with :func:`compile_options`.
    requested : str
        The precision asked for (``"float32"`` or ``"bfloat16"``).
    source : str
        What the model was converted from (for messages).

    Attributes
    ----------
    engine : str
        ``"openvino"``.
    precision : str
        The precision the compiled model computes in (read back from it:
        ``"float32"`` where a ``"bfloat16"`` request fell back).
    requested_precision : str
    threads : int
        Threads OpenVINO runs on (all streams together).
    streams : int
        Parts a batch is split into, each run by one inference request on
        one stream of the compiled model, all at once.
    """

    engine = "openvino"

    def __init__(self, compiled, requested: str, source: str = ""):
        self.compiled, self.requested_precision, self.source = compiled, requested, source
        self.precision = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = max(1, int(compiled.get_property("NUM_STREAMS")))
        self._requests = [compiled.create_infer_request() for _ in range(self.streams)]
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of ``batch``: rows ``[k * m, (k + 1) * m)`` go to request ``k``, ``m = ceil(b / streams)``.

        The split depends only on the batch size, so an image at a given
        row of a batch of a given size always meets the same operations.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = batch.shape[0]
        size = max(1, -(-n // self.streams))
        with self._lock:  # calls from several threads take turns
            running = []
            for request, start in zip(self._requests, range(0, n, size)):
                request.start_async({0: batch[start:start + size]}, share_inputs=False)  # copies the part in
                running.append(request)
            for request in running:
                request.wait()
            parts = [np.array(r.get_output_tensor(0).data, dtype=np.float32, copy=True) for r in running]
        return np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)

    def sample(self, batch: np.ndarray) -> np.ndarray:
        """Monte-Carlo dropout is not available: the converted model holds no dropout."""
        raise RuntimeError("Monte-Carlo dropout needs engine='keras': a model converted for OpenVINO holds no "
                           "dropout. Received: engine='openvino'")

    def reseed(self, seed: int) -> None:
        """See :meth:`sample`."""
        self.sample(np.zeros((0,), np.float32))


def compile_forward(model, precision: str = "float32", source: str = "", hint: str = PERFORMANCE_HINT
                    ) -> OpenVINOForward:
    """Compile an ``openvino.Model`` (or the path of its ``.xml``) for the CPU in ``precision``."""
    compiled = core().compile_model(model if not isinstance(model, Path) else str(model), "CPU",
                                    compile_options(precision, hint))
    return OpenVINOForward(compiled, precision, source)


#: Compiled models kept for reuse by :func:`load_forward` (the two most recently used).
_FORWARDS = ModelCache(2)


def clear_forward_cache() -> None:
    """Forget the compiled models kept for reuse by :func:`load_forward`."""
    _FORWARDS.clear()


def load_forward(xml_path, precision: str = "float32", *, reuse: bool = True, source: str = "") -> OpenVINOForward:
    """Read and compile a converted model (``model.xml`` with its ``model.bin`` beside it).

    Parameters
    ----------
    xml_path : str or os.PathLike
        The model's ``.xml``; the folder it is in never changes once written
        (see :mod:`gamornet.openvino_backend.store`).
    precision : {"float32", "bfloat16"}
        Precision asked for (``INFERENCE_PRECISION_HINT``).
    reuse : bool
        Reuse the compiled model of an earlier call with the same file and precision.
    source : str
        What the model was converted from (for messages).

    Raises
    ------
    RuntimeError
        If OpenVINO cannot read or compile the files.
    """
    path = os.path.abspath(os.fspath(xml_path))
    info = os.stat(path)
    key = (path, info.st_mtime_ns, info.st_size, precision)
    forward = _FORWARDS.get(key) if reuse else None
    if forward is None:
        forward = compile_forward(core().read_model(path), precision, source)
        if reuse:
            _FORWARDS.put(key, forward)
    return forward
