"""Predict the morphology of many images from files: chunked, resumable, sharded, multi-GPU.

:func:`predict_files` reads top to bottom as the data flows:

1. inputs -> one id per image (:func:`gamornet.predict.inputs.list_images`, sorted paths);
2. shard ``I/N``: the I-th of N contiguous blocks of that sorted list
   (:func:`shard_bounds`), so a job array of N tasks covers a catalogue exactly
   once and the shard tables, stacked in shard order, are the whole table;
3. validation before anything is predicted (:func:`gamornet.predict.inputs.list_images`,
   :func:`gamornet.predict.images.scan_images`): unreadable or cut-short files, wrong
   shapes or dtypes and broken links raise, naming every such file, or with
   ``skip_bad`` are recorded and skipped;
4. batches read by a background thread pool (:class:`gamornet.predict.images.ImageReader`);
5. the engine's forward pass (:func:`gamornet.engines.load_forward`: Keras,
   OpenVINO or TFLearn, float32 or bfloat16) -> probabilities, plus with
   ``mc_samples=N`` N passes with dropout active (mean and std, Keras);
6. chunks of ``chunk_size`` images saved to ``<output>.chunks/``; ``resume``
   continues after the last complete chunk;
7. threshold policy -> labels -> an astropy Table, written atomically.

A run writing ``<output>`` holds ``<output>.lock`` from start to end, so two
runs never mix their chunks or tables (:func:`gamornet.core.files.output_lock`).

With several GPUs visible (Keras flavour), the model is built under a
``tf.distribute.MirroredStrategy`` scope and each batch is split across the
replicas and run by ``strategy.run`` inside one ``tf.function``; pass
``strategy=`` to choose another strategy, or ``None`` for one device.

With ``client=`` (a ``distributed.Client``), steps 4-6 run on a Dask
cluster, one task per chunk (:mod:`gamornet.predict.distributed`); the rest
(listing, validation, manifest, lock, table) stays in this process, which
resolves every path the workers get (model, images, chunk folder) to an
absolute one.

In code, :func:`predict_files` is: check the arguments
(:func:`_check_arguments`) -> plan (list, shard, scan, manifest:
:func:`_plan`) -> run the missing chunks here or on a cluster
(:func:`_predict`; the forward pass and chunk arrays of
:mod:`gamornet.predict.passes`) -> table (:func:`_table`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable

import numpy as np
from astropy.table import Table

from gamornet import __version__
from gamornet.core.files import OutputLockedError, output_lock
from gamornet.core.network import CLASS_NAMES, INPUT_SHAPES
from gamornet.core.progress import progress_bar
from gamornet.core.thresholds import ThresholdPolicy, classify_probabilities, get_policy, policy_meta
from gamornet.core.validation import (
    check_callable,
    check_choice,
    check_flag,
    check_input_shape,
    check_number,
    check_positive_int,
)
from gamornet.engines import EngineChoice, choose_engine
from gamornet.predict.catalog import CatalogInput, catalog_grid, open_catalog
from gamornet.predict.chunks import ChunkStore
from gamornet.predict.headers import check_input_headers
from gamornet.predict.images import ImageReader, scan_images
from gamornet.predict.inputs import bad_images_error, list_images
from gamornet.predict.passes import ChunkPlan, ForwardPass, ForwardSpec, aligned_spans, run_chunk
from gamornet.predict.tables import (
    CHUNKS_SUFFIX,
    SHARED_META,
    SKIPPED_SUFFIX,
    check_output,
    normalise_meta,
    parse_shard,
    read_table,
    shard_bounds,
    write_skipped,
    write_table,
)
from gamornet.published.models import is_published_model
from gamornet.published.registry import FLAVORS, get_model_info
from gamornet.weights.paths import fingerprint

__all__ = ["predict_files", "OutputLockedError"]


def _check_hdu(hdu):
    if hdu is None or (isinstance(hdu, str) and hdu) or (
            isinstance(hdu, (int, np.integer)) and not isinstance(hdu, bool) and hdu >= 0):
        return hdu if not isinstance(hdu, np.integer) else int(hdu)
    raise ValueError(f"`hdu` must be an HDU number >= 0 or an EXTNAME. Received: hdu={hdu!r}")


def _resolve_model(model, flavor: str, input_shape, policy) -> tuple[str, tuple, ThresholdPolicy]:
    """Model label, input shape and threshold policy (registry defaults for published models)."""
    check_choice(flavor, "flavor", FLAVORS)
    if is_published_model(model):
        info = get_model_info(model, flavor)
        shape = check_input_shape(info.input_shape if input_shape is None else input_shape)
        return model, shape, get_policy(info.policy if policy is None else policy)
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise ValueError(f"`model` must be a published model name or a model path. Received: model={model!r}")
    path = os.path.abspath(os.fspath(model))
    if not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise FileNotFoundError(f"`model`: no such model file or published model name. Received: model={model!r}")
    if input_shape is None:
        raise ValueError("`input_shape` is required for a model file (published model names know theirs). "
                         "Received: input_shape=None")
    shape = check_input_shape(input_shape)
    if policy is None:
        policy = f"{flavor}_{'candels' if shape == INPUT_SHAPES['CANDELS'] else 'sdss'}"
    return path, shape, get_policy(policy)


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


def _model_fingerprint(label: str) -> list:
    """The model file's size and modification time (JSON-able), or [] for a published name."""
    return [[size, mtime] for _, mtime, size in fingerprint(label)] if not is_published_model(label) else []


# ---------------------------------------------------------------- predict


def predict_files(inputs=None, model="SDSS_tl", flavor: str = "keras", input_shape=None, policy=None, output=None,
                  batch_size: int = 64, shard=None, resume: bool = False, mc_samples: int = 0, crop_pad=None,
                  nan_fill=None, skip_bad: bool = False, progress: bool = True, chunk_size: int = 4096, *,
                  hdu=None, overwrite: bool = False, check_data: bool = False, seed: int = 0,
                  strategy="auto", read_threads: int = 2, prefetch: int = 2,
                  on_chunk: Callable[[int, int], None] | None = None, client=None, workers: int | None = None,
                  engine: str = "auto", precision: str = "float32", worker_timeout: float = 60.0,
                  strict: bool = False, catalog=None, images=None, survey: str | None = None,
                  pixel_scale: float | None = None, size: int | None = None, ra_column: str | None = None,
                  dec_column: str | None = None, id_column: str | None = None) -> Table:
    """Classify the galaxies of image files (or an array) into a table.

    Parameters
    ----------
    inputs : str, os.PathLike, sequence of them, or numpy.ndarray
        FITS files, ``.npy`` stacks, directories, glob patterns, or one
        ``(N, H, W[, C])`` array; see :mod:`gamornet.predict.inputs`.  None
        with ``catalog``.
    model : str
        Published model name (``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim``,
        ``CANDELS_tl``; fetched to the cache) or a model path.
    flavor : {"keras", "tflearn"}
        Backend (and which published files).
    input_shape : str or tuple, optional
        ``"SDSS"``, ``"CANDELS"`` or ``(H, W, C)``; known for published models,
        required for a model path.
    policy : str, os.PathLike, ThresholdPolicy, tuple or mapping, optional
        Threshold policy of the labels: a published policy name, a policy
        file (``.json``, e.g. the ``policy.json`` of ``gamornet evaluate
        --target-purity``) or thresholds; by default the published model's, or
        for a model path ``<flavor>_candels`` for CANDELS-shaped input and
        ``<flavor>_sdss`` otherwise.  The table's metadata record it:
        ``policy`` (its name) and ``policy_thresholds`` (its rule as JSON
        text; see :func:`gamornet.core.thresholds.policy_meta`).
    output : str, optional
        Table file, written as ``.ecsv``, ``.csv`` (its metadata in the sidecar
        ``<output>.meta.json``), ``.fits`` or ``.parquet`` by its ending.
        Chunks go to ``<output>.chunks/``, and the table appears, by an
        atomic rename, only when complete.
        The run holds ``<output>.lock`` throughout: a second run writing the
        same output (in any process) fails at once with
        :class:`~gamornet.core.files.OutputLockedError`.
    batch_size : int
        Images per forward pass.  Every pass gets ``B = min(batch_size,
        ntotal)`` rows, ``ntotal`` being the number of images of the whole
        run before sharding, so a ``batch_size`` above the number of images
        costs nothing.  The image at position ``g`` of the whole run's sorted
        list always sits at row ``g % B`` of the pass covering positions
        ``B * (g // B)`` onwards, the rows of images not in this run (other
        shards or chunks, bad images) being zeros.  An image's
        probabilities then depend only on it, ``B`` and its row, so shard,
        chunk and resumed tables are bit-identical to one whole run's; other
        batch sizes agree to about 1e-6.
    shard : str or (int, int), optional
        ``"I/N"``: predict only the I-th (1-based) of N contiguous blocks of
        the sorted images.
    resume : bool
        Continue an interrupted or failed run with the same arguments from
        its last complete chunk; the final table is identical to an
        uninterrupted run's.  An already complete ``output`` is returned as
        it is if it is the table of the same run: its metadata
        ``run_sha256`` (a digest of the model, its file, the input files,
        the shard split and every setting deciding the results) must equal
        this call's, else the resume is refused.  Tables that record no
        digest (a ``.csv`` table without its ``.meta.json`` sidecar, and
        tables of older versions) cannot be checked and are refused too; pass
        ``overwrite=True`` to predict them again.  Array inputs are checked
        by shape and dtype only.
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
        Skip bad images (unreadable, cut short, wrong shape or dtype, NaN,
        broken links), listing them in ``table.meta["skipped"]`` and
        ``<output>.skipped.csv``.  Otherwise they raise before anything is
        predicted, except NaN pixels, which raise when the image is read
        (or before, with ``check_data``).
    progress : bool
        Show a progress bar (images/s).
    chunk_size : int
        Images per saved chunk.
    hdu : int or str, optional
        FITS HDU number or EXTNAME.
    overwrite : bool
        Replace an existing ``output`` (and discard the chunks of an
        interrupted or failed run, unless ``resume``).
    check_data : bool
        Read every image during validation, so NaN / inf pixels are found
        before anything is predicted (reads the data twice).
    seed : int
        Seed of the MC dropout passes (chunk ``k`` uses ``seed + k``).
    strategy : "auto", None or tf.distribute.Strategy
        ``"auto"``: MirroredStrategy when several GPUs are visible (Keras
        engine).  With
        ``client``, ``"auto"`` or None (each worker uses its own devices).
    read_threads : int
        Threads reading image files ahead of the model (>= 1), in this
        process or in each task of a cluster.
    prefetch : int
        Batches read ahead of the model (>= 0).
    on_chunk : callable, optional
        Called as ``on_chunk(chunks_done, n_chunks)`` after each saved chunk
        (``chunks_done`` counts the complete chunks, earlier runs' included).
    client : distributed.Client, optional
        Predict on the Dask cluster of this client: one task per chunk, sent
        the chunk's file names (never pixels); each worker process reads its
        own files, loads the model once and writes the chunk to
        ``<output>.chunks/``.  The table is the one a single process writes
        (same ids and order; probabilities equal up to the kernels a worker's
        thread count selects, within 1e-6).  Needs image files on a file
        system the workers see (not an in-memory array).  See
        :mod:`gamornet.predict.distributed`.
    workers : int, optional
        Deprecated name of ``read_threads``.
    engine : {"auto", "keras", "openvino", "tflearn"}
        What computes the probabilities (see :mod:`gamornet.engines`):
        ``"auto"`` is OpenVINO when the ``openvino`` package is installed
        and no NVIDIA GPU is visible (float32 agrees with Keras to about 2e-6; the model is converted
        once and stored in the cache), else Keras (TFLearn for
        ``flavor="tflearn"``); Keras whenever ``mc_samples`` or a strategy
        object is given.  ``"tflearn"`` only for ``flavor="tflearn"``; a
        TFLearn checkpoint also runs on ``"keras"`` and ``"openvino"``
        (the Keras model with the TFLearn LRN).
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` is faster with OpenVINO on CPUs with native
        bfloat16 (``avx512_bf16``, ``amx_bf16``; figures on the
        performance page), moving
        probabilities by up to about 1e-2; elsewhere it warns (OpenVINO
        then computes in float32, Keras emulates bfloat16 slowly).
    worker_timeout : float
        With ``client``: seconds the cluster may have no worker (none yet,
        or the last one lost) before the run ends with
        :class:`~gamornet.predict.distributed.NoWorkersError`, keeping its
        complete chunks for ``resume``.
    strict : bool
        Before anything is predicted, the headers of a few FITS inputs (the
        first file of each folder) are compared with the model's card (pixel
        scale from the WCS, ``FILTER``, ``BUNIT``;
        :mod:`gamornet.predict.headers`); a mismatch warns once
        (:class:`~gamornet.predict.headers.InputMismatchWarning`), or with
        ``strict=True`` raises
        :class:`~gamornet.predict.headers.InputMismatchError`.
    catalog : str, os.PathLike or astropy.table.Table, optional
        Predict the rows of this catalogue, cut on the fly from ``images``
        (``inputs`` then None): see :mod:`gamornet.predict.catalog`.  The
        table then holds every catalogue row, in catalogue order: ``id``,
        the columns :func:`gamornet.cutouts.make_cutouts` adds
        (``cutout_flag``...), the catalogue's columns, and the
        probabilities and labels, masked where the cutout is not usable
        (``cutout_flag`` other than ``ok``: those rows are listed in
        ``meta["skipped"]``).
    images : str, os.PathLike or sequence of them, optional
        With ``catalog``: the survey images (FITS with a celestial WCS).
    survey : {"SDSS", "CANDELS"}, optional
        With ``catalog``: the grid of the cutouts, for a model file
        without a card (the model's card gives it otherwise; an
        ``input_shape`` of ``"SDSS"`` or ``"CANDELS"`` too).
    pixel_scale, size : float, int, optional
        With ``catalog``: arcsec per pixel and pixels on a side of the
        cutouts, replacing the card's or survey's.
    ra_column, dec_column, id_column : str, optional
        With ``catalog``: its columns (found by name when not given; see
        :mod:`gamornet.cutouts.catalog`).  Ids must be unique.

    Returns
    -------
    astropy.table.Table
        Columns ``id``, ``p_disk``, ``p_indeterminate``, ``p_bulge`` (and
        the MC columns), ``label``; metadata ``model``, ``flavor``,
        ``policy``, ``policy_thresholds``, ``shape``, ``mc``, ``engine`` and ``precision`` (what
        computed the probabilities, and in which precision, as really
        used), ``version``, ``shard``, ``ntotal``
        (images of all shards), ``nimages`` (of this shard), ``nskipped``,
        ``skipped`` and ``run_sha256`` (see ``resume``); and what was
        predicted, as given but made absolute, so that
        :func:`gamornet.gallery.make_gallery` finds the images again:
        ``inputs`` (the paths and glob patterns given, not the files they
        expand to; none for an array) or, from a catalogue,
        ``source_catalog`` (none for a Table) and ``source_images`` (paths
        or URLs).  More than 1000 inputs (or survey images) are not
        recorded: the table then records none.  These do not enter
        ``run_sha256``, so a run given the same files by other (relative)
        paths resumes.

    Notes
    -----
    A run that fails (an exception other than an interruption) removes
    ``<output>.chunks/`` when no chunk was complete; otherwise it keeps the
    complete chunks and records its error in their manifest, so that a
    rerun reports a failed run (with that error) rather than an
    interrupted one, and ``resume=True`` continues it.
    """
    settings = _check_arguments(
        inputs, model, flavor, input_shape, policy, output, batch_size, shard, resume, mc_samples, crop_pad, nan_fill,
        skip_bad, progress, chunk_size, hdu=hdu, overwrite=overwrite, check_data=check_data, seed=seed,
        strategy=strategy, read_threads=read_threads, prefetch=prefetch, on_chunk=on_chunk, client=client,
        workers=workers, engine=engine, precision=precision, worker_timeout=worker_timeout, strict=strict,
        route={"catalog": catalog, "images": images, "survey": survey, "pixel_scale": pixel_scale, "size": size,
               "ra_column": ra_column, "dec_column": dec_column, "id_column": id_column})
    with output_lock(settings.output):
        try:
            table, bad = _locked_run(settings)
        finally:
            if isinstance(settings.inputs, CatalogInput):
                settings.inputs.plan.close()
    if bad:
        where = f" and {settings.output + SKIPPED_SUFFIX}" if settings.output is not None else ""
        what = "catalogue row(s) not predicted" if isinstance(settings.inputs, CatalogInput) else "bad image(s) skipped"
        warnings.warn(f"{len(bad)} {what}, listed in table.meta['skipped']{where}; first: "
                      f"{bad[0][0]}: {bad[0][1]}", stacklevel=2)
    return table


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The checked arguments of one :func:`predict_files` call (model resolved: ``label`` is absolute or a name)."""

    inputs: object
    label: str
    shape: tuple
    rule: ThresholdPolicy
    flavor: str
    choice: EngineChoice
    output: str | None
    batch_size: int
    chunk_size: int
    part: tuple[int, int]
    resume: bool
    mc_samples: int
    seed: int
    crop_pad: float | None
    nan_fill: float | None
    hdu: int | str | None
    skip_bad: bool
    check_data: bool
    overwrite: bool
    progress: bool
    strategy: object
    read_threads: int
    prefetch: int
    on_chunk: Callable[[int, int], None] | None
    client: object
    worker_timeout: float
    strict: bool = False

    def reader(self) -> ImageReader:
        """The image reader of the run."""
        return ImageReader(self.shape, hdu=self.hdu, crop_pad=self.crop_pad, nan_fill=self.nan_fill,
                           skip_bad=self.skip_bad)


def _check_arguments(inputs, model, flavor, input_shape, policy, output, batch_size, shard, resume, mc_samples,
                     crop_pad, nan_fill, skip_bad, progress, chunk_size, *, hdu, overwrite, check_data, seed, strategy,
                     read_threads, prefetch, on_chunk, client, workers, engine, precision,
                     worker_timeout, strict=False, route=None) -> _Settings:
    """Every argument of :func:`predict_files` checked, before any work (raises naming the argument)."""
    if route is not None and route["catalog"] is not None:
        inputs, input_shape = _catalog_input(inputs, model, flavor, input_shape, route, _check_hdu(hdu))
        check_data = False  # rows are checked when cut
    label, shape, rule = _resolve_model(model, flavor, input_shape, policy)
    if isinstance(inputs, CatalogInput) and tuple(shape) != (inputs.plan.grid.size,) * 2 + (1,):
        raise ValueError(f"`input_shape`: the model takes {shape}, the cutouts are {inputs.plan.grid.size} x "
                         f"{inputs.plan.grid.size} x 1 (`size`). Received: input_shape={input_shape!r}, "
                         f"size={inputs.plan.grid.size}")
    batch_size = check_positive_int(batch_size, "batch_size")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    mc_samples = check_positive_int(mc_samples, "mc_samples", minimum=0)
    seed = check_positive_int(seed, "seed", minimum=0)
    if workers is not None:
        warnings.warn("predict_files(workers=...) is deprecated: it is the number of reader threads, now "
                      "`read_threads`; worker processes come from `client`.", DeprecationWarning, stacklevel=3)
        read_threads = check_positive_int(workers, "workers")
    read_threads = check_positive_int(read_threads, "read_threads")
    prefetch = check_positive_int(prefetch, "prefetch", minimum=0)
    check_callable(on_chunk, "on_chunk")
    for name, flag in (("resume", resume), ("skip_bad", skip_bad), ("progress", progress), ("overwrite", overwrite),
                       ("check_data", check_data), ("strict", strict)):
        check_flag(flag, name)
    if mc_samples and flavor != "keras":
        raise ValueError(f"`mc_samples` needs flavor='keras'. Received: mc_samples={mc_samples}, flavor={flavor!r}")
    choice = choose_engine(engine, precision, flavor=flavor, mc_samples=mc_samples, strategy=strategy)
    part = parse_shard(shard) or (1, 1)
    crop_pad = check_number(crop_pad, "crop_pad", allow_none=True)
    nan_fill = check_number(nan_fill, "nan_fill", allow_none=True)
    worker_timeout = check_number(worker_timeout, "worker_timeout", low=0, low_open=True)
    hdu = _check_hdu(hdu)
    output = check_output(output)
    if resume and output is None:
        raise ValueError("`resume` needs an `output` file. Received: output=None")
    if client is not None:
        from gamornet.predict.distributed import check_cluster_arguments

        check_cluster_arguments(client, inputs, strategy)
    return _Settings(inputs, label, shape, rule, flavor, choice, output, batch_size, chunk_size, part, resume,
                     mc_samples, seed, crop_pad, nan_fill, hdu, skip_bad, check_data, overwrite, progress, strategy,
                     read_threads, prefetch, on_chunk, client, worker_timeout, strict)


def _catalog_input(inputs, model, flavor, input_shape, route: dict, hdu) -> tuple[CatalogInput, object]:
    """The catalogue route's input and the model's input shape (by default the grid's)."""
    if inputs is not None:
        raise ValueError("Give either `inputs` (image files) or `catalog` (with `images`), not both. Received: "
                         f"inputs={inputs!r}, catalog={route['catalog']!r}")
    grid = catalog_grid(model, flavor, input_shape, route["survey"], route["pixel_scale"], route["size"])
    source = open_catalog(route["catalog"], route["images"], grid, route["ra_column"], route["dec_column"],
                          route["id_column"], hdu)
    if input_shape is None or (isinstance(input_shape, str) and input_shape.upper() in ("SDSS", "CANDELS")):
        input_shape = (grid.size, grid.size, 1)
    return source, input_shape


def _list(s: _Settings) -> tuple[list, list[tuple]]:
    """The images of the run (the catalogue's rows on the catalogue route) and the bad files found listing them."""
    if isinstance(s.inputs, CatalogInput):
        return s.inputs.refs(), []
    return list_images(s.inputs, skip_bad=True)


def _locked_run(s: _Settings) -> tuple[Table, list[tuple]]:
    """Under the output lock: list and plan, predict the missing chunks, build (and write) the table.

    Returns the table and the bad images skipped (none for a finished table kept by ``resume``).
    """
    finished = s.output is not None and os.path.exists(s.output) and not os.path.isdir(s.output + CHUNKS_SUFFIX)
    if finished and not s.resume and not s.overwrite:
        raise FileExistsError(f"`output` exists; pass overwrite=True (--overwrite) to replace it. "
                              f"Received: output={s.output!r}")
    refs, bad = _list(s)
    run, meta = _describe_run(s, refs, bad)
    if finished and s.resume:
        return _finished_table(s.output, {**meta, "run_sha256": _digest(run)}), []
    first, stop = shard_bounds(len(refs), *s.part)
    plan, store = _plan(s, refs[first:stop], first, bad, run, meta["shard"])
    try:
        _predict(s, plan, store, run["batch_size"])
        table = _table(s, plan, store, bad, meta, run, (first, stop))
    except Exception as exc:
        store.fail(exc)
        raise
    return table, bad


def _describe_run(s: _Settings, refs: list, bad: list[tuple]) -> tuple[dict, dict]:
    """What decides the results (digested into ``run_sha256``), and the table's metadata."""
    n_total = len(refs)
    run = {"model": s.label, "model_file": _model_fingerprint(s.label), "flavor": s.flavor, "shape": list(s.shape),
           "policy": dataclasses.asdict(s.rule), "mc": s.mc_samples, "seed": s.seed if s.mc_samples else None,
           "engine": s.choice.engine, "precision": s.choice.precision,
           "batch_size": min(s.batch_size, max(n_total, 1)), "crop_pad": s.crop_pad, "nan_fill": s.nan_fill,
           "hdu": s.hdu, "skip_bad": s.skip_bad, "n_total": n_total,
           "inputs_sha256": _inputs_digest(s.inputs, refs, bad)}
    meta = {"model": s.label, "flavor": s.flavor, **policy_meta(s.rule), "shape": ",".join(map(str, s.shape)),
            "mc": s.mc_samples, "engine": s.choice.engine, "precision": s.choice.precision, "version": __version__,
            "shard": f"{s.part[0]}/{s.part[1]}", "ntotal": n_total, **_recorded_inputs(s.inputs)}
    return run, meta


#: Paths a table records of what it was predicted from, at most (more are not recorded).
MAX_RECORDED_INPUTS = 1000


def _absolute_input(item) -> str:
    """An input path or glob pattern made absolute, as it names the same files from any folder.

    The current folder's own glob characters (``[``, ``*``, ``?``) are escaped
    in a relative pattern, so that they are taken literally.
    """
    path = os.fspath(item)
    if os.path.lexists(path) or not glob.has_magic(path):
        return os.path.abspath(path)
    return os.path.normpath(os.path.join(glob.escape(os.getcwd()), path))


def _recorded_inputs(inputs) -> dict:
    """The table metadata naming what was predicted (not digested: equivalent paths make the same run).

    ``inputs`` for files, directories and patterns; ``source_catalog`` and
    ``source_images`` for a catalogue (:meth:`gamornet.predict.catalog.CatalogInput.recorded`);
    nothing for an array, or for more than :data:`MAX_RECORDED_INPUTS` items.
    """
    if isinstance(inputs, CatalogInput):
        return inputs.recorded(MAX_RECORDED_INPUTS)
    if isinstance(inputs, np.ndarray):
        return {}
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items or len(items) > MAX_RECORDED_INPUTS:  # an iterator is spent by the listing
        return {}
    return {"inputs": [_absolute_input(item) for item in items]}


def _plan(s: _Settings, refs: list, first: int, bad: list[tuple], run: dict,
          shard: str) -> tuple[ChunkPlan, ChunkStore]:
    """Validate this shard's images (``refs``, from position ``first``), open the chunk store, list what is left.

    Bad images found are appended to ``bad``; without ``skip_bad`` they raise.
    """
    check_input_headers(refs, s.label, s.flavor, s.shape, hdu=s.hdu, strict=s.strict)
    position = {ref.id: first + i for i, ref in enumerate(refs)}
    good, scan_bad = scan_images(refs, s.shape, hdu=s.hdu, crop_pad=s.crop_pad, nan_fill=s.nan_fill, skip_bad=True,
                                 check_data=s.check_data, workers=2 * s.read_threads)
    bad += scan_bad
    if bad and not s.skip_bad:
        raise bad_images_error(bad)
    manifest = {**run, "shard": shard, "chunk_size": s.chunk_size, "n_images": len(good),
                "ids_sha256": _digest([str(r.id) for r in good])}
    store = ChunkStore(s.output, manifest, s.resume, s.overwrite)
    n_chunks = math.ceil(len(good) / s.chunk_size)
    done = store.done()
    todo = [k for k in range(n_chunks) if k not in done]
    return ChunkPlan(good, [position[ref.id] for ref in good], todo, n_chunks, s.chunk_size), store


def _predict(s: _Settings, plan: ChunkPlan, store: ChunkStore, batch_size: int) -> None:
    """Predict the chunks still to do, in this process or on the cluster of ``s.client``."""
    if not plan.todo:
        return
    spec = ForwardSpec.describe(s.label, s.flavor, s.shape, s.choice, batch_size, s.mc_samples, s.seed)
    if s.client is None:
        _run_chunks(plan, ForwardPass(spec, strategy=s.strategy, progress=s.progress), store,
                    isinstance(s.inputs, np.ndarray), s.progress, s.on_chunk, s.reader(), s.read_threads, s.prefetch)
        return
    from gamornet.predict.distributed import ClusterRun, run_on_cluster

    run = ClusterRun.describe(spec, s.reader(), store, s.read_threads, s.prefetch)
    run_on_cluster(s.client, run, plan, store, s.progress, s.on_chunk, worker_timeout=s.worker_timeout)


def _table(s: _Settings, plan: ChunkPlan, store: ChunkStore, bad: list[tuple], meta: dict, run: dict,
           span: tuple[int, int]) -> Table:
    """The table of the complete chunks of the images ``span`` (written to ``s.output``, the chunks then removed)."""
    n_images = span[1] - span[0]
    chunks = [store.load(k) for k in range(plan.n_chunks)]
    for c in chunks:
        bad += list(zip(c["bad_ids"].tolist(), c["bad_reasons"].tolist()))
    meta.update(nimages=n_images, nskipped=len(bad))
    if bad:
        meta["skipped"] = [f"{image_id}: {reason}" for image_id, reason in bad]
    meta["run_sha256"] = _digest(run)
    table = _build_table(chunks, s.rule, meta)
    if isinstance(s.inputs, CatalogInput):
        table = s.inputs.table_of(*span, chunks, table)
    if s.output is not None:
        write_table(table, s.output)
        if bad:
            write_skipped(s.output + SKIPPED_SUFFIX, bad)
        elif os.path.exists(s.output + SKIPPED_SUFFIX):
            os.remove(s.output + SKIPPED_SUFFIX)
        store.remove()
    return table


def _digest(value) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _inputs_digest(inputs, refs: list, bad: list[tuple]) -> str:
    """Digest of the inputs: every listed image (absolute path, index) and bad file, an array's layout, or a
    catalogue's (:meth:`gamornet.predict.catalog.CatalogInput.digest`)."""
    if isinstance(inputs, CatalogInput):
        return inputs.digest()
    if isinstance(inputs, np.ndarray):
        return _digest(["array", list(inputs.shape), inputs.dtype.str])
    return _digest([f"{ref.source.path}:{ref.index}" for ref in refs] + [f"bad:{image_id}" for image_id, _ in bad])


def _finished_table(output: str, meta: dict) -> Table:
    """The complete table at ``output``, if it is the table of the run described by ``meta``; else refuse."""
    table = read_table(output)
    recorded = normalise_meta(table.meta)
    if "run_sha256" not in recorded:
        raise ValueError(f"Cannot resume: {output} is a finished table that records no run digest (a CSV table "
                         "without its .meta.json sidecar, or a table of an older version), so it cannot be checked "
                         "against these arguments. Use it as it is, or pass overwrite=True (--overwrite) to predict it "
                         "again. Received: resume=True")
    differ = [f"{key} is {recorded.get(key)!r} there, {meta[key]!r} now" for key in (*SHARED_META, "shard")
              if key != "version" and str(recorded.get(key)) != str(meta[key])]
    if differ or recorded["run_sha256"] != meta["run_sha256"]:
        detail = "; ".join(differ) or ("the input files, the model file or a setting (batch_size, crop_pad, nan_fill, "
                                       "hdu, skip_bad, seed, policy thresholds) differ")
        raise ValueError(f"Cannot resume: {output} is the finished table of another run ({detail}). Pass "
                         "overwrite=True (--overwrite) to replace it, or choose another output. Received: resume=True")
    return table


def _run_chunks(plan: ChunkPlan, forward: ForwardPass, store: ChunkStore, int_ids: bool, progress: bool, on_chunk,
                reader: ImageReader, read_threads: int, prefetch: int) -> None:
    """Predict the chunks ``plan.todo`` in this process, saving each when complete.

    An image goes to row ``position % batch_size`` of the aligned block
    holding its position (see :class:`gamornet.predict.passes.ForwardPass`).
    """
    good, positions = plan.good, plan.positions
    spans_per_chunk = [aligned_spans(positions, *plan.bounds(k), forward.batch_size) for k in plan.todo]
    rows = {ref.id: position % forward.batch_size for ref, position in zip(good, positions)}
    remaining = sum(stop - start for spans in spans_per_chunk for start, stop in spans)
    bar = progress_bar(remaining, progress, label=f"Predicting {remaining} images ({forward.choice.label})")
    batches = reader.batches(good, [s for spans in spans_per_chunk for s in spans], prefetch, read_threads)
    count, finished = 0, plan.n_chunks - len(plan.todo)

    def advance(n: int) -> None:
        nonlocal count
        count += n
        bar.update(count)

    try:
        for k, spans in zip(plan.todo, spans_per_chunk):
            store.save(k, run_chunk(k, spans, batches, forward, rows, int_ids, advance))
            finished += 1
            if on_chunk is not None:
                on_chunk(finished, plan.n_chunks)
    finally:
        batches.close()
    bar.finish()
