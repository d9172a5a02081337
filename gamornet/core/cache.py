"""Models kept between calls, so repeated predictions with one file load it once.

Both backends keep their loaded models in a :class:`ModelCache`, keyed by
the model file's fingerprint (:func:`gamornet.weights.paths.fingerprint`:
path, size and modification time, so a changed file is loaded again) and
the settings the model was built with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["ModelCache"]


class ModelCache:
    """A thread-safe least-recently-used store of loaded models.

    Parameters
    ----------
    size : int
        Models kept; the least recently used is dropped beyond it.
    close : callable, optional
        Called with each model dropped (e.g. to close a TensorFlow session).
    """

    def __init__(self, size: int, close: Callable[[Any], None] | None = None):
        self.size, self._close = size, close
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        """The model stored under ``key`` (marked most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, model) -> None:
        """Store ``model`` under ``key``, dropping the least recently used beyond :attr:`size`."""
        with self._lock:
            self._items[key] = model
            self._items.move_to_end(key)
            dropped = []
            while len(self._items) > self.size:
                dropped.append(self._items.popitem(last=False)[1])
        self._drop(dropped)

    def clear(self) -> None:
        """Forget (and close) every stored model."""
        with self._lock:
            dropped = list(self._items.values())
            self._items.clear()
        self._drop(dropped)

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, models: list) -> None:
        if self._close is not None:
            for model in models:
                self._close(model)
