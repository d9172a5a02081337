"""Thresholds chosen on labelled galaxies: the lowest reaching a target purity (or the highest keeping a completeness).

The published policies were tuned on the paper's samples; on another survey,
another redshift or a retrained model, the thresholds that give a wanted
purity differ.  :func:`choose_thresholds` finds them on held-out galaxies
whose true classes are known; :func:`gamornet.core.thresholds.save_policy`
keeps them in a policy file that ``gamornet predict --policy FILE`` applies.
"""

from __future__ import annotations

import numbers

import numpy as np

from gamornet.core.network import CLASS_NAMES
from gamornet.core.thresholds import ThresholdPolicy, check_probabilities, classify_probabilities, get_policy
from gamornet.evaluate.scores import as_class_labels, summary

__all__ = ["MIN_THRESHOLD", "choose_thresholds", "class_scores", "check_target"]

#: Lowest candidate threshold: with both thresholds at least 0.5, a galaxy passes at most one of them.
MIN_THRESHOLD = 0.5


def check_target(target_purity=None, target_completeness=None) -> tuple[str, float]:
    """``("purity", P)`` or ``("completeness", C)``: exactly one target, a number in (0, 1].

    Raises
    ------
    ValueError
        For no target, both targets, or a value that is not a number in (0, 1].
    """
    given = {k: v for k, v in (("purity", target_purity), ("completeness", target_completeness)) if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one of `target_purity` and `target_completeness`. Received: "
                         f"target_purity={target_purity!r}, target_completeness={target_completeness!r}")
    (kind, value), = given.items()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"`target_{kind}` must be a number in (0, 1]. Received: target_{kind}={value!r}")
    return kind, float(value)


def class_scores(probabilities, true_labels, policy) -> dict[str, dict]:
    """Purity and completeness of the disk and bulge calls of a policy on labelled galaxies.

    Returns
    -------
    dict
        ``{"disk": {...}, "bulge": {...}}``, each with ``threshold`` (the
        class's ``disk_min`` / ``bulge_min``), ``purity`` (true members among
        the galaxies called that class), ``completeness`` (called that class
        among the true members), ``n_called`` and ``n_true``.  Undefined
        ratios are NaN.
    """
    rule = get_policy(policy)
    s = summary(true_labels, classify_probabilities(probabilities, rule))
    counts = np.asarray(s["counts"])
    out = {}
    for cls, k, threshold in (("disk", 0, rule.disk_min), ("bulge", 2, rule.bulge_min)):
        out[cls] = {"threshold": float(threshold), "purity": s[f"{cls}_precision"],
                    "completeness": s[f"{cls}_recall"], "n_called": int(counts[:, k].sum()),
                    "n_true": int(counts[k].sum())}
    return out


def _class_threshold(scores: np.ndarray, is_true: np.ndarray, eligible: np.ndarray, cls: str, kind: str,
                     target: float) -> float:
    """The threshold on ``scores`` (``P_cls``) of one class, over the ``eligible`` galaxies; see choose_thresholds."""
    s = scores[eligible]
    # a probability may exceed 1 by rounding; the threshold 1.0 calls the same galaxies
    candidates = np.unique(np.minimum(s[s >= MIN_THRESHOLD], 1.0))
    received = f"Received: target_{kind}={target!r}"
    if candidates.size == 0:
        raise ValueError(f"no {cls} threshold can reach {kind} {target:g}: no galaxy has P_{cls} >= "
                         f"{MIN_THRESHOLD} (of {len(scores)}). {received}")
    above = len(s) - np.searchsorted(np.sort(s), candidates, side="left")  # called cls at each candidate
    true_scores = np.sort(s[is_true[eligible]])
    true_above = len(true_scores) - np.searchsorted(true_scores, candidates, side="left")
    if kind == "purity":
        value = true_above / above
    else:
        n_true = int(is_true.sum())  # every true member, also those another class's call took
        if n_true == 0:
            raise ValueError(f"no galaxy is a true {cls}, so the {cls} completeness is undefined. {received}")
        value = true_above / n_true
    reached = np.flatnonzero(value >= target)
    if reached.size == 0:
        best = int(np.argmax(value))  # the lowest threshold of the best value
        raise ValueError(f"no {cls} threshold >= {MIN_THRESHOLD} reaches {kind} {target:g} on these {len(scores)} "
                         f"galaxies: the best {kind} is {value[best]:.4f} (at P_{cls} >= {candidates[best]:.6g}, "
                         f"{above[best]} galaxies called {cls}). {received}")
    return float(candidates[reached[0] if kind == "purity" else reached[-1]])


def choose_thresholds(probabilities, true_labels, target_purity: float | None = None,
                      target_completeness: float | None = None, name: str | None = None) -> ThresholdPolicy:
    """Disk and bulge thresholds that reach a target purity (or completeness) on labelled galaxies.

    A galaxy is called bulge if ``P_bulge >= bulge_min``, else disk if
    ``P_disk >= disk_min``, else indeterminate (the rule of
    :class:`~gamornet.core.thresholds.ThresholdPolicy` without its strict and
    argmax options).  For each class separately:

    - with ``target_purity``: the **lowest** threshold at which the purity
      (true members among the galaxies called that class) is at least the
      target, so as many galaxies as possible are classified;
    - with ``target_completeness``: the **highest** threshold at which the
      completeness (true members called that class, among all true members)
      is still at least the target.

    Candidate thresholds are the distinct values of ``P_disk`` (``P_bulge``)
    of these galaxies that are at least 0.5, each evaluated exactly; every
    threshold between a candidate and the next lower one calls the same
    galaxies.  Thresholds of at least 0.5 make disk and bulge calls
    exclusive: ``P_disk`` and ``P_bulge`` cannot both exceed 0.5 in a row
    summing to 1.  The bulge threshold is chosen first; the disk one among
    the galaxies not called bulge, so both hold under the full rule, which
    is checked with :func:`~gamornet.core.thresholds.classify_probabilities`
    before the policy is returned.

    Purity depends on the mix of classes: thresholds chosen on one sample
    reach the target on another only if its class mix and image quality are
    alike.  Choose them on held-out galaxies, not those a model was trained on.

    Parameters
    ----------
    probabilities : array_like, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per galaxy.
    true_labels : array_like
        True classes: names, indices 0/1/2 or one-hot rows.
    target_purity, target_completeness : float, optional
        Exactly one, in (0, 1].
    name : str, optional
        Name of the policy (default ``purity_P`` or ``completeness_C``).

    Returns
    -------
    ThresholdPolicy

    Raises
    ------
    ValueError
        For bad arguments, or when no threshold reaches the target for a
        class: the message names the class, the target and the best value
        reachable with its threshold.
    """
    kind, target = check_target(target_purity, target_completeness)
    p = check_probabilities(probabilities)
    true = as_class_labels(true_labels, "true_labels")
    if len(true) != len(p):
        raise ValueError(f"`true_labels` must have one label per row of `probabilities`. Received: {len(true)} "
                         f"labels for {len(p)} rows")
    if name is None:
        name = f"{kind}_{target:g}"
    elif not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    everyone = np.ones(len(p), dtype=bool)
    bulge_min = _class_threshold(p[:, 2], true == CLASS_NAMES[2], everyone, "bulge", kind, target)
    disk_min = _class_threshold(p[:, 0], true == CLASS_NAMES[0], p[:, 2] < bulge_min, "disk", kind, target)
    policy = ThresholdPolicy(disk_min, bulge_min, name=name)
    reached = class_scores(p, true, policy)
    for cls, scores in reached.items():
        if not scores[kind] >= target:  # NaN fails too
            raise RuntimeError(f"the chosen {cls} threshold {scores['threshold']!r} gives {kind} {scores[kind]!r} "
                               f"< {target!r} under the classification rule")
    return policy
