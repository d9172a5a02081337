"""Prediction on a Dask cluster: the chunks of :func:`gamornet.predict_files` as tasks of ``distributed``.

``predict_files(..., client=client)`` (``gamornet predict ... --workers N`` or
``--scheduler ADDRESS``) keeps in the calling process everything that decides
the result, exactly as without a cluster: listing and validating the images,
the output lock, the chunk folder's manifest, the run digest and the table.
Only the chunks become tasks (:func:`run_on_cluster`):

- One task per missing chunk (``chunk_size`` contiguous images of the sorted
  list, as in one process).  A task carries the chunk's number, its file
  names and positions, and the run's settings: never pixels, never the model.
  A bounded number of tasks is in flight (twice the cluster's threads), so
  the scheduler holds little however long the catalogue.
- A worker process builds the model's forward pass on its first task and
  keeps it for the next ones (a per-process cache keyed by the model and the
  settings, above the backends' own cache by file fingerprint); the model file
  is read from the file system the workers share.  Before TensorFlow starts in
  the worker, its intra- and inter-op thread pools are set to the worker's
  thread count (Dask's nanny sets ``OMP_NUM_THREADS=1``, which TensorFlow's
  own pools ignore).  This is done by the first task rather than a worker
  plugin: a plugin's ``setup`` runs in the worker's event loop, which loading
  TensorFlow and a model (seconds) would block.
- The worker reads its own files, runs every image at the row of the batch it
  has in a single-process run (:class:`gamornet.predict.files._Backend`), and
  writes the chunk atomically to ``<output>.chunks/``
  (:func:`gamornet.predict.chunks.write_chunk`), after checking that the
  manifest still names its run: a task left running by an earlier, killed run
  never writes into a new run's folder.  Without ``output`` the chunk's
  arrays (ids and probabilities) go back to the client instead.
- The client follows the tasks with :func:`distributed.as_completed` and one
  progress bar for the whole cluster.

Faults: a worker that dies has its tasks run again elsewhere by Dask (a task
whose workers die ``distributed.scheduler.allowed-failures`` times ends the
run with :class:`ChunkTaskError`).  A lost scheduler ends the run with
:class:`SchedulerLostError`; the complete chunks stay on disk and
``resume=True`` (``--resume``) continues, with any cluster or none.

This module imports ``distributed`` only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from gamornet.core.progress import progress_bar
from gamornet.core.validation import check_positive_int
from gamornet.predict.chunks import ChunkStore, write_chunk
from gamornet.predict.files import _aligned_spans, _predict_chunk
from gamornet.predict.images import ImageReader
from gamornet.predict.inputs import ImageRef, InputSource
from gamornet.published.models import resolve_model_path

__all__ = [
    "DaskMissingError",
    "SchedulerLostError",
    "SchedulerUnreachableError",
    "ChunkTaskError",
    "check_cluster_arguments",
    "check_scheduler",
    "cluster_client",
    "run_on_cluster",
    "predict_chunk",
]

_INSTALL = "pip install 'gamornet[dask]'"


class DaskMissingError(ImportError, RuntimeError):
    """The ``distributed`` package is not installed."""


class SchedulerLostError(RuntimeError):
    """The connection to the Dask scheduler was lost during a run (the complete chunks are kept)."""


class SchedulerUnreachableError(RuntimeError):
    """No Dask scheduler answered at the address given."""


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


def check_scheduler(scheduler: str) -> str:
    """A scheduler given on the command line: an existing scheduler file, or an address such as ``tcp://host:8786``.

    Raises
    ------
    ValueError
        For anything else (a missing file, an empty string...).
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"`scheduler` must be a Dask scheduler address or scheduler file. Received: "
                         f"scheduler={scheduler!r}")
    if os.path.isfile(scheduler):
        return scheduler
    if not _ADDRESS.fullmatch(scheduler):
        raise ValueError("`scheduler` must be a Dask scheduler address (tcp://HOST:PORT) or an existing scheduler "
                         f"file (dask scheduler --scheduler-file FILE). Received: scheduler={scheduler!r}")
    return scheduler


@contextlib.contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[object | None]:
    """A ``distributed.Client`` for the duration of the block, or None when neither argument is given.

    Parameters
    ----------
    scheduler : str, optional
        An existing cluster: its scheduler's address (``tcp://host:8786``) or
        a scheduler file written by ``dask scheduler --scheduler-file``.
    workers : int, optional
        Start a ``distributed.LocalCluster`` of this many worker processes,
        one thread each, on this machine (127.0.0.1), closed with the block.

    Raises
    ------
    ValueError
        If both are given.
    SchedulerUnreachableError
        If no scheduler answers at ``scheduler``.
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
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    scheduler = check_scheduler(scheduler)
    where = {"scheduler_file": scheduler} if os.path.isfile(scheduler) else {"address": scheduler}
    try:
        client = distributed.Client(**where, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SchedulerUnreachableError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}. Received: "
                                        f"scheduler={scheduler!r}") from None
    with client:
        yield client


# ---------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every task of a run needs: small, picklable, the same for all chunks."""

    make_backend: functools.partial
    reader: ImageReader
    directory: str | None
    run_id: str
    read_threads: int
    prefetch: int


@dataclasses.dataclass(frozen=True)
class _ChunkTask:
    """One chunk: its number, its image sources (file names, no data) and images (id, source, index, position)."""

    k: int
    sources: tuple
    images: tuple

    def refs(self) -> tuple[list[ImageRef], list[int]]:
        sources = [_attach(source) for source in self.sources]
        refs = [ImageRef(image_id, sources[s], index) for image_id, s, index, _ in self.images]
        return refs, [position for *_, position in self.images]


def _detach(source: InputSource) -> InputSource:
    """A source as sent to a worker: its file name and layout, without a memory map of its data."""
    return source if source.data is None else dataclasses.replace(source, data=None)


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


def _chunk_task(k: int, good: Sequence[ImageRef], positions: Sequence[int], chunk_size: int,
                detached: dict) -> _ChunkTask:
    start, stop = k * chunk_size, min((k + 1) * chunk_size, len(good))
    numbers: dict[int, int] = {}
    sources = []
    images = []
    for ref, position in zip(good[start:stop], positions[start:stop]):
        key = id(ref.source)
        if key not in numbers:
            numbers[key] = len(sources)
            if key not in detached:
                detached[key] = _detach(ref.source)
            sources.append(detached[key])
        images.append((ref.id, numbers[key], ref.index, int(position)))
    return _ChunkTask(k, tuple(sources), tuple(images))


# ---------------------------------------------------------------- on a worker

#: Forward passes built in this process: key -> (backend, lock held by MC-dropout chunks).
_BACKENDS: dict[str, tuple] = {}
_BACKENDS_LOCK = threading.Lock()
_KEEP_BACKENDS = 2


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


def _worker_backend(make_backend: functools.partial) -> tuple:
    """The forward pass of ``make_backend`` in this process, built on first use and kept (with its lock)."""
    key = repr(make_backend)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            nthreads = _worker_threads()
            if nthreads is not None:
                _set_tensorflow_threads(nthreads)
            while len(_BACKENDS) >= _KEEP_BACKENDS:
                _BACKENDS.pop(next(iter(_BACKENDS)))
            _BACKENDS[key] = (make_backend(strategy=None, progress=False), threading.Lock())
        return _BACKENDS[key]


def predict_chunk(job: _Job, task: _ChunkTask) -> dict:
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
    """
    started = time.perf_counter()
    backend, lock = _worker_backend(job.make_backend)
    refs, positions = task.refs()
    spans = _aligned_spans(positions, 0, len(refs), backend.batch_size)
    rows = {ref.id: position % backend.batch_size for ref, position in zip(refs, positions)}
    batches = job.reader.batches(refs, spans, job.prefetch, job.read_threads)
    try:
        with lock if backend.mc_samples else contextlib.nullcontext():  # MC passes: one chunk at a time per model
            arrays = _predict_chunk(task.k, spans, batches, backend, rows, int_ids=False)
    finally:
        batches.close()
    result = {"k": task.k, "n": len(refs)}
    if job.directory is None:
        result["arrays"] = arrays
    else:
        write_chunk(job.directory, task.k, arrays, job.run_id)
    result["seconds"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- on the client


def _cluster_threads(client) -> int:
    try:
        return sum(client.nthreads().values())
    except (OSError, TimeoutError):
        return 0


def run_on_cluster(client, make_backend: functools.partial, reader: ImageReader, good: Sequence[ImageRef],
                   positions: Sequence[int], todo: Sequence[int], n_chunks: int, chunk_size: int, store: ChunkStore,
                   progress: bool, on_chunk: Callable[[int, int], None] | None, read_threads: int,
                   prefetch: int) -> None:
    """Predict the chunks ``todo`` of ``good`` as tasks of ``client``'s cluster, saving each when complete.

    Called by :func:`gamornet.predict_files` inside its output lock, after
    the chunk folder's manifest is written; arguments as for its one-process
    loop.  Returns when every chunk is saved.

    Raises
    ------
    SchedulerLostError
        If the connection to the scheduler is lost.
    ChunkTaskError
        If a task's workers kept dying.
    Exception
        The error of a failed task (e.g. a bad image), as raised there.
    """
    distributed = _distributed()
    keywords = make_backend.keywords
    resolve_model_path(keywords["model"], keywords["flavor"], progress=progress)  # a published model: fetched once
    job = _Job(make_backend, reader, store.dir, store.run_id, read_threads, prefetch)
    detached: dict = {}
    tasks = (_chunk_task(k, good, positions, chunk_size, detached) for k in todo)
    n_images = sum(min((k + 1) * chunk_size, len(good)) - k * chunk_size for k in todo)
    label = f"Predicting {n_images} images ({len(todo)} chunks, Dask, {keywords['choice'].label})"
    bar = progress_bar(n_images, progress, label=label)
    finished, count = n_chunks - len(todo), 0
    pending: dict = {}  # key -> (future, chunk number)
    running = distributed.as_completed(loop=client.loop)
    limit = {"value": 4, "checked": -1e9}

    def refill() -> None:
        now = time.monotonic()
        if now - limit["checked"] > 10:
            limit["value"], limit["checked"] = max(4, 2 * _cluster_threads(client)), now
        while len(pending) < limit["value"]:
            task = next(tasks, None)
            if task is None:
                return
            future = client.submit(predict_chunk, job, task, key=f"gamornet-chunk-{store.run_id}-{task.k:06d}")
            pending[future.key] = (future, task.k)
            running.add(future)

    def kept() -> str:
        if store.dir is None:
            return "the run had no output, so nothing is kept"
        return (f"the {finished} complete chunk(s) are kept in {store.dir}: rerun with resume=True (--resume) to "
                "continue, on a cluster or in one process")

    def lost() -> SchedulerLostError:
        return SchedulerLostError(f"lost the connection to the Dask scheduler {_address(client)} after {finished} of "
                                  f"{n_chunks} chunks; {kept()}")

    try:
        refill()
        for future in running:
            k = pending[future.key][1]
            try:
                result = future.result()
            except distributed.client.FutureCancelledError as exc:
                if client.status != "running" or "connection" in str(exc):
                    raise lost() from None
                raise ChunkTaskError(f"the task of chunk {k} was cancelled on the cluster ({exc}); {kept()}") from None
            except distributed.KilledWorker as exc:
                raise ChunkTaskError(f"chunk {k}: the workers running its task died repeatedly ({exc}); out of "
                                     f"memory? See the workers' logs; {kept()}") from None
            del pending[future.key]
            if "arrays" in result:
                store.save(result["k"], result["arrays"])
            finished += 1
            count += result["n"]
            bar.update(count)
            if on_chunk is not None:
                on_chunk(finished, n_chunks)
            refill()
    except OSError:
        if client.status == "running":
            raise
        raise lost() from None
    finally:
        if pending:
            with contextlib.suppress(Exception):
                client.cancel([future for future, _ in pending.values()])
    bar.finish()


def _address(client) -> str:
    with contextlib.suppress(Exception):
        return str(client.scheduler.address)
    return "(unknown address)"
