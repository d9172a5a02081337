"""What a gallery shows: the rows of a prediction table, their labels and truth, and the sections they fall in.

Sections
--------
``disk``, ``indeterminate``, ``bulge``
    The rows of each label, most confident (highest probability of that
    label) first.
``borderline``
    The rows within :data:`BORDERLINE_MARGIN` of a decision boundary of the
    threshold policy, nearest first.  A row's distance to the boundary is
    ``min(|s_disk|, |s_bulge|)``, where ``s_disk = P_disk - disk_min`` (and,
    for a policy that also asks the disk probability to be the largest, at
    most ``P_disk - max(P_indeterminate, P_bulge)``), and ``s_bulge`` the same
    for the bulge class: how far the probabilities are from changing a disk
    or bulge decision.
``mistakes``
    With true labels: one subsection per off-diagonal cell of the confusion
    matrix (true disks labelled bulge, ...), each with its count, most
    confident (in the wrong label) first.

Each section (subsection) shows at most ``per_class`` of its rows, then
ordered: those whose ids have the smallest keys :func:`sample_keys` (a
64-bit hash of ``seed``, the section's name and the id's text).  The sample
is a random one, the same for the same seed, and depends on nothing else:
neither the order of the table's rows nor how the table is read in batches
(:class:`SectionSampler` counts and samples one batch at a time, keeping
``per_class`` rows per section).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gamornet.core.network import CLASS_NAMES
from gamornet.core.thresholds import ThresholdPolicy

__all__ = ["SECTION_NAMES", "BORDERLINE_MARGIN", "Section", "check_sections", "borderline_distance",
           "sample_keys", "SectionSampler", "build_sections"]

#: Every section name, in the order of the page.
SECTION_NAMES: tuple[str, ...] = (*CLASS_NAMES, "borderline", "mistakes")
#: Rows whose probabilities lie within this distance of a decision boundary of the policy are borderline.
BORDERLINE_MARGIN = 0.05


@dataclass
class Section:
    """One section (or subsection) of a gallery.

    Attributes
    ----------
    key : str
        Its name on the page (``disk``, ``borderline``, ``mistakes-disk-as-bulge``...).
    title : str
        Its heading.
    count : int
        How many rows of the table belong to it.
    rows : numpy.ndarray
        The rows shown (positions in the table), in page order.
    note : str
        What it shows and in what order.
    children : list of Section
        Subsections (``mistakes``).
    """

    key: str
    title: str
    count: int
    rows: np.ndarray
    note: str = ""
    children: list[Section] = field(default_factory=list)

    def leaves(self) -> list[Section]:
        """This section, or its subsections when it has them."""
        return self.children or [self]


def check_sections(sections, has_truth: bool) -> tuple[str, ...]:
    """The section names to show, in page order.

    Raises
    ------
    ValueError
        For unknown names, an empty selection, or ``mistakes`` without true labels.
    """
    if sections is None:
        return tuple(s for s in SECTION_NAMES if has_truth or s != "mistakes")
    names = [sections] if isinstance(sections, str) else list(sections)
    unknown = [s for s in names if s not in SECTION_NAMES]
    if unknown or not names:
        raise ValueError(f"`sections` must be None or a non-empty subset of {list(SECTION_NAMES)}; unknown: "
                         f"{unknown}. Received: sections={sections!r}")
    if "mistakes" in names and not has_truth:
        raise ValueError("`sections`: 'mistakes' needs true labels: pass `catalog` (a table with a label or bt "
                         f"column). Received: sections={sections!r}")
    return tuple(s for s in SECTION_NAMES if s in names)


def _score(p: np.ndarray, other: np.ndarray, minimum: float, argmax: bool) -> np.ndarray:
    score = p - minimum
    return np.minimum(score, p - other) if argmax else score


def borderline_distance(probs: np.ndarray, policy: ThresholdPolicy) -> np.ndarray:
    """How far each row's probabilities are from a disk or bulge decision boundary of ``policy``."""
    disk, indet, bulge = probs[:, 0], probs[:, 1], probs[:, 2]
    s_disk = _score(disk, np.maximum(indet, bulge), policy.disk_min, policy.disk_argmax)
    s_bulge = _score(bulge, np.maximum(indet, disk), policy.bulge_min, policy.bulge_argmax)
    return np.minimum(np.abs(s_disk), np.abs(s_bulge))


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every bit of the result depends on every bit of ``z`` (arrays wrap, no warning)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _text_hashes(texts: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each text's code points (``texts`` of dtype str)."""
    codes = texts.view(np.uint32).reshape(len(texts), texts.dtype.itemsize // 4)
    h = np.full(len(texts), _FNV_OFFSET, dtype=np.uint64)
    for column in codes.T:  # a str array pads with code 0, which no text holds: the padding is skipped
        h = np.where(column != 0, (h ^ column.astype(np.uint64)) * _FNV_PRIME, h)
    return h


def sample_keys(ids, seed: int, key: str) -> np.ndarray:
    """Sampling keys (uint64) of rows with ``ids`` in section ``key``: a hash of ``seed``, ``key`` and the id's text.

    A section shows its rows with the smallest keys, so its sample depends
    on the seed, the section and the ids alone.
    """
    return _salted(_text_hashes(np.asarray(ids).astype(str)), seed, key)


def _salted(hashes: np.ndarray, seed: int, key: str) -> np.ndarray:
    return _mix(hashes ^ _mix(_text_hashes(np.array([f"{int(seed)}:{key}"]))))


@dataclass
class _Leaf:
    """A section (subsection) being sampled: its count and its rows with the smallest keys so far."""

    key: str
    title: str
    note: str
    descending: bool
    count: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def add(self, rows: np.ndarray, keys: np.ndarray, values: np.ndarray, per_class: int) -> None:
        self.count += len(rows)
        keys, rows, values = (np.concatenate(pair) for pair in ((self.keys, keys), (self.rows, rows),
                                                               (self.values, values)))
        keep = np.lexsort((rows, keys))[:per_class]  # equal keys (2**-64 a pair): the first row
        self.keys, self.rows, self.values = keys[keep], rows[keep], values[keep]

    def section(self) -> Section:
        order = np.lexsort((self.rows, -self.values if self.descending else self.values))  # ties in table order
        return Section(self.key, self.title, self.count, self.rows[order], self.note)


class SectionSampler:
    """The sections ``names`` of a table read in batches: :meth:`add` each batch, then :meth:`sections`.

    Memory is that of ``per_class`` rows per section, whatever the table's length.

    Parameters
    ----------
    names : sequence of str
        From :func:`check_sections`.
    policy : ThresholdPolicy or None
        Of the ``borderline`` section (needed only for it).
    per_class, seed : int
        Rows shown per section at most; seed of the sample (:func:`sample_keys`).
    """

    def __init__(self, names, policy: ThresholdPolicy | None, per_class: int, seed: int):
        self.names, self.policy, self.per_class, self.seed = tuple(names), policy, int(per_class), int(seed)
        self._leaves: dict[str, _Leaf] = {}
        for name in self.names:
            if name in CLASS_NAMES:
                self._leaves[name] = _Leaf(name, name, f"most confident first (P_{name})", True)
            elif name == "borderline":
                note = (f"within {BORDERLINE_MARGIN:g} of a decision boundary of {policy.name} (P_disk vs "
                        f"{policy.disk_min:g}, P_bulge vs {policy.bulge_min:g}), nearest first")
                self._leaves[name] = _Leaf(name, name, note, False)
            else:
                for true_name, label in _mistake_cells():
                    key = f"mistakes-{true_name}-as-{label}"
                    self._leaves[key] = _Leaf(key, f"true {true_name}, labelled {label}",
                                              f"most confident first (P_{label})", True)

    def add(self, rows: np.ndarray, ids, probs: np.ndarray, labels: np.ndarray, truth: np.ndarray | None = None):
        """Count and sample the rows ``rows`` (positions in the table) of one batch, with their ids, probabilities,
        labels and (for ``mistakes``) true labels."""
        rows = np.asarray(rows, dtype=np.int64)
        hashes = _text_hashes(np.asarray(ids).astype(str, copy=False))
        for key, leaf in self._leaves.items():
            if key in CLASS_NAMES:
                chosen, values = labels == key, probs[:, CLASS_NAMES.index(key)]
            elif key == "borderline":
                values = borderline_distance(probs, self.policy)
                chosen = values <= BORDERLINE_MARGIN
            else:
                true_name, label = key.removeprefix("mistakes-").split("-as-")
                chosen, values = (truth == true_name) & (labels == label), probs[:, CLASS_NAMES.index(label)]
            where = np.flatnonzero(chosen)
            leaf.add(rows[where], _salted(hashes[where], self.seed, key), values[where], self.per_class)

    def kept(self) -> set[int]:
        """The rows sampled so far (at most ``per_class`` a section)."""
        return {int(r) for leaf in self._leaves.values() for r in leaf.rows}

    def sections(self) -> list[Section]:
        """The sections, in page order, each with its count and its rows shown in page order."""
        out = []
        for name in self.names:
            if name != "mistakes":
                out.append(self._leaves[name].section())
                continue
            children = [self._leaves[f"mistakes-{t}-as-{n}"].section() for t, n in _mistake_cells()]
            out.append(Section("mistakes", "mistakes", sum(child.count for child in children),
                               np.zeros(0, np.intp), "every off-diagonal cell of the confusion matrix (rows: true "
                               "class)", children))
        return out


def _mistake_cells() -> list[tuple[str, str]]:
    return [(t, n) for t in CLASS_NAMES for n in CLASS_NAMES if t != n]


def build_sections(names, labels: np.ndarray, probs: np.ndarray, truth: np.ndarray | None,
                   policy: ThresholdPolicy | None, per_class: int, seed: int, ids=None) -> list[Section]:
    """The sections ``names`` (see :func:`check_sections`) of the rows with ``labels``, ``probs`` and ``truth``.

    ``ids`` (default: the row numbers) are what the sample is drawn by
    (:func:`sample_keys`); a table read in batches uses :class:`SectionSampler`.
    """
    sampler = SectionSampler(names, policy, per_class, seed)
    rows = np.arange(len(labels))
    sampler.add(rows, rows if ids is None else ids, np.asarray(probs, dtype=np.float64), np.asarray(labels),
                None if truth is None else np.asarray(truth))
    return sampler.sections()
