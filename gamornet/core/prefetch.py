"""Host work ahead of the model: batches prepared in a background thread while the current one runs.

:class:`Prefetch` iterates a source (a generator preparing batches: reading,
the NaN / inf check, padding, the float32 copy) in a thread of its own,
at most ``depth`` items ahead of the caller, so that host work overlaps the
model's forward pass.  Items come out in the source's order; an error the
source raises is raised to the caller, unchanged, when the caller reaches
the item it was preparing (never earlier items lost, never a hang); closing
it (or leaving its ``with`` block, Ctrl-C included) stops and joins the
thread.

:class:`BufferRing` hands out ``depth + 2`` pre-allocated arrays in turn:
while the caller holds item ``c``, the queue holds at most ``c + 1 ... c +
depth`` and the thread fills ``c + depth + 1``, so a buffer is never
written while the caller may still read it (it is done with an item once it
asks for the next one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Prefetch", "BufferRing", "DEFAULT_DEPTH"]

#: Batches prepared ahead of the one running.
DEFAULT_DEPTH = 2

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"
#: How often a producer waiting on a full queue looks whether it was stopped (seconds).
_POLL_S = 0.05


class Prefetch(Iterator[T], Generic[T]):
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the caller.

    Parameters
    ----------
    source : iterable
        Prepares the items (runs in the background thread only).
    depth : int
        Items kept ready (the queue's bound); memory holds at most
        ``depth + 2`` items at once (one the caller holds, one in the making).
    name : str
        Name of the thread.

    Notes
    -----
    A generator ``source`` stopped early is closed in its own thread, so its
    ``finally`` blocks run there.  The thread is a daemon: an interpreter
    exiting never waits for it.
    """

    def __init__(self, source: Iterable[T], depth: int = DEFAULT_DEPTH, name: str = "gamornet-prefetch"):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"`depth` must be a positive integer. Received: depth={depth!r}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), name=name, daemon=True)
        self._thread.start()

    def _put(self, entry: tuple) -> bool:
        """Queue ``entry`` once there is room; False if stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the caller, raised there
            self._put((_ERROR, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread (it finishes the item in the making) and wait for it; idempotent."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(_POLL_S)

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BufferRing:
    """``count`` reusable arrays handed out in turn (each kept until a batch of another shape needs its place).

    With a :class:`Prefetch` of depth ``d``, ``count = d + 2`` buffers are
    never overwritten while in use (see the module's notes).

    Parameters
    ----------
    count : int
        Buffers in the ring.
    dtype : numpy dtype
        Their element type.
    """

    def __init__(self, count: int, dtype=np.float32):
        self._buffers: list[np.ndarray | None] = [None] * max(1, int(count))
        self._dtype = np.dtype(dtype)
        self._next = 0

    def take(self, shape: tuple) -> np.ndarray:
        """The next buffer of the ring, of ``shape`` (uninitialised: the caller writes every element)."""
        i = self._next
        self._next = (i + 1) % len(self._buffers)
        buffer = self._buffers[i]
        if buffer is None or buffer.shape != tuple(shape):
            buffer = self._buffers[i] = np.empty(shape, self._dtype)
        return buffer
