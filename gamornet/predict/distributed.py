"""Prediction on a Dask cluster: the chunks of :func:`gamornet.predict_files` as tasks of ``distributed``.

``predict_files(..., client=client)`` (``gamornet predict ... --workers N`` or
``--scheduler ADDRESS``) keeps in the calling process everything that decides
the result, exactly as without a cluster: listing and validating the images,
the output lock, the chunk folder's manifest, the run digest and the table.
Only the chunks become tasks (:func:`run_on_cluster`):

- What the workers get is one explicit, picklable description of the run
  (:class:`ClusterRun`): the forward pass's :class:`~gamornet.predict.passes.ForwardSpec`
  (the model as an absolute path with its files' fingerprint, or a
  published name; flavour, shape, engine, precision, batch size, MC samples,
  seed), the image reader's settings, the absolute chunk folder and the run
  id.  Every path a worker opens is resolved on the client, so workers
  started in any directory read the same files.
- One task per missing chunk (``chunk_size`` contiguous images of the sorted
  list, as in one process; :func:`chunk_task`).  A task carries the chunk's
  number, its absolute file names and positions: never pixels, never the
  model.  A bounded number of tasks is in flight (twice the cluster's
  threads), so the scheduler holds little however long the catalogue.
- A worker process builds the model's forward pass on its first task and
  keeps it for the next ones, in a per-process cache keyed by the run's
  ``ForwardSpec``: a model file replaced at the same path (another
  fingerprint) is loaded again, and a task refuses a model file that changed
  after the run started.  The model file is read from the file system the
  workers share.  Before TensorFlow starts in the worker, its intra- and
  inter-op thread pools are set to the worker's thread count (Dask's nanny
  sets ``OMP_NUM_THREADS=1``, which TensorFlow's own pools ignore).  This is
  done by the first task rather than a worker plugin: a plugin's ``setup``
  runs in the worker's event loop, which loading TensorFlow and a model
  (seconds) would block.
- The worker reads its own files, runs every image at the row of the batch it
  has in a single-process run (:class:`gamornet.predict.passes.ForwardPass`),
  and writes the chunk atomically to ``<output>.chunks/``
  (:func:`gamornet.predict.chunks.write_chunk`), after checking that the
  manifest still names its run: a task left running by an earlier, killed
  run never writes into a new run's folder.  Without ``output`` the chunk's
  arrays (ids and probabilities) go back to the client instead.
- The client follows the tasks and shows one progress bar for the whole
  cluster.

Faults: a worker that dies has its tasks run again elsewhere by Dask (a task
whose workers die ``distributed.scheduler.allowed-failures`` times ends the
run with :class:`ChunkTaskError`).  A lost scheduler ends the run with
:class:`SchedulerLostError`, and a cluster without workers for
``worker_timeout`` seconds (none joined, or the last one was lost) with
:class:`NoWorkersError`; the complete chunks stay on disk and
``resume=True`` (``--resume``) continues, with any cluster or none.  A
scheduler address where nothing listens is reported at once
(:class:`SchedulerUnreachableError`, within :data:`CONNECT_TIMEOUT` seconds).
:func:`cluster_client` silences Dask's own log lines (tracebacks of a lost
connection, warnings of tasks cancelled by Ctrl-C), and the worker processes
it starts ignore Ctrl-C and discard their output (:func:`dask_setup`),
unless asked not to (``gamornet --debug``), so that an error or an
interruption is one line.

This module imports ``distributed`` only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from gamornet.core.progress import progress_bar
from gamornet.core.validation import check_positive_int
from gamornet.predict.chunks import ChunkStore, write_chunk
from gamornet.predict.images import ImageReader
from gamornet.predict.inputs import ImageRef, InputSource
from gamornet.predict.passes import ChunkPlan, ForwardPass, ForwardSpec, aligned_spans, run_chunk
from gamornet.published.models import resolve_model_path

__all__ = [
    "DaskMissingError",
    "SchedulerLostError",
    "SchedulerUnreachableError",
    "NoWorkersError",
    "ChunkTaskError",
    "ClusterRun",
    "ChunkTask",
    "check_cluster_arguments",
    "check_scheduler",
    "chunk_task",
    "cluster_client",
    "quiet_dask_logs",
    "run_on_cluster",
    "predict_chunk",
]

_INSTALL = "pip install 'gamornet[dask]'"
#: Seconds to wait for a scheduler to answer (connecting, and reconnecting after a lost connection).
CONNECT_TIMEOUT = 5.0


class DaskMissingError(ImportError, RuntimeError):
    """The ``distributed`` package is not installed."""


class SchedulerLostError(RuntimeError):
    """The connection to the Dask scheduler was lost during a run (the complete chunks are kept)."""


class SchedulerUnreachableError(RuntimeError):
    """No Dask scheduler answered at the address given."""


class NoWorkersError(RuntimeError):
    """The cluster had no worker for ``worker_timeout`` seconds during a run (the complete chunks are kept)."""


class ChunkTaskError(RuntimeError):
    """A chunk's task could not be completed: the workers running it kept dying."""


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise DaskMissingError(f"Prediction on a Dask cluster needs the `distributed` package ({_INSTALL}). "
                               f"Received: an import error ({exc})") from None
    return distributed


# ---------------------------------------------------------------- arguments and clients


def check_cluster_arguments(client, inputs, strategy) -> None:
    """Refuse, before any work, what a cluster run cannot do.

    Raises
    ------
    TypeError
        If ``client`` is not a ``distributed.Client``.
    ValueError
        For an in-memory array (its pixels would travel with every task), a
        ``tf.distribute`` strategy object (each worker uses its own devices),
        or a closed client.
    """
    distributed = _distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"`client` must be a distributed.Client. Received: client={client!r}")
    if isinstance(inputs, np.ndarray):
        raise ValueError("`client` needs image files (FITS, .npy) on a file system the workers see; an in-memory "
                         "array would be sent to the workers pixel by pixel. Save it with numpy.save and pass the "
                         f".npy path. Received: inputs=array of shape {inputs.shape}, client={client!r}")
    if not (strategy is None or (isinstance(strategy, str) and strategy == "auto")):
        raise ValueError("With `client`, `strategy` must be 'auto' or None: each worker process uses its own "
                         f"devices. Received: strategy={strategy!r}")
    if client.status not in ("running", "newly-created"):
        raise ValueError(f"`client` is not connected (status {client.status!r}). Received: client={client!r}")


#: A scheduler address: ``PROTOCOL://...`` or ``HOST:PORT``.
_ADDRESS = re.compile(r"[a-z][a-z0-9+.-]*://\S+|[\w.-]+:\d+", re.I)
#: The host and port of a TCP address (``tcp://HOST:PORT`` or ``HOST:PORT``; ``[IPv6]`` hosts too).
_TCP = re.compile(r"(?:tcp://)?\[?([^\[\]/]+?)\]?:(\d+)/?", re.I)


def check_scheduler(scheduler: str) -> str:
    """A scheduler given on the command line: an existing scheduler file, or an address such as ``tcp://host:8786``.

    Raises
    ------
    ValueError
        For anything else (a missing file, an empty string, a port outside 1..65535...).
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"`scheduler` must be a Dask scheduler address or scheduler file. Received: "
                         f"scheduler={scheduler!r}")
    if os.path.isfile(scheduler):
        return scheduler
    if not _ADDRESS.fullmatch(scheduler):
        raise ValueError("`scheduler` must be a Dask scheduler address (tcp://HOST:PORT) or an existing scheduler "
                         f"file (dask scheduler --scheduler-file FILE). Received: scheduler={scheduler!r}")
    port = re.search(r":(\d+)/?$", scheduler)
    if port is not None and not 1 <= int(port.group(1)) <= 65535:
        raise ValueError(f"`scheduler` must have a port in 1..65535. Received: scheduler={scheduler!r}")
    return scheduler


def _probe(scheduler: str) -> None:
    """Refuse at once a TCP scheduler address where nothing listens (Dask would retry until its timeout)."""
    address = scheduler
    if os.path.isfile(scheduler):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(scheduler) as f:
                address = json.load(f).get("address", "")
    match = _TCP.fullmatch(address)
    if match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise SchedulerUnreachableError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}. Received: "
                                        f"scheduler={scheduler!r}") from None


@contextlib.contextmanager
def quiet_dask_logs(quiet: bool = True) -> Iterator[None]:
    """Silence the loggers of ``distributed`` (and ``tornado``) for the block, so that errors stay one line.

    With ``quiet=False`` (``gamornet --debug``) nothing changes.
    """
    if not quiet:
        yield
        return
    names = ["distributed", "tornado"] + [name for name in list(logging.root.manager.loggerDict)
                                          if name.startswith(("distributed.", "tornado."))]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None,
                   quiet: bool = True) -> Iterator[object | None]:
    """A ``distributed.Client`` for the duration of the block, or None when neither argument is given.

    Parameters
    ----------
    scheduler : str, optional
        An existing cluster: its scheduler's address (``tcp://host:8786``) or
        a scheduler file written by ``dask scheduler --scheduler-file``.
    workers : int, optional
        Start a ``distributed.LocalCluster`` of this many worker processes,
        one thread each, on this machine (127.0.0.1), closed with the block.
    quiet : bool
        Silence Dask's own log messages (tracebacks of a lost connection,
        warnings of tasks cancelled by Ctrl-C) for the block, here and in the
        worker processes started here: errors are reported once, by the
        exception raised.  The worker processes started here also ignore
        Ctrl-C (SIGINT: this process answers it and closes the cluster) and
        discard their standard output and error (TensorFlow's start-up lines)
        once they are up (:func:`dask_setup`).

    Raises
    ------
    ValueError
        If both are given.
    SchedulerUnreachableError
        If no scheduler answers at ``scheduler`` within :data:`CONNECT_TIMEOUT` seconds.
    """
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ValueError(f"Give `scheduler` (an existing cluster) or `workers` (a cluster started here), not both. "
                         f"Received: scheduler={scheduler!r}, workers={workers!r}")
    distributed = _distributed()
    if workers is not None:
        workers = check_positive_int(workers, "workers")
        level = logging.CRITICAL + 1 if quiet else logging.WARNING
        preload = [__name__] if quiet else []  # dask_setup, in each worker process
        with quiet_dask_logs(quiet), distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                silence_logs=level, preload=preload) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    scheduler = check_scheduler(scheduler)
    with quiet_dask_logs(quiet):
        _probe(scheduler)
        where = {"scheduler_file": scheduler} if os.path.isfile(scheduler) else {"address": scheduler}
        try:
            client = distributed.Client(**where, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerUnreachableError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}. Received: "
                                            f"scheduler={scheduler!r}") from None
        with client:
            yield client


def dask_setup(worker=None) -> None:
    """Quiet a worker process started by :func:`cluster_client` (``quiet=True``); Dask calls it as the worker starts.

    The worker ignores SIGINT: Ctrl-C in a terminal reaches every process of
    the command, and the client alone answers it (one line) and closes the
    cluster, instead of each worker printing its own traceback.  Its standard
    output and error go to the null device: TensorFlow's start-up lines stay
    off the terminal, and nothing mixes with a table written to standard
    output.  The errors of its tasks still reach the client, as exceptions.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
    finally:
        os.close(null)


# ---------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class ClusterRun:
    """What every task of a run gets: one small, picklable description of the run, the same for all chunks.

    Attributes
    ----------
    forward : ForwardSpec
        The model (absolute path or published name, with its fingerprint)
        and every setting deciding the probabilities; the workers' model
        cache is keyed by it.
    reader : ImageReader
        How images are read (shape, HDU, crop / pad, NaN fill, skipping).
    chunk_dir : str or None
        Absolute path of the chunk folder (None: chunks go back to the client).
    run_id : str
        The run the chunks are written for (checked against the manifest).
    read_threads, prefetch : int
        Reader threads and batches read ahead, in each task.
    """

    forward: ForwardSpec
    reader: ImageReader
    chunk_dir: str | None
    run_id: str
    read_threads: int
    prefetch: int

    @classmethod
    def describe(cls, forward: ForwardSpec, reader: ImageReader, store: ChunkStore, read_threads: int,
                 prefetch: int) -> ClusterRun:
        """The description of a run writing to ``store`` (its folder made absolute here, on the client)."""
        directory = None if store.dir is None else os.path.abspath(store.dir)
        return cls(forward, reader, directory, store.run_id, read_threads, prefetch)


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """One chunk: its number, its image sources (file names, no data) and images (id, source, index, position)."""

    k: int
    sources: tuple
    images: tuple

    def refs(self) -> tuple[list[ImageRef], list[int]]:
        """The chunk's images as a worker reads them, and their positions in the whole run."""
        sources = [_attach(source) for source in self.sources]
        refs = [ImageRef(image_id, sources[s], index) for image_id, s, index, _ in self.images]
        return refs, [position for *_, position in self.images]


def _detach(source: InputSource) -> InputSource:
    """A source as sent to a worker: its absolute file name and layout, without a memory map of its data."""
    if source.data is not None:
        source = dataclasses.replace(source, data=None)
    if source.path is not None and not os.path.isabs(source.path):
        source = dataclasses.replace(source, path=os.path.abspath(source.path))
    return source


@functools.lru_cache(maxsize=32)
def _open_stack(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _attach(source: InputSource) -> InputSource:
    """A source as read by a worker: ``.npy`` stacks memory-mapped again (once per process and file version)."""
    if source.kind != "npy":
        return source
    info = os.stat(source.path)
    data = _open_stack(source.path, info.st_mtime_ns, info.st_size)
    if data.shape[1:] != tuple(source.image_shape) and data.shape != tuple(source.image_shape):
        raise RuntimeError(f"{source.path} changed during the run: its images are {data.shape}, they were listed as "
                           f"{source.n_images} x {source.image_shape}")
    return dataclasses.replace(source, data=data)


def chunk_task(k: int, plan: ChunkPlan, detached: dict) -> ChunkTask:
    """The task of chunk ``k`` of ``plan``: file names and positions, no pixels.

    ``detached`` caches the sources already prepared for sending (by ``id``),
    so that the chunks of one file share one description.
    """
    start, stop = plan.bounds(k)
    numbers: dict[int, int] = {}
    sources = []
    images = []
    rows: dict[int, list[int]] = {}  # catalogue sources: the rows of this chunk
    for ref, position in zip(plan.good[start:stop], plan.positions[start:stop]):
        key = id(ref.source)
        if key not in numbers:
            numbers[key] = len(sources)
            if key not in detached:
                detached[key] = _detach(ref.source)
            sources.append(detached[key])
        index = ref.index
        if ref.source.kind == "cutout":  # sent with its chunk's rows only, renumbered from 0
            index = len(rows.setdefault(key, []))
            rows[key].append(ref.index)
        images.append((ref.id, numbers[key], index, int(position)))
    for key, chunk_rows in rows.items():
        source = sources[numbers[key]]
        sources[numbers[key]] = dataclasses.replace(source, cutting=source.cutting.subset(chunk_rows),
                                                    n_images=len(chunk_rows))
    return ChunkTask(k, tuple(sources), tuple(images))


# ---------------------------------------------------------------- on a worker

#: Forward passes built in this process: spec -> (forward pass, lock held by MC-dropout chunks).
_FORWARD_PASSES: dict[ForwardSpec, tuple] = {}
_FORWARD_PASSES_LOCK = threading.Lock()
_KEEP_FORWARD_PASSES = 2


def _worker_threads() -> int | None:
    """Threads of the Dask worker running this code, or None outside a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", None)
    return int(getattr(state, "nthreads", None) or worker.nthreads)


def _set_tensorflow_threads(nthreads: int) -> None:
    """Size TensorFlow's thread pools to the worker's threads, if TensorFlow has not started in this process yet."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already started in this process: its pools stay as they are
        tf.config.threading.set_intra_op_parallelism_threads(nthreads)
        tf.config.threading.set_inter_op_parallelism_threads(nthreads)


def _worker_forward(spec: ForwardSpec) -> tuple[ForwardPass, threading.Lock]:
    """The forward pass of ``spec`` in this process, built on first use and kept (with its lock).

    Keyed by the whole spec, the model files' fingerprint included: a model
    file replaced at the same path is loaded again, never served from memory.
    """
    spec.check_unchanged()
    with _FORWARD_PASSES_LOCK:
        if spec not in _FORWARD_PASSES:
            nthreads = _worker_threads()
            if nthreads is not None:
                _set_tensorflow_threads(nthreads)
            while len(_FORWARD_PASSES) >= _KEEP_FORWARD_PASSES:
                _FORWARD_PASSES.pop(next(iter(_FORWARD_PASSES)))
            _FORWARD_PASSES[spec] = (ForwardPass(spec, strategy=None, progress=False), threading.Lock())
        return _FORWARD_PASSES[spec]


def predict_chunk(run: ClusterRun, task: ChunkTask) -> dict:
    """Run one chunk (on a worker): read its files, predict, and save it (or return its arrays without output).

    Returns
    -------
    dict
        ``k`` (chunk number), ``n`` (images), ``seconds`` (time in the
        task), and ``arrays`` when the run has no chunk folder.

    Raises
    ------
    gamornet.predict.chunks.StaleChunkError
        If the chunk folder now belongs to another run.
    RuntimeError
        If the model file is no longer the one the run started with.
    """
    started = time.perf_counter()
    forward, lock = _worker_forward(run.forward)
    refs, positions = task.refs()
    spans = aligned_spans(positions, 0, len(refs), forward.batch_size)
    rows = {ref.id: position % forward.batch_size for ref, position in zip(refs, positions)}
    batches = run.reader.batches(refs, spans, run.prefetch, run.read_threads)
    try:
        with lock if forward.mc_samples else contextlib.nullcontext():  # MC passes: one chunk at a time per model
            arrays = run_chunk(task.k, spans, batches, forward, rows, int_ids=False)
    finally:
        batches.close()
    result = {"k": task.k, "n": len(refs)}
    if run.chunk_dir is None:
        result["arrays"] = arrays
    else:
        write_chunk(run.chunk_dir, task.k, arrays, run.run_id)
    result["seconds"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- on the client


def _cluster_threads(client) -> int:
    try:
        return sum(client.nthreads().values())
    except (OSError, TimeoutError):
        return 0


class _Tasks:
    """The chunk tasks of a run in flight: a bounded number (twice the cluster's threads, at least 4)."""

    def __init__(self, client, run: ClusterRun, plan: ChunkPlan):
        self.client, self.run, self.pending = client, run, {}  # pending: key -> (future, chunk number)
        detached: dict = {}
        self._tasks = (chunk_task(k, plan, detached) for k in plan.todo)
        self._limit, self._checked = 4, -1e9

    def refill(self) -> None:
        """Submit tasks until the limit is reached or none is left."""
        now = time.monotonic()
        if now - self._checked > 10:
            self._limit, self._checked = max(4, 2 * _cluster_threads(self.client)), now
        while len(self.pending) < self._limit:
            task = next(self._tasks, None)
            if task is None:
                return
            key = f"gamornet-chunk-{self.run.run_id}-{task.k:06d}"
            future = self.client.submit(predict_chunk, self.run, task, key=key)
            self.pending[future.key] = (future, task.k)

    def wait(self, seconds: float) -> list[tuple[object, int]]:
        """The finished futures (with their chunk numbers), waiting at most ``seconds`` for one."""
        import asyncio

        from distributed import client as dask_client
        from distributed import wait

        # cancelled futures (a lost connection) are done too: their results raise the run's error
        cancelled = (asyncio.CancelledError, getattr(dask_client, "FuturesCancelledError", asyncio.CancelledError))
        futures = [future for future, _ in self.pending.values()]
        with contextlib.suppress(TimeoutError, *cancelled), self.client.as_current():  # wait() needs the client
            wait(futures, timeout=seconds, return_when="FIRST_COMPLETED")
        return [self.pending.pop(future.key) for future in futures if future.done()]

    def cancel(self) -> None:
        """Cancel the tasks still pending."""
        if self.pending:
            with contextlib.suppress(Exception):
                self.client.cancel([future for future, _ in self.pending.values()])


def _kept(store: ChunkStore, finished: int) -> str:
    if store.dir is None:
        return "the run had no output, so nothing is kept"
    with contextlib.suppress(OSError):  # also the chunks saved by workers whose results had not come back
        finished = max(finished, len(store.done()))
    if finished == 0:
        return "no chunk was complete"
    return (f"the {finished} complete chunk(s) are kept in {store.dir}: rerun with resume=True (--resume) to "
            "continue, on a cluster or in one process")


def _chunk_result(distributed, client, future, k: int, kept: Callable[[], str]) -> dict:
    """The result of chunk ``k``'s task, or the run's error (lost scheduler, dying workers, the task's own)."""
    try:
        return future.result()
    except distributed.client.FutureCancelledError as exc:
        if client.status != "running" or "connection" in str(exc):
            raise SchedulerLostError(f"lost the connection to the Dask scheduler {_address(client)} "
                                     f"{kept()}") from None
        raise ChunkTaskError(f"the task of chunk {k} was cancelled on the cluster ({exc}) {kept()}") from None
    except distributed.KilledWorker as exc:
        raise ChunkTaskError(f"chunk {k}: the workers running its task died repeatedly ({exc}; out of "
                             f"memory? See the workers' logs) {kept()}") from None
    finally:
        # the cluster forgets the task now: a failed task's error, kept by the client, has a traceback
        # holding this frame and so the future, which would otherwise keep the task on its worker
        with contextlib.suppress(Exception):
            future.release()


def run_on_cluster(client, run: ClusterRun, plan: ChunkPlan, store: ChunkStore, progress: bool,
                   on_chunk: Callable[[int, int], None] | None, *, worker_timeout: float = 60.0) -> None:
    """Predict the chunks ``plan.todo`` as tasks of ``client``'s cluster, saving each when complete.

    Called by :func:`gamornet.predict_files` inside its output lock, after
    the chunk folder's manifest is written.  Returns when every chunk is saved.

    Raises
    ------
    SchedulerLostError
        If the connection to the scheduler is lost.
    NoWorkersError
        If the cluster has had no worker for ``worker_timeout`` seconds.
    ChunkTaskError
        If a task's workers kept dying.
    Exception
        The error of a failed task (e.g. a bad image), as raised there.
    """
    distributed = _distributed()
    resolve_model_path(run.forward.model, run.forward.flavor, progress=progress)  # a published model: fetched once
    n_images = plan.n_todo_images()
    bar = progress_bar(n_images, progress, label=f"Predicting {n_images} images ({len(plan.todo)} chunks, Dask, "
                                                 f"{run.forward.choice.label})")
    finished, count = plan.n_chunks - len(plan.todo), 0
    tasks, seen_workers = _Tasks(client, run, plan), time.monotonic()
    done, future = [], None

    def kept() -> str:
        return f"after {finished} of {plan.n_chunks} chunks; {_kept(store, finished)}"

    try:
        tasks.refill()
        while tasks.pending:
            done = tasks.wait(min(1.0, worker_timeout / 2))
            if done or client.status != "running" or _cluster_threads(client):
                seen_workers = time.monotonic()
            elif time.monotonic() - seen_workers >= worker_timeout:
                raise NoWorkersError(f"the Dask scheduler {_address(client)} has had no workers for "
                                     f"{worker_timeout:g} s (none joined, or the last one was lost) {kept()}. "
                                     "Start workers, or give them longer with worker_timeout (--worker-timeout)")
            for future, k in done:
                result = _chunk_result(distributed, client, future, k, kept)
                if "arrays" in result:
                    store.save(result["k"], result["arrays"])
                finished += 1
                count += result["n"]
                bar.update(count)
                if on_chunk is not None:
                    on_chunk(finished, plan.n_chunks)
            tasks.refill()
    except OSError as exc:  # a task's error (a missing file...), or a closed connection, maybe not noticed yet
        closed = client.status != "running" or isinstance(exc, distributed.comm.CommClosedError)
        if not (closed and _scheduler_lost(client)):
            raise
        raise SchedulerLostError(f"lost the connection to the Dask scheduler {_address(client)} {kept()}") from None
    finally:
        tasks.cancel()
        # an error's traceback keeps this frame: drop its futures, so the workers can release their results
        tasks.pending.clear()
        done = future = None  # noqa: F841
    bar.finish()


def _scheduler_lost(client, wait: float = CONNECT_TIMEOUT) -> bool:
    """Whether ``client`` lost its scheduler: it says so, or the scheduler refuses connections, within ``wait`` s."""
    match = _TCP.fullmatch(_address(client))
    deadline = time.monotonic() + wait
    while client.status == "running":
        if match is not None:
            try:
                socket.create_connection((match.group(1), int(match.group(2))), timeout=CONNECT_TIMEOUT).close()
            except OSError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _address(client) -> str:
    with contextlib.suppress(Exception):
        return str(client.scheduler.address)
    return "(unknown address)"
