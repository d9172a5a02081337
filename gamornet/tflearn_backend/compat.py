"""Import TFLearn 0.5.0 on TensorFlow 2 without side effects, and build its graphs safely.

TFLearn 0.5.0 does not import on a current stack as released.  Three small
fixes are applied just before the first import:

1. ``tensorflow.python.util.nest.is_sequence`` (removed in TF 2.13) is given
   back as an alias of ``nest.is_nested``, the same function.
2. ``PIL.Image.ANTIALIAS`` (removed in Pillow 10), used as a default
   argument, is given back as an alias of ``PIL.Image.LANCZOS``.
3. ``tflearn/__init__.py`` calls ``tf.compat.v1.disable_v2_behavior()``, which
   would turn eager execution off for the whole process and break every later
   Keras 3 call.  The function is replaced by a no-op on the module object
   TFLearn uses (``import tensorflow.compat.v1``) during the import and put
   back afterwards.  Eager mode is never turned off.

Because eager/v2 behaviour stays on, tensor shapes index to ``int`` / ``None``
rather than ``Dimension`` objects; TFLearn's one helper relying on
``Dimension.value`` (``helpers.trainer.get_current_batch_size``, used when
validating during ``fit``) is replaced by a version accepting both.

TFLearn networks are then built, one per call, inside :func:`building_graph`:
a fresh :class:`tf.Graph`, with resource variables disabled while building
(TFLearn's optimiser code needs reference variables) and re-enabled after.
That switch is process-wide, so building is serialised by a lock.

Nothing here imports TensorFlow or TFLearn at module import time.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["import_tflearn", "import_tf1", "building_graph", "BUILD_LOCK"]

#: Serialises TFLearn graph building (the resource-variable switch is process-wide).
BUILD_LOCK = threading.RLock()

_IMPORT_LOCK = threading.Lock()


def _patch_nest() -> None:
    from tensorflow.python.util import nest

    if not hasattr(nest, "is_sequence"):
        nest.is_sequence = nest.is_nested


def _patch_pillow() -> None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of TFLearn
        return
    if not hasattr(Image, "ANTIALIAS"):
        Image.ANTIALIAS = Image.LANCZOS


def import_tf1() -> ModuleType:
    """``tensorflow.compat.v1``, the module object TFLearn itself uses."""
    return importlib.import_module("tensorflow.compat.v1")


def import_tflearn() -> ModuleType:
    """Import TFLearn with the compatibility fixes; eager mode stays on.

    Returns
    -------
    module
        The ``tflearn`` package.

    Raises
    ------
    ImportError
        If TFLearn (or TensorFlow) is not installed.
    """
    import sys

    module = sys.modules.get("tflearn")
    if module is not None and hasattr(module, "DNN"):
        return module
    with _IMPORT_LOCK:
        module = sys.modules.get("tflearn")
        if module is not None and hasattr(module, "DNN"):
            return module
        try:
            tf1 = import_tf1()
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"The TFLearn functions of gamornet need TensorFlow: {exc}") from exc
        _patch_nest()
        _patch_pillow()
        original = tf1.disable_v2_behavior
        tf1.disable_v2_behavior = _keep_v2_behavior
        try:
            module = importlib.import_module("tflearn")
        except ImportError as exc:
            raise ImportError(
                f"The TFLearn functions of gamornet need TFLearn 0.5.0 (pip install tflearn==0.5.0): {exc}"
            ) from exc
        finally:
            tf1.disable_v2_behavior = original
        _patch_trainer(module)
    return module


def _patch_trainer(tflearn: ModuleType) -> None:
    trainer = importlib.import_module("tflearn.helpers.trainer")
    if getattr(trainer.get_current_batch_size, "_gamornet", False):
        return

    def get_current_batch_size(feed_batch, dataflow):
        # Size of the first fed tensor whose batch dimension is unknown.
        for placeholder, value in feed_batch.items():
            first = placeholder.get_shape()[0]
            if getattr(first, "value", first) is None:
                return len(value) if isinstance(value, list) else int(value.shape[0])
        return dataflow.batch_size

    get_current_batch_size._gamornet = True
    trainer.get_current_batch_size = get_current_batch_size


def _keep_v2_behavior() -> None:
    """Stand-in for ``disable_v2_behavior`` while TFLearn is imported: does nothing."""


@contextlib.contextmanager
def building_graph(graph: Any = None) -> Iterator[Any]:
    """Context in which a TFLearn network is built.

    Makes ``graph`` (a new :class:`tf.Graph` when None) the default graph,
    disables resource variables for the duration and restores the previous
    setting afterwards, holding :data:`BUILD_LOCK` throughout.  TFLearn is
    imported (with the fixes) on first use.

    Parameters
    ----------
    graph : tf.Graph, optional
        Graph to build in.

    Yields
    ------
    tf.Graph
        The graph being built.
    """
    import_tflearn()
    tf1 = import_tf1()
    with BUILD_LOCK:
        if graph is None:
            graph = tf1.Graph()
        was_enabled = tf1.resource_variables_enabled()
        tf1.disable_resource_variables()
        try:
            with graph.as_default():
                yield graph
        finally:
            if was_enabled:
                tf1.enable_resource_variables()
