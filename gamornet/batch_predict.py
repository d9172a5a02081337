"""Predict the morphology of many images from files: chunked, resumable, sharded, multi-GPU.

:func:`predict_files` reads top to bottom as the data flows:

1. inputs -> one id per image (:func:`gamornet.io.list_images`, sorted paths);
2. shard ``I/N``: the I-th of N contiguous blocks of that sorted list
   (:func:`shard_bounds`), so a job array of N tasks covers a catalogue exactly
   once and the shard tables, stacked in shard order, are the whole table;
3. validation before anything is predicted (:func:`gamornet.io.scan_images`):
   unreadable files and wrong shapes raise, naming the file, or with
   ``skip_bad`` are recorded and skipped;
4. batches read by a background thread pool (:class:`gamornet.io.ImageReader`);
5. the backend's compiled forward pass -> probabilities, plus with
   ``mc_samples=N`` N passes with dropout active (mean and std);
6. chunks of ``chunk_size`` images saved to ``<output>.chunks/``; ``resume``
   continues after the last complete chunk;
7. threshold policy -> labels -> an astropy Table, written atomically.

With several GPUs visible (Keras flavour), the model is built under a
``tf.distribute.MirroredStrategy`` scope and each batch is split across the
replicas and run by ``strategy.run`` inside one ``tf.function``; pass
``strategy=`` to choose another strategy, or ``None`` for one device.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from astropy.table import Table, vstack

from gamornet import __version__, io, utils
from gamornet.batching import progress_bar
from gamornet.network import CLASS_NAMES
from gamornet.registry import FLAVORS, get_model_info
from gamornet.thresholds import ThresholdPolicy, classify_probabilities, get_policy

__all__ = ["predict_files", "merge_tables", "read_table", "parse_shard", "shard_bounds", "OUTPUT_FORMATS",
           "CHUNKS_SUFFIX"]

#: Table formats by file ending.
OUTPUT_FORMATS: dict[str, str] = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".parquet": "parquet",
}
#: Sidecar directory of an unfinished run: ``<output>.chunks``.
CHUNKS_SUFFIX = ".chunks"
#: Skipped images of a run with ``skip_bad``: ``<output>.skipped.csv``.
SKIPPED_SUFFIX = ".skipped.csv"
#: Metadata that must agree between the shard tables of one catalogue.
SHARED_META = ("model", "flavor", "policy", "shape", "mc", "version", "ntotal")
_META_KEYS = (*SHARED_META, "shard", "shards", "nimages", "nskipped", "skipped")


# ---------------------------------------------------------------- arguments


def parse_shard(shard) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` -> ``(I, N)`` with ``1 <= I <= N``; None stays None."""
    if shard is None:
        return None
    message = (f"`shard` must be 'I/N' or (I, N) with integers 1 <= I <= N (the I-th of N slices), e.g. '1/4'. "
               f"Received: shard={shard!r}")
    if isinstance(shard, str):
        try:
            i, n = (int(part) for part in shard.split("/"))
        except ValueError:
            raise ValueError(message) from None
    elif isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard
    ):
        i, n = int(shard[0]), int(shard[1])
    else:
        raise ValueError(message)
    if not 1 <= i <= n:
        raise ValueError(message)
    return i, n


def shard_bounds(n_items: int, i: int, n: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``i`` of ``n`` (1-based): contiguous blocks differing by at most one item."""
    return (i - 1) * n_items // n, i * n_items // n


def _output_format(path, name: str = "output") -> tuple[str, str]:
    lower = os.fspath(path).lower() if isinstance(path, (str, os.PathLike)) else ""
    for ending, fmt in sorted(OUTPUT_FORMATS.items(), key=lambda item: -len(item[0])):
        if lower.endswith(ending):
            if fmt == "parquet":
                try:
                    import pyarrow  # noqa: F401
                except ImportError:
                    raise ValueError(f"`{name}`: writing .parquet needs pyarrow (pip install pyarrow). "
                                     f"Received: {name}={path!r}") from None
            return ending, fmt
    raise ValueError(f"`{name}` must end in one of {list(OUTPUT_FORMATS)}. Received: {name}={path!r}")


def _check_number(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(
        value
    ):
        raise ValueError(f"`{name}` must be a finite number or None. Received: {name}={value!r}")
    return float(value)


def _check_hdu(hdu):
    if hdu is None or (isinstance(hdu, str) and hdu) or (isinstance(hdu, (int, np.integer)) and hdu >= 0):
        return hdu if not isinstance(hdu, np.integer) else int(hdu)
    raise ValueError(f"`hdu` must be an HDU number >= 0 or an EXTNAME. Received: hdu={hdu!r}")


def _resolve_model(model, flavor: str, input_shape, policy) -> tuple[str, tuple, ThresholdPolicy]:
    """Model label, input shape and threshold policy (registry defaults for published models)."""
    if flavor not in FLAVORS:
        raise ValueError(f"`flavor` must be one of {list(FLAVORS)}. Received: flavor={flavor!r}")
    if utils.is_published_model(model):
        info = get_model_info(model, flavor)
        shape = utils.check_input_shape(info.input_shape if input_shape is None else input_shape)
        return model, shape, get_policy(info.policy if policy is None else policy)
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise ValueError(f"`model` must be a published model name or a model path. Received: model={model!r}")
    path = os.path.abspath(os.fspath(model))
    if not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise FileNotFoundError(f"`model`: no such model file or published model name. Received: model={model!r}")
    if input_shape is None:
        raise ValueError("`input_shape` is required for a model file (published model names know theirs). "
                         "Received: input_shape=None")
    shape = utils.check_input_shape(input_shape)
    if policy is None:
        policy = f"{flavor}_{'candels' if shape == utils.INPUT_SHAPES['CANDELS'] else 'sdss'}"
    return path, shape, get_policy(policy)


# ---------------------------------------------------------------- backend


def _choose_strategy(strategy):
    """The tf.distribute strategy to use: ``"auto"`` -> MirroredStrategy when several GPUs are visible."""
    if strategy is None:
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "auto":
        return tf.distribute.MirroredStrategy() if len(tf.config.list_logical_devices("GPU")) > 1 else None
    raise ValueError(f"`strategy` must be 'auto', None or a tf.distribute.Strategy. Received: strategy={strategy!r}")


def _distributed_forward(model, strategy, training: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Forward pass splitting each batch over the strategy's replicas (padded to a multiple of them)."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function(reduce_retracing=True)
    def step(values):
        return strategy.run(lambda x: model(x, training=training), args=(values,))

    def forward(batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        per = -(-n // replicas)
        padded = np.zeros((per * replicas, *batch.shape[1:]), np.float32)
        padded[:n] = batch
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(padded[ctx.replica_id_in_sync_group * per : (ctx.replica_id_in_sync_group + 1)
                                           * per])
        )
        outputs = strategy.experimental_local_results(step(values))
        return np.concatenate([np.asarray(o) for o in outputs])[:n]

    return forward


class _Backend:
    """The model's forward passes: ``run(images)`` -> dict of (n, 3) arrays (``probs``; ``mean``, ``std``).

    Every batch is padded to ``batch_size`` (the padding's outputs are
    dropped): an image's probabilities then do not depend on how many images
    share its batch, so shard, chunk and resumed tables are bit-identical to
    one whole run with the same ``batch_size``.
    """

    def __init__(self, model: str, flavor: str, shape: tuple, batch_size: int, mc_samples: int, seed: int, strategy,
                 progress: bool):
        self.mc_samples, self.seed, self.net, self.batch_size = mc_samples, seed, None, batch_size
        if flavor == "tflearn":
            from gamornet.tflearn_module import gamornet_predict_tflearn

            def forward(images):
                return gamornet_predict_tflearn(images, model, shape, batch_size=len(images), progress=False)

            self.forward, self.sample = forward, None
            return
        from gamornet.keras_model import load_keras_model
        from gamornet.keras_module import _forward_function

        path = utils.resolve_model_path(model, "keras", progress=progress)
        strategy = _choose_strategy(strategy)
        if strategy is None:
            self.net = load_keras_model(path, shape)
            self.forward = _forward_function(self.net)
            self.sample = _forward_function(self.net, training=True) if mc_samples else None
        else:
            with strategy.scope():
                self.net = load_keras_model(path, shape, reuse=False)
            self.forward = _distributed_forward(self.net, strategy, False)
            self.sample = _distributed_forward(self.net, strategy, True) if mc_samples else None

    def reseed(self, chunk: int) -> None:
        """Reset the dropout random state to ``seed + chunk``: a chunk's MC passes do not depend on earlier chunks."""
        if self.net is None or not self.mc_samples:
            return
        for number, layer in enumerate(self.net.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([self.seed + chunk, number], dtype=np.int64))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = images.shape[0]
        if n == 0:
            empty = np.zeros((0, 3), np.float32)
            return {"probs": empty, **({"mean": empty, "std": empty} if self.mc_samples else {})}
        if n < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - n, *images.shape[1:]), np.float32)])
        out = {"probs": np.asarray(self.forward(images), np.float32)[:n]}
        if self.mc_samples:
            samples = np.stack([np.asarray(self.sample(images), np.float64)[:n] for _ in range(self.mc_samples)])
            out["mean"] = samples.mean(axis=0).astype(np.float32)
            out["std"] = samples.std(axis=0).astype(np.float32)
        return out


# ---------------------------------------------------------------- chunks


class _ChunkStore:
    """Finished chunks: ``<output>.chunks/chunk-NNNNNN.npz`` beside a ``manifest.json`` (in memory without output).

    Each chunk file appears by an atomic rename once complete, so after a
    crash every chunk file present is whole.  The manifest holds everything
    that decides the chunks' content; resuming with other settings is refused.
    """

    def __init__(self, output: str | None, manifest: dict, resume: bool, overwrite: bool = False):
        self.dir, self.memory = (None if output is None else output + CHUNKS_SUFFIX), {}
        if self.dir is None:
            return
        manifest_path = os.path.join(self.dir, "manifest.json")
        if overwrite and not resume:
            self.remove()
        if os.path.isdir(self.dir) and os.path.exists(manifest_path):  # (no manifest yet: no chunk either)
            if not resume:
                raise FileExistsError(f"{self.dir} holds the chunks of an interrupted run: pass resume=True (--resume) "
                                      "to continue it, or overwrite=True (--overwrite) to discard it. "
                                      "Received: resume=False")
            with open(manifest_path) as f:
                old = json.load(f)
            changed = [f"{k} was {old.get(k)!r}, now {v!r}" for k, v in manifest.items() if old.get(k) != v]
            if changed:
                raise ValueError(f"Cannot resume from {self.dir}: {'; '.join(changed)}. Rerun with the same "
                                 "arguments, or delete that directory to start again.")
            return
        os.makedirs(self.dir, exist_ok=True)
        with utils.atomic_path(manifest_path) as tmp, open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)

    def _path(self, k: int) -> str:
        return os.path.join(self.dir, f"chunk-{k:06d}.npz")

    def n_done(self) -> int:
        """Number of complete chunks, counted from the first."""
        k = 0
        while self.dir is not None and os.path.exists(self._path(k)):
            k += 1
        return k

    def save(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        if self.dir is None:
            self.memory[k] = arrays
            return
        with utils.atomic_path(self._path(k), suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())

    def load(self, k: int) -> dict[str, np.ndarray]:
        if self.dir is None:
            return self.memory[k]
        with np.load(self._path(k), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def remove(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _chunk_arrays(ids: list, results: list[dict], bad: list[tuple], int_ids: bool) -> dict[str, np.ndarray]:
    arrays = {"ids": np.array(ids, dtype=np.int64 if int_ids else str)}
    for key in results[0] if results else ("probs",):
        arrays[key] = np.concatenate([r[key] for r in results]) if results else np.zeros((0, 3), np.float32)
    arrays["bad_ids"] = np.array([str(i) for i, _ in bad], dtype=str)
    arrays["bad_reasons"] = np.array([r for _, r in bad], dtype=str)
    return arrays


# ---------------------------------------------------------------- table


def _build_table(chunks: list[dict], policy: ThresholdPolicy, meta: dict) -> Table:
    """The result table: id, p_* (and p_*_mean, p_*_std), label, metadata."""
    table = Table(meta=meta)
    table["id"] = np.concatenate([c["ids"] for c in chunks]) if chunks else np.array([], dtype=str)
    probs = np.concatenate([c["probs"] for c in chunks]) if chunks else np.zeros((0, 3), np.float32)
    for j, name in enumerate(CLASS_NAMES):
        table[f"p_{name}"] = probs[:, j]
    basis = probs
    if meta["mc"]:
        basis = np.concatenate([c["mean"] for c in chunks]) if chunks else probs
        std = np.concatenate([c["std"] for c in chunks]) if chunks else probs
        for j, name in enumerate(CLASS_NAMES):
            table[f"p_{name}_mean"] = basis[:, j]
            table[f"p_{name}_std"] = std[:, j]
    table["label"] = classify_probabilities(basis, policy)
    return table


def _write_table(table: Table, path: str) -> None:
    """Write ``table`` by the file's ending, through a temporary file renamed into place."""
    ending, fmt = _output_format(path)
    with utils.atomic_path(path, suffix=ending) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on long FITS keyword values
            table.write(tmp, format=fmt, overwrite=True)


def read_table(path) -> Table:
    """Read a table written by :func:`predict_files` or :func:`merge_tables`, by its ending.

    Parquet files are read with pyarrow alone (astropy's reader also needs pandas).
    """
    fmt = _output_format(path, "path")[1]
    if fmt != "parquet":
        table = Table.read(path, format=fmt)
        table.convert_bytestring_to_unicode()  # FITS gives bytes
        return table
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    data = pq.read_table(path)
    raw = (data.schema.metadata or {}).get(b"table_meta_yaml")
    meta = get_header_from_yaml(raw.decode().split("\n")).get("meta", {}) if raw else {}
    columns = {}
    for name in data.column_names:
        values = data.column(name).to_numpy(zero_copy_only=False)
        columns[name] = values.astype(str) if values.dtype == object else values
    return Table(columns, meta=dict(meta))


def _write_skipped(path: str, bad: list[tuple]) -> None:
    with utils.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "reason"])
        writer.writerows(bad)


def _model_fingerprint(label: str) -> list:
    files = [p for p in (label, label + ".index") if os.path.isfile(p)]
    return [[os.path.getsize(p), os.stat(p).st_mtime_ns] for p in files]


# ---------------------------------------------------------------- predict


def predict_files(inputs, model="SDSS_tl", flavor: str = "keras", input_shape=None, policy=None, output=None,
                  batch_size: int = 64, shard=None, resume: bool = False, mc_samples: int = 0, crop_pad=None,
                  nan_fill=None, skip_bad: bool = False, progress: bool = True, chunk_size: int = 4096, *,
                  hdu=None, overwrite: bool = False, check_data: bool = False, seed: int = 0,
                  strategy="auto", workers: int = 2, prefetch: int = 2,
                  on_chunk: Callable[[int, int], None] | None = None) -> Table:
    """Classify the galaxies of image files (or an array) into a table.

    Parameters
    ----------
    inputs : str, os.PathLike, sequence of them, or numpy.ndarray
        FITS files, ``.npy`` stacks, directories, glob patterns, or one
        ``(N, H, W[, C])`` array; see :mod:`gamornet.io`.
    model : str
        Published model name (``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim``,
        ``CANDELS_tl``; fetched to the cache) or a model path.
    flavor : {"keras", "tflearn"}
        Backend (and which published files).
    input_shape : str or tuple, optional
        ``"SDSS"``, ``"CANDELS"`` or ``(H, W, C)``; known for published models,
        required for a model path.
    policy : str, ThresholdPolicy, tuple or mapping, optional
        Threshold policy of the labels; by default the published model's, or
        for a model path ``<flavor>_candels`` for CANDELS-shaped input and
        ``<flavor>_sdss`` otherwise.
    output : str, optional
        Table file, written as ``.ecsv``, ``.csv`` (no metadata), ``.fits``
        or ``.parquet`` by its ending.  Chunks go to ``<output>.chunks/``,
        and the table appears, by an atomic rename, only when complete.
    batch_size : int
        Images per forward pass.  Batches are padded to this size, so the
        probabilities of an image depend only on it and ``batch_size``
        (they agree with other batch sizes to about 1e-6).
    shard : str or (int, int), optional
        ``"I/N"``: predict only the I-th (1-based) of N contiguous blocks of
        the sorted images.
    resume : bool
        Continue an interrupted run with the same arguments from its last
        complete chunk; the final table is identical to an uninterrupted
        run's.  Returns an already complete ``output`` as it is.
    mc_samples : int
        Add Monte-Carlo dropout: N passes with dropout active give columns
        ``p_<class>_mean`` and ``p_<class>_std`` (standard deviation over
        the passes, ddof 0), and the label follows the means.  ``p_<class>``
        stay the deterministic probabilities.  Keras only.
    crop_pad : float, optional
        Centre-crop or pad images of another size, padding with this value.
    nan_fill : float, optional
        Replace NaN / inf pixels with this value (else they are bad images).
    skip_bad : bool
        Skip bad images (unreadable, wrong shape, NaN), listing them in
        ``table.meta["skipped"]`` and ``<output>.skipped.csv``.  Otherwise
        unreadable files and wrong shapes raise before anything is predicted;
        NaN pixels raise when the image is read (or before, with ``check_data``).
    progress : bool
        Show a progress bar (images/s).
    chunk_size : int
        Images per saved chunk.
    hdu : int or str, optional
        FITS HDU number or EXTNAME.
    overwrite : bool
        Replace an existing ``output`` (and discard the chunks of an
        interrupted run, unless ``resume``).
    check_data : bool
        Read every image during validation, so NaN / inf pixels are found
        before anything is predicted (reads the data twice).
    seed : int
        Seed of the MC dropout passes (chunk ``k`` uses ``seed + k``).
    strategy : "auto", None or tf.distribute.Strategy
        ``"auto"``: MirroredStrategy when several GPUs are visible.
    workers, prefetch : int
        Reader threads, and batches read ahead of the model.
    on_chunk : callable, optional
        Called as ``on_chunk(chunks_done, n_chunks)`` after each saved chunk.

    Returns
    -------
    astropy.table.Table
        Columns ``id``, ``p_disk``, ``p_indeterminate``, ``p_bulge`` (and
        the MC columns), ``label``; metadata ``model``, ``flavor``,
        ``policy``, ``shape``, ``mc``, ``version``, ``shard``, ``ntotal``
        (images of all shards), ``nimages`` (of this shard), ``nskipped``
        and ``skipped``.
    """
    label, shape, rule = _resolve_model(model, flavor, input_shape, policy)
    batch_size = utils.check_positive_int(batch_size, "batch_size")
    chunk_size = utils.check_positive_int(chunk_size, "chunk_size")
    mc_samples = utils.check_positive_int(mc_samples, "mc_samples", minimum=0)
    seed = utils.check_positive_int(seed, "seed", minimum=0)
    if mc_samples and flavor != "keras":
        raise ValueError(f"`mc_samples` needs flavor='keras'. Received: mc_samples={mc_samples}, flavor={flavor!r}")
    part = parse_shard(shard) or (1, 1)
    crop_pad, nan_fill = _check_number(crop_pad, "crop_pad"), _check_number(nan_fill, "nan_fill")
    hdu = _check_hdu(hdu)
    if resume and output is None:
        raise ValueError("`resume` needs an `output` file. Received: output=None")
    if output is not None:
        output = os.fspath(output)
        _output_format(output)
        if os.path.exists(output) and not os.path.isdir(output + CHUNKS_SUFFIX):
            if resume:
                return read_table(output)
            if not overwrite:
                raise FileExistsError(f"`output` exists; pass overwrite=True (--overwrite) to replace it. "
                                      f"Received: output={output!r}")

    refs, bad = io.list_images(inputs, skip_bad=skip_bad)
    n_total = len(refs)
    refs = refs[slice(*shard_bounds(n_total, *part))]
    good, scan_bad = io.scan_images(refs, shape, hdu=hdu, crop_pad=crop_pad, nan_fill=nan_fill, skip_bad=skip_bad,
                                    check_data=check_data, workers=2 * workers)
    bad += scan_bad

    int_ids = isinstance(inputs, np.ndarray)
    ids_digest = hashlib.sha256("\n".join(str(r.id) for r in good).encode()).hexdigest()
    manifest = {"model": label, "model_file": _model_fingerprint(label), "flavor": flavor, "shape": list(shape),
                "mc": mc_samples, "seed": seed if mc_samples else None, "batch_size": batch_size,
                "chunk_size": chunk_size,
                "shard": f"{part[0]}/{part[1]}", "crop_pad": crop_pad, "nan_fill": nan_fill,
                "hdu": hdu, "skip_bad": skip_bad, "n_images": len(good), "ids_sha256": ids_digest}
    store = _ChunkStore(output, manifest, resume, overwrite)
    n_chunks = math.ceil(len(good) / chunk_size)
    done = store.n_done()
    if done < n_chunks:
        backend = _Backend(model, flavor, shape, batch_size, mc_samples, seed, strategy, progress)
        _run_chunks(good, done, n_chunks, chunk_size, batch_size, backend, store, int_ids, progress, on_chunk,
                    io.ImageReader(shape, hdu=hdu, crop_pad=crop_pad, nan_fill=nan_fill, skip_bad=skip_bad),
                    workers, prefetch)

    chunks = [store.load(k) for k in range(n_chunks)]
    for c in chunks:
        bad += list(zip(c["bad_ids"].tolist(), c["bad_reasons"].tolist()))
    meta = {"model": label, "flavor": flavor, "policy": rule.name, "shape": ",".join(map(str, shape)),
            "mc": mc_samples, "version": __version__, "shard": f"{part[0]}/{part[1]}", "ntotal": n_total,
            "nimages": len(refs), "nskipped": len(bad)}
    if bad:
        meta["skipped"] = [f"{image_id}: {reason}" for image_id, reason in bad]
    table = _build_table(chunks, rule, meta)
    if output is not None:
        _write_table(table, output)
        if bad:
            _write_skipped(output + SKIPPED_SUFFIX, bad)
        elif os.path.exists(output + SKIPPED_SUFFIX):
            os.remove(output + SKIPPED_SUFFIX)
        store.remove()
    if bad:
        where = f" and {output + SKIPPED_SUFFIX}" if output is not None else ""
        warnings.warn(f"{len(bad)} bad image(s) skipped, listed in table.meta['skipped']{where}; first: "
                      f"{bad[0][0]}: {bad[0][1]}", stacklevel=2)
    return table


def _run_chunks(good: Sequence, done: int, n_chunks: int, chunk_size: int, batch_size: int, backend: _Backend,
                store: _ChunkStore, int_ids: bool, progress: bool, on_chunk, reader, workers: int,
                prefetch: int) -> None:
    """Predict chunks ``done .. n_chunks - 1`` of ``good``, saving each when complete."""
    spans_per_chunk = []
    for k in range(done, n_chunks):
        start, stop = k * chunk_size, min((k + 1) * chunk_size, len(good))
        spans_per_chunk.append([(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)])
    remaining = len(good) - done * chunk_size
    bar = progress_bar(remaining, progress, label=f"Predicting {remaining} images")
    batches = reader.batches(good, [s for spans in spans_per_chunk for s in spans], prefetch, workers)
    count = 0
    try:
        for k, spans in zip(range(done, n_chunks), spans_per_chunk):
            backend.reseed(k)
            ids, results, bad = [], [], []
            for start, stop in spans:
                batch = next(batches)
                ids += batch.ids
                bad += batch.bad
                results.append(backend.run(batch.images))
                count += stop - start
                bar.update(count)
            store.save(k, _chunk_arrays(ids, results, bad, int_ids))
            if on_chunk is not None:
                on_chunk(k + 1, n_chunks)
    finally:
        batches.close()
    bar.finish()


# ---------------------------------------------------------------- merge


def _normalise_meta(meta) -> dict:
    out = {str(k).lower(): v for k, v in meta.items() if str(k).lower() in _META_KEYS}
    if "skipped" in out and isinstance(out["skipped"], str):
        out["skipped"] = [out["skipped"]]
    return out


def merge_tables(paths, output=None, overwrite: bool = False) -> Table:
    """Join the shard tables of one catalogue into one table.

    Checks that every table has the same columns and the same shared
    metadata (model, flavor, policy, shape, mc, version, ntotal), that no id
    appears twice and no shard twice.  Tables are stacked in shard order,
    which for a complete set of shards gives the table of an unsharded run
    (its ``shard`` metadata then reads ``1/1``); an incomplete set is merged
    with a warning naming the missing shards.

    Parameters
    ----------
    paths : sequence of str
        Shard tables (any format :func:`predict_files` writes).
    output : str, optional
        Where to write the merged table (by its ending, atomically).
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    astropy.table.Table
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("`paths` must name at least one table. Received: paths=[]")
    if output is not None:
        _output_format(output)
        if os.path.exists(output) and not overwrite:
            raise FileExistsError(f"`output` exists; pass overwrite=True (--overwrite). Received: output={output!r}")
    tables = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`paths`: {os.fspath(path)!r} does not exist. Received: paths={paths!r}")
        _output_format(path, "paths")
        table = read_table(path)
        table.meta = _normalise_meta(table.meta)
        tables.append(table)
    first, first_path = tables[0], paths[0]
    for path, table in zip(paths[1:], tables[1:]):
        if table.colnames != first.colnames:
            raise ValueError(f"{path} has columns {table.colnames}, {first_path} has {first.colnames}")
        for key in SHARED_META:
            if key in table.meta and key in first.meta and table.meta[key] != first.meta[key]:
                raise ValueError(f"Cannot merge: {key} is {first.meta[key]!r} in {first_path} but "
                                 f"{table.meta[key]!r} in {path}")
    order, meta = _check_shards(paths, tables), dict(first.meta)
    paths, tables = [paths[i] for i in order], [tables[i] for i in order]
    ids = np.concatenate([np.asarray(t["id"]).astype(str) for t in tables])
    unique, first_index, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = str(unique[np.argmax(counts > 1)])
        owners = [p for p, t in zip(paths, tables) if dup in np.asarray(t["id"]).astype(str)]
        raise ValueError(f"Cannot merge: id {dup!r} appears more than once (in {', '.join(map(str, owners))})")
    merged = vstack(tables, join_type="exact", metadata_conflicts="silent")
    skipped = list(dict.fromkeys(s for t in tables for s in t.meta.get("skipped", [])))
    meta.update(nimages=sum(t.meta.get("nimages", len(t)) for t in tables), nskipped=len(skipped))
    meta.pop("skipped", None)
    if skipped:
        meta["skipped"] = skipped
    meta.pop("shard", None)
    meta.pop("shards", None)
    meta.update(_shard_meta(tables))
    merged.meta = meta
    if output is not None:
        _write_table(merged, os.fspath(output))
    return merged


def _check_shards(paths: list, tables: list[Table]) -> list[int]:
    """Order of the tables by shard; refuses a shard given twice or different shard counts."""
    parts = [parse_shard(t.meta["shard"]) if "shard" in t.meta else None for t in tables]
    if any(p is None for p in parts):
        return list(range(len(tables)))
    counts = {n for _, n in parts}
    if len(counts) > 1:
        raise ValueError(f"Cannot merge shards of different splits: {[f'{i}/{n}' for i, n in parts]}")
    seen: dict[int, str] = {}
    for path, (i, n) in zip(paths, parts):
        if i in seen:
            raise ValueError(f"Cannot merge: shard {i}/{n} is in both {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(1, counts.pop() + 1)) - set(seen))
    if missing:
        warnings.warn(f"Merging an incomplete set of shards; missing: {missing}", stacklevel=3)
    return sorted(range(len(tables)), key=lambda j: parts[j][0])


def _shard_meta(tables: list[Table]) -> dict:
    parts = [parse_shard(t.meta["shard"]) for t in tables if "shard" in t.meta]
    if len(parts) != len(tables) or not parts:
        return {}
    n = parts[0][1]
    if sorted(i for i, _ in parts) == list(range(1, n + 1)):
        return {"shard": "1/1"}
    return {"shards": f"{','.join(str(i) for i, _ in parts)}/{n}"}
