"""A run's forward pass and its chunks: what one-process and cluster prediction share.

- :class:`ForwardSpec`: everything that decides a run's probabilities (the
  model, resolved to an absolute path or a published name, its files'
  fingerprint, flavour, input shape, engine, precision, LRN, batch size, MC
  samples and seed).  Small, frozen, hashable and picklable: it is what a
  cluster worker receives and what its cache of models is keyed by, so a model
  file replaced at the same path is loaded again.
- :class:`ForwardPass`: the forward pass a spec describes, on zero-padded
  batches of exactly ``batch_size`` rows.
- :class:`ChunkPlan`: which images make which chunk, and which chunks are
  still to predict.
- :func:`aligned_spans` and :func:`run_chunk`: the batches of one chunk and
  its arrays (:func:`chunk_arrays`).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from gamornet.core.prefetch import DEFAULT_DEPTH, BufferRing, Prefetch
from gamornet.engines import EngineChoice, load_forward
from gamornet.published.models import is_published_model, resolve_model_path
from gamornet.weights.paths import fingerprint

__all__ = ["ForwardSpec", "ForwardPass", "ChunkPlan", "aligned_spans", "run_chunk", "chunk_arrays"]


@dataclasses.dataclass(frozen=True)
class ForwardSpec:
    """What decides a run's probabilities; built in the process that starts the run (:meth:`describe`).

    Attributes
    ----------
    model : str
        Absolute path of the model file (or checkpoint prefix), or a
        published model name (resolved to the cache of the process that
        loads it).
    fingerprint : tuple
        ``(absolute path, modification time in ns, size)`` of each file of
        the model (:func:`gamornet.weights.paths.fingerprint`); empty for a
        published name.
    flavor, shape, choice, batch_size, mc_samples, seed, lrn
        Flavour, ``(H, W, C)``, engine and precision, rows per forward pass,
        MC-dropout passes, their seed, and the LRN flavour (None: the file's).
    """

    model: str
    fingerprint: tuple
    flavor: str
    shape: tuple
    choice: EngineChoice
    batch_size: int
    mc_samples: int
    seed: int
    lrn: str | None = None

    @classmethod
    def describe(cls, model, flavor: str, shape: tuple, choice: EngineChoice, batch_size: int, mc_samples: int,
                 seed: int, lrn: str | None = None) -> ForwardSpec:
        """The spec of ``model`` (a published name, or a path made absolute here, with its fingerprint)."""
        if isinstance(model, str) and is_published_model(model):
            return cls(model, (), flavor, tuple(shape), choice, batch_size, mc_samples, seed, lrn)
        path = os.path.abspath(os.fspath(model))
        return cls(path, fingerprint(path), flavor, tuple(shape), choice, batch_size, mc_samples, seed, lrn)

    def check_unchanged(self) -> None:
        """Refuse a model file that is no longer the one described (replaced, or another file where this runs).

        Raises
        ------
        RuntimeError
            If the model's files now have another modification time or size.
        """
        if self.fingerprint and fingerprint(self.model) != self.fingerprint:
            raise RuntimeError(f"the model file {self.model} changed after the run started (or differs where this "
                               f"task runs): it is now {fingerprint(self.model)}, the run started with "
                               f"{self.fingerprint}. Rerun to predict with the new file.")


class ForwardPass:
    """The model's forward passes: ``run(images, rows)`` -> dict of (n, 3) arrays (``probs``; ``mean``, ``std``).

    Every forward pass gets a batch of exactly ``batch_size`` rows: the
    images at the rows given, zeros elsewhere (their outputs are dropped).
    The kernels an engine picks depend on the batch size, and their
    arithmetic on a row's position in the batch, but never on the other
    rows' values; :func:`gamornet.predict_files` places each image at the
    same row (its position in the whole run modulo ``batch_size``) in every
    shard, chunk or resumed run, so those tables are bit-identical to one
    whole run's.

    Parameters
    ----------
    spec : ForwardSpec
        The model and settings.
    strategy : "auto", None or tf.distribute.Strategy
        Keras only.
    progress : bool
        Show a download / conversion message.
    """

    def __init__(self, spec: ForwardSpec, strategy=None, progress: bool = False):
        self.spec = spec
        self.mc_samples, self.seed, self.batch_size, self.choice = (spec.mc_samples, spec.seed, spec.batch_size,
                                                                    spec.choice)
        path = resolve_model_path(spec.model, spec.flavor, progress=progress)
        self.forward = load_forward(path, spec.shape, spec.choice, lrn=spec.lrn, strategy=strategy,
                                    source=spec.model, progress=progress)

    def reseed(self, chunk: int) -> None:
        """Reset the dropout random state to ``seed + chunk``: a chunk's MC passes do not depend on earlier chunks."""
        if self.mc_samples:
            self.forward.reseed(self.seed + chunk)

    def pad(self, images: np.ndarray, rows: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """The batch of ``batch_size`` rows :meth:`run` feeds: ``images`` at ``rows``, zeros elsewhere.

        ``out``: a float32 array of that shape to fill (a reused buffer);
        by default a new one.
        """
        if out is None:
            out = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
        else:
            out.fill(0)
        out[np.asarray(rows, dtype=np.intp)] = images
        return out

    def run(self, images: np.ndarray, rows: Sequence[int], padded: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Outputs for ``images`` placed at ``rows`` of one zero-padded batch of ``batch_size``.

        ``padded``: that batch, made ahead by :meth:`pad` (by default made here).
        """
        n = images.shape[0]
        if n == 0:
            empty = np.zeros((0, 3), np.float32)
            return {"probs": empty, **({"mean": empty, "std": empty} if self.mc_samples else {})}
        rows = np.asarray(rows, dtype=np.intp)
        if padded is None:
            padded = self.pad(images, rows)
        out = {"probs": np.asarray(self.forward(padded), np.float32)[rows]}
        if self.mc_samples:
            passes = [np.asarray(self.forward.sample(padded), np.float64)[rows] for _ in range(self.mc_samples)]
            samples = np.stack(passes)
            out["mean"] = samples.mean(axis=0).astype(np.float32)
            out["std"] = samples.std(axis=0).astype(np.float32)
        return out


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """The validated images of a run and its chunks: chunk ``k`` is ``good[k * chunk_size : (k + 1) * chunk_size]``.

    ``positions[i]`` is the place of ``good[i]`` in the whole run's sorted
    image list (before sharding); ``todo`` are the chunks still to predict.
    """

    good: Sequence
    positions: Sequence[int]
    todo: Sequence[int]
    n_chunks: int
    chunk_size: int

    def bounds(self, k: int) -> tuple[int, int]:
        """``[start, stop)`` of chunk ``k`` in ``good``."""
        return k * self.chunk_size, min((k + 1) * self.chunk_size, len(self.good))

    def n_todo_images(self) -> int:
        """Images in the chunks still to predict."""
        return sum(stop - start for start, stop in map(self.bounds, self.todo))


def aligned_spans(positions: Sequence[int], start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` into runs of images whose run positions fall in one aligned block of ``batch_size``."""
    spans = []
    while start < stop:
        end = bisect.bisect_left(positions, (positions[start] // batch_size + 1) * batch_size, start, stop)
        spans.append((start, end))
        start = end
    return spans


def chunk_arrays(ids: list, results: list[dict], bad: list[tuple], int_ids: bool,
                 cuts: list[tuple] | None = None) -> dict[str, np.ndarray]:
    """A chunk as saved: ``ids``, ``probs`` (and ``mean``, ``std``), ``bad_ids`` and ``bad_reasons``.

    With ``cuts`` (catalogue rows cut, see :class:`gamornet.predict.inputs.Batch`), also ``cut_ids``
    and ``cut_rows`` (float64 ``(n, 5)``: coverage, NaN fraction, method, x, y).
    """
    arrays = {"ids": np.array(ids, dtype=np.int64 if int_ids else str)}
    for key in results[0] if results else ("probs",):
        arrays[key] = np.concatenate([r[key] for r in results]) if results else np.zeros((0, 3), np.float32)
    arrays["bad_ids"] = np.array([str(i) for i, _ in bad], dtype=str)
    arrays["bad_reasons"] = np.array([r for _, r in bad], dtype=str)
    if cuts:
        arrays["cut_ids"] = np.array([str(i) for i, _ in cuts], dtype=str)
        arrays["cut_rows"] = np.array([r for _, r in cuts], dtype=np.float64).reshape(len(cuts), 5)
    return arrays


def _padded_batches(spans: Sequence[tuple[int, int]], batches: Iterator, forward: ForwardPass, rows: dict,
                    ring: BufferRing) -> Iterator[tuple]:
    """``(stop - start, batch, its rows, its padded batch)`` per span: one batch of ``batches`` each, padded ahead."""
    for start, stop in spans:
        batch = next(batches)
        places = np.asarray([rows[i] for i in batch.ids], dtype=np.intp)
        padded = None
        if batch.images.shape[0]:
            padded = forward.pad(batch.images, places, ring.take((forward.batch_size, *batch.images.shape[1:])))
        yield stop - start, batch, places, padded


def run_chunk(k: int, spans: Sequence[tuple[int, int]], batches: Iterator, forward: ForwardPass, rows: dict,
              int_ids: bool, advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The arrays of chunk ``k``: one batch of ``batches`` per span of ``spans``, each image at ``rows[id]``.

    A background thread takes the batches from ``batches`` and pads them
    (:meth:`ForwardPass.pad`) ahead of the forward passes
    (:class:`gamornet.core.prefetch.Prefetch`): it takes exactly one batch
    per span, like the forward passes, and an error reading a batch is
    raised when that batch is reached.
    """
    forward.reseed(k)
    ids, results, bad, cuts = [], [], [], []
    ring = BufferRing(DEFAULT_DEPTH + 2)
    with Prefetch(_padded_batches(spans, batches, forward, rows, ring), name="gamornet-pad") as ready:
        for count, batch, places, padded in ready:
            ids += batch.ids
            bad += batch.bad
            cuts += batch.cuts
            results.append(forward.run(batch.images, places, padded))
            if advance is not None:
                advance(count)
    return chunk_arrays(ids, results, bad, int_ids, cuts)
