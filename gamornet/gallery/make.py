""":func:`make_gallery`: a prediction table and its images -> one self-contained HTML page (and a PNG grid).

The table is read once, :data:`BATCH_ROWS` rows at a time and only the
columns the page needs (:mod:`gamornet.gallery.rows`): each batch is
labelled, matched to its images and true classes, counted and sampled
(:class:`gamornet.gallery.sections.SectionSampler`), and only the rows
sampled so far are kept.  So memory does not grow with the length of a
``.parquet`` or FITS table, nor with the number of images of a ``.npy``
stack (or a simulated / cutout folder), and the page is the same however
the table is cut into batches.  Text tables (``.ecsv``, ``.csv``) are read
whole, and so is the catalogue of true classes
(:mod:`gamornet.gallery.truth`).
"""


from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from gamornet.core.files import atomic_path
from gamornet.core.network import CLASS_NAMES
from gamornet.core.tables import normalise_meta
from gamornet.core.thresholds import ThresholdPolicy, check_probabilities, classify_probabilities, get_policy
from gamornet.core.validation import check_choice, check_flag, check_positive_int
from gamornet.cutouts.tiles import is_url
from gamornet.evaluate import as_class_labels, table_policy
from gamornet.gallery.figure import write_figure
from gamornet.gallery.page import card_html, render_page
from gamornet.gallery.rows import TableRows, open_rows
from gamornet.gallery.sections import SectionSampler, check_sections
from gamornet.gallery.thumbnails import (
    INTERVALS,
    ImageIndex,
    display_limits,
    image_index,
    png_base64,
    read_shown,
    to_pixels,
)
from gamornet.gallery.truth import TruthLookup

__all__ = ["make_gallery", "recorded_images", "NoRecordedImagesError", "BATCH_ROWS"]

PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"p_{name}" for name in CLASS_NAMES)
#: Rows of the prediction table read at a time (the page does not depend on it; memory grows with it).
BATCH_ROWS = 1 << 16


def _check_path(value, name: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"`{name}` must be a file path (str or os.PathLike). Received: {name}={value!r}")
    return os.fspath(value)


class NoRecordedImagesError(ValueError):
    """No ``images`` given, and the table records no inputs, or inputs that no longer exist.

    Attributes
    ----------
    reason : str
        What is missing, e.g. ``"the table records no inputs (...)"``.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"`images` is required: {reason}. Pass the images prediction was given as images= "
                         "(--images), or catalog_images= (--source-catalog with --images) for a table predicted "
                         "from a catalogue. Received: images=None")


def _string_list(value) -> list[str] | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def _exists(path: str) -> bool:
    """Whether a recorded input still names something: a file or folder, a pattern matching a file, a URL."""
    if is_url(path) or os.path.lexists(path):
        return True
    return glob.has_magic(path) and any(True for _ in glob.iglob(path, recursive=True))


def recorded_images(meta) -> dict:
    """``images`` or ``catalog_images`` of :func:`make_gallery` from the inputs a prediction table records.

    :func:`gamornet.predict_files` records ``inputs`` (the files, folders and
    patterns given, made absolute) or, from a catalogue, ``source_catalog``
    and ``source_images``.

    Parameters
    ----------
    meta : mapping
        The table's metadata (keys in any case, as FITS headers give them).

    Returns
    -------
    dict
        ``{"images": ..., "catalog_images": None}`` or ``{"images": None, "catalog_images": (catalog, images)}``.

    Raises
    ------
    NoRecordedImagesError
        If the table records none of them (an array was predicted, more than
        1000 inputs were given, a ``.csv`` table without its sidecar, a table
        of an earlier version), or a recorded path no longer exists.
    """
    recorded = normalise_meta(meta)
    if "source_catalog" in recorded or "source_images" in recorded:
        catalog, tiles = recorded.get("source_catalog"), _string_list(recorded.get("source_images"))
        if not isinstance(catalog, str) or not catalog or tiles is None:
            raise NoRecordedImagesError("the table records no source catalogue file (predicted from a Table in "
                                        "memory)" if tiles is not None else "the table records no survey images")
        found = {"images": None, "catalog_images": (catalog, tiles)}
        paths = [catalog, *tiles]
    else:
        inputs = _string_list(recorded.get("inputs"))
        if inputs is None:
            raise NoRecordedImagesError("the table records no inputs (an array was predicted, more than 1000 inputs "
                                        "were given, a .csv table lacks its .csv.meta.json sidecar, or the table "
                                        "comes from an earlier version)")
        found, paths = {"images": inputs, "catalog_images": None}, inputs
    missing = [path for path in paths if not _exists(path)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NoRecordedImagesError(f"the recorded input {missing[0]!r}{more} no longer exists")
    return found


def _open(predictions) -> TableRows:
    """The table to read, checked for its columns."""
    rows = open_rows(predictions)
    missing = [c for c in ("id", *PROBABILITY_COLUMNS) if c not in rows.colnames]
    if missing:
        raise ValueError(f"`predictions` needs the columns id, {', '.join(PROBABILITY_COLUMNS)}; missing {missing}. "
                         f"Received: predictions with columns {rows.colnames}")
    return rows


def _policy_of(meta: dict, policy, needed: bool) -> ThresholdPolicy | None:
    """The policy given, else the table's (:func:`gamornet.evaluate.table_policy`); None when not needed and unknown."""
    header = Table(meta=meta)
    if policy is not None or needed:
        return table_policy(header, policy)
    try:
        return table_policy(header)
    except ValueError:  # labelled with thresholds the table does not record: only its label column is used
        return None


def _position_columns(rows: TableRows) -> tuple[str, str] | None:
    """``ra`` and ``dec``, else the catalogue's position columns a table of the catalogue route records."""
    columns = rows.meta.get("columns")
    for names in (("ra", "dec"), (columns.get("ra"), columns.get("dec")) if isinstance(columns, dict) else ()):
        if len(names) == 2 and all(name in rows.colnames for name in names):
            return names
    return None


def _position(ra, dec) -> tuple[str, str] | None:
    if np.ma.is_masked(ra) or np.ma.is_masked(dec):
        return None
    try:
        return f"{float(ra):.6f}", f"{float(dec):.6f}"
    except (TypeError, ValueError):
        return str(ra), str(dec)


@dataclass
class _Scan:
    """What one pass over the table gives: counts, the sections, and what the cards need of the rows sampled."""

    sampler: SectionSampler
    truth: TruthLookup | None
    index: ImageIndex
    labels_from_column: bool
    rule: ThresholdPolicy | None
    counts: Counter = field(default_factory=Counter)
    true_counts: Counter = field(default_factory=Counter)
    left_out: int = 0
    absent: int = 0
    absent_examples: list = field(default_factory=list)
    cards: dict = field(default_factory=dict)

    def add(self, start: int, columns: dict, radec: tuple[str, str] | None) -> None:
        """Label, match, count and sample one batch of rows, the first at ``start``."""
        masked = np.zeros(len(columns["id"]), dtype=bool)
        for name in PROBABILITY_COLUMNS:
            masked |= np.ma.getmaskarray(columns[name])
        keep = np.flatnonzero(~masked)
        self.left_out += int(masked.sum())
        probs = np.column_stack([np.ma.getdata(columns[c])[keep].astype(np.float64) for c in PROBABILITY_COLUMNS])
        ids = np.asarray(np.ma.getdata(columns["id"]))[keep].astype(str, copy=False)
        if self.labels_from_column:
            labels = as_class_labels(np.asarray(np.ma.getdata(columns["label"]))[keep].astype(str),
                                     "predictions label")
        else:
            labels = classify_probabilities(probs, self.rule)
        true = None
        if self.truth is not None:
            check_probabilities(probs, "PREDICTIONS probabilities")
            true = self.truth(ids)
            self.true_counts.update(dict(zip(*np.unique(true[true != ""], return_counts=True))))
        found = self.index.find(ids)
        self.absent += int(np.sum(~found))
        self.absent_examples += ids[~found][:5 - len(self.absent_examples)].tolist()
        self.counts.update(dict(zip(*np.unique(labels, return_counts=True))))
        self.sampler.add(start + keep, ids, probs, labels, true)
        kept = self.sampler.kept()
        for row in sorted(kept - self.cards.keys()):  # sampled from this batch: what its card needs
            i = int(np.searchsorted(keep, row - start))
            position = None if radec is None else _position(columns[radec[0]][row - start],
                                                           columns[radec[1]][row - start])
            # copies, not views that would keep the batch's arrays
            self.cards[row] = (str(ids[i]), probs[i].tolist(), str(labels[i]), None if true is None else str(true[i]),
                               position)
        self.cards = {row: card for row, card in self.cards.items() if row in kept}


def _scan(rows: TableRows, names, rule, truth, index: ImageIndex, per_class: int, seed: int) -> _Scan:
    """One pass over the table (:data:`BATCH_ROWS` rows at a time); raises for ids without truth or image."""
    has_label = "label" in rows.colnames
    radec = _position_columns(rows)
    columns = ["id", *PROBABILITY_COLUMNS, *(["label"] if has_label else []), *(radec or ())]
    scan = _Scan(SectionSampler(names, rule, per_class, seed), truth, index, has_label, rule)
    for start, batch in rows.batches(list(dict.fromkeys(columns)), BATCH_ROWS):
        scan.add(start, batch, radec)
    if truth is not None:
        truth.check()
    return scan


def _summary(rows: TableRows, scan: _Scan, how: str, stretch, per_class: int, seed: int) -> list[tuple[str, str]]:
    meta = {str(k).lower(): v for k, v in rows.meta.items()}
    summary = [("predictions", rows.name), ("rows", str(rows.nrows))]
    if scan.left_out:
        summary.append(("not predicted", f"{scan.left_out} (masked probabilities; not shown)"))
    summary += [(c, str(scan.counts.get(c, 0))) for c in CLASS_NAMES]
    summary += [("model", str(meta.get("model", "not recorded"))),
                ("policy", scan.rule.name if scan.rule is not None else str(meta.get("policy", "not recorded"))),
                ("labels from", how)]
    if scan.truth is not None:
        summary.append(("true classes", ", ".join(f"{c} {scan.true_counts.get(c, 0)}" for c in CLASS_NAMES)))
    summary += [("stretch", stretch.describe()), ("sampling", f"at most {per_class} per section, seed {seed}")]
    return summary


def _thumbnails(shown: dict, meta: dict, interval: str, progress: bool):
    """8-bit grey levels of each row shown (None for an image that could not be read), the reasons, the stretch."""
    images, reasons = read_shown(list(shown.values()), meta, progress)
    stretch = display_limits(images, interval)
    pixels = {row: (None if im is None else to_pixels(im, stretch)) for row, im in zip(shown, images)}
    return pixels, dict(zip(shown, reasons)), stretch


def make_gallery(predictions, images=None, output="gallery.html", *, catalog=None, per_class: int = 48,
                 seed: int = 0, policy=None, sections=None, title: str | None = None, png=None,
                 catalog_images=None, progress: bool = True, interval: str = "percentile") -> Path:
    """Write a static HTML page showing the galaxies behind a prediction table, section by label.

    Parameters
    ----------
    predictions : astropy.table.Table, str or os.PathLike
        Table with ``id``, ``p_disk``, ``p_indeterminate``, ``p_bulge`` and
        optionally ``label``, ``ra``, ``dec`` (``.ecsv``, ``.csv``, ``.fits``,
        ``.parquet``...), as :func:`gamornet.predict_files` writes it.  Rows with
        masked probabilities (catalogue rows not predicted) are left out.
        A ``.parquet`` or FITS table is read in batches of rows, only the
        columns above, so memory does not grow with its length; a text table
        (``.ecsv``, ``.csv``) is read whole (:mod:`gamornet.gallery.rows`).
    images : str or os.PathLike, sequence of paths or numpy.ndarray, optional
        What prediction was given: a cutout or simulated folder, ``.npy``
        stacks, FITS files, directories, glob patterns, or an ``(N, H, W[, C])``
        array whose rows are the table's rows.  Images are matched to rows by
        the ids prediction gives them (those of a ``.npy`` stack computed
        from the id, never listed); only the images shown are read.  When
        neither ``images`` nor ``catalog_images`` is given, the inputs the
        table records are used (:func:`recorded_images`: a table written by
        :func:`gamornet.predict_files` remembers them).
    output : str or os.PathLike
        The HTML page, written atomically.
    catalog : astropy.table.Table, str or os.PathLike, optional
        True classes (a ``label`` or ``bt`` column, matched by ``id``; see
        :func:`gamornet.evaluate.evaluate_tables`): truth on every card and the
        ``mistakes`` section.  It is read whole and its ids kept in memory
        (:mod:`gamornet.gallery.truth`).
    per_class : int
        Thumbnails per section (subsection) at most.
    seed : int
        Seed of the sample drawn from a section with more rows: the rows
        whose ids have the smallest seeded hashes
        (:func:`gamornet.gallery.sections.sample_keys`), whatever the order
        of the table's rows.
    policy : str, ThresholdPolicy, tuple or mapping, optional
        Threshold policy of the labels (when the table has no ``label``
        column) and of the ``borderline`` section; default the table's.
    sections : sequence of str, optional
        Some of ``disk``, ``indeterminate``, ``bulge``, ``borderline``,
        ``mistakes`` (default: all; ``mistakes`` only with ``catalog``).  See
        :mod:`gamornet.gallery.sections`.
    title : str, optional
        Page title.
    png : str or os.PathLike, optional
        Also write the gallery as one PNG figure (a row per section).
    catalog_images : (catalog, survey images), optional
        For a table predicted from a catalogue (``gamornet predict --catalog
        --images``), instead of ``images``: the rows shown are cut again from
        the survey images, on the grid recorded in the table.
    progress : bool
        Show a progress bar while reading images.
    interval : {"percentile", "zscale"}
        Display interval of the asinh stretch, computed from the pixels of
        every image shown together.

    Returns
    -------
    pathlib.Path
        ``output``.

    Raises
    ------
    ValueError
        For bad arguments (naming them), missing columns, or table ids that
        no image (or, with ``catalog``, no true class) has, before any image
        is read and before ``output`` is written.
    NoRecordedImagesError
        A ValueError: neither ``images`` nor ``catalog_images`` given, and the
        table records no inputs, or inputs that no longer exist.
    """
    per_class = check_positive_int(per_class, "per_class")
    seed = check_positive_int(seed, "seed", minimum=0)
    progress = check_flag(progress, "progress")
    check_choice(interval, "interval", INTERVALS)
    output = _check_path(output, "output")
    png = _check_path(png, "png", allow_none=True)
    names = check_sections(sections, catalog is not None)
    if policy is not None:
        policy = get_policy(policy)
    rows = _open(predictions)
    if images is None and catalog_images is None:
        found = recorded_images(rows.meta)
        images, catalog_images = found["images"], found["catalog_images"]
    rule = _policy_of(rows.meta, policy, "label" not in rows.colnames or "borderline" in names)
    how = "the table's label column" if "label" in rows.colnames else f"policy {rule.name}"
    truth = None if catalog is None else TruthLookup(catalog)
    meta = {str(k).lower(): v for k, v in rows.meta.items()}  # FITS headers give upper-case keys
    index = image_index(images, catalog_images, meta)
    scan = _scan(rows, names, rule, truth, index, per_class, seed)
    if scan.absent:
        raise index.absent_error(scan.absent, scan.absent_examples, "catalog_images" if images is None else "images")
    built = scan.sampler.sections()
    shown = {int(r): index.ref(scan.cards[int(r)][0]) for s in built for leaf in s.leaves() for r in leaf.rows}
    pixels, reasons, stretch = _thumbnails(shown, meta, interval, progress)
    cards = {row: card_html(*scan.cards[row][:4], scan.cards[row][4],
                            None if pixels[row] is None else png_base64(pixels[row]), reasons[row]) for row in shown}
    title = title or f"GaMorNet gallery: {os.path.basename(rows.name)}"
    page = render_page(title, _summary(rows, scan, how, stretch, per_class, seed), built, cards)
    with atomic_path(output, suffix=".html") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    if png is not None:
        write_figure(built, pixels, {row: scan.cards[row][2] for row in shown}, png, title)
    return Path(output)
