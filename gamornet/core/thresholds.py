"""Probability-threshold classification: probabilities -> disk / indeterminate / bulge.

The four published policies (Ghosh et al. 2020 prediction tables) are known
by name; any user thresholds can be given as a :class:`ThresholdPolicy`, a
``(disk, bulge)`` pair or a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gamornet.core.network import CLASS_NAMES

__all__ = ["ThresholdPolicy", "POLICIES", "get_policy", "classify_probabilities", "check_probabilities"]


@dataclass(frozen=True)
class ThresholdPolicy:
    """Rule that turns ``[P_disk, P_indeterminate, P_bulge]`` into a label.

    A galaxy is ``bulge`` if ``P_bulge >= bulge_min`` (and, with
    ``bulge_argmax``, P_bulge is the largest); else ``disk`` if ``P_disk``
    passes ``disk_min`` (``>=``, or ``>`` with ``disk_strict``) and, with
    ``disk_argmax``, is larger than both other probabilities; else
    ``indeterminate``.

    Attributes
    ----------
    disk_min, bulge_min : float
        Probability thresholds in [0, 1].
    disk_strict : bool
        Compare ``P_disk > disk_min`` instead of ``>=``.
    disk_argmax, bulge_argmax : bool
        Also require the class to have the highest probability.
    name : str
        Label of the policy in tables and reports.
    """

    disk_min: float
    bulge_min: float
    disk_strict: bool = False
    disk_argmax: bool = False
    bulge_argmax: bool = False
    name: str = "custom"

    def __post_init__(self) -> None:
        for field in ("disk_min", "bulge_min"):
            value = getattr(self, field)
            if not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{field}` must be a probability in [0, 1]. Received: {field}={value!r}")


#: The published policies (Ghosh et al. 2020 prediction tables).
POLICIES: dict[str, ThresholdPolicy] = {
    "keras_sdss": ThresholdPolicy(0.70, 0.70, name="keras_sdss"),
    "keras_candels": ThresholdPolicy(0.0, 0.60, disk_strict=True, disk_argmax=True, name="keras_candels"),
    "tflearn_sdss": ThresholdPolicy(0.80, 0.80, name="tflearn_sdss"),
    "tflearn_candels": ThresholdPolicy(0.36, 0.55, disk_strict=True, disk_argmax=True, name="tflearn_candels"),
}


def get_policy(policy: str | ThresholdPolicy | tuple | Mapping) -> ThresholdPolicy:
    """Turn a policy name, a ``(disk_min, bulge_min)`` pair or a mapping into a policy.

    Raises
    ------
    ValueError
        For an unknown name or a malformed value.
    """
    if isinstance(policy, ThresholdPolicy):
        return policy
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"`policy` must be one of {sorted(POLICIES)} or thresholds. Received: policy={policy!r}")
        return POLICIES[policy]
    if isinstance(policy, Mapping):
        try:
            return ThresholdPolicy(**policy)
        except TypeError as exc:
            raise ValueError(f"`policy` mapping has unknown keys ({exc}). Received: policy={policy!r}") from None
    if isinstance(policy, (tuple, list)) and len(policy) == 2:
        return ThresholdPolicy(float(policy[0]), float(policy[1]))
    raise ValueError(
        "`policy` must be a policy name, a ThresholdPolicy, a (disk_min, bulge_min) pair or a mapping. "
        f"Received: policy={policy!r}"
    )


#: How far a probability may stray outside [0, 1]: float32 softmax outputs can
#: exceed 1 by a few units in the last place (ulp 1.2e-7 at 1) when the
#: normalisation multiplies by a rounded reciprocal; 1e-6 allows 8 ulps.
PROBABILITY_TOLERANCE = 1e-6
#: How far a row's sum may be from 1.  float32 rows (and means of Monte-Carlo
#: passes) sum to 1 within a few 1e-7, but a model computing in bfloat16
#: (``mixed_precision="bfloat16"``; 8 significant bits, unit roundoff
#: 2**-8 = 0.0039) rounds the exponentials, their sum and each quotient, so a
#: row may be off by up to about 4 units, 0.016 (0.006 measured over 256
#: images).  0.02 admits those and rows printed with few decimals, and still
#: refuses rows that are not a distribution over the three classes.
SUM_TOLERANCE = 0.02


def check_probabilities(probabilities, name: str = "probabilities") -> np.ndarray:
    """Check ``(N, 3)`` rows ``[P_disk, P_indeterminate, P_bulge]``; return them as float64.

    Every value must be finite and in [0, 1] (within
    :data:`PROBABILITY_TOLERANCE`), and every row must sum to 1 within
    :data:`SUM_TOLERANCE`.

    Raises
    ------
    ValueError
        For a wrong shape, or rows that are not probabilities, naming them.
    """
    arr = np.asarray(probabilities)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must be numbers. Received: dtype={arr.dtype}")
    p = arr.astype(np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"`{name}` must have shape (N, 3). Received: shape={p.shape}")
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(p).all(axis=1)
        in_range = finite & (p >= -PROBABILITY_TOLERANCE).all(axis=1) & (p <= 1 + PROBABILITY_TOLERANCE).all(axis=1)
        total = p.sum(axis=1)
        good = in_range & (np.abs(total - 1.0) <= SUM_TOLERANCE)
    if not good.all():
        bad = np.flatnonzero(~good)
        shown = []
        for k in bad[:5]:
            why = ("not finite" if not finite[k] else "outside [0, 1]" if not in_range[k]
                   else f"sums to {total[k]:.6g}")
            shown.append(f"row {k} = {p[k].tolist()} ({why})")
        raise ValueError(
            f"`{name}` rows must be probabilities [P_disk, P_indeterminate, P_bulge]: finite, each in [0, 1] and "
            f"summing to 1 (within {SUM_TOLERANCE:g}). Received: {bad.size} bad row(s) of {len(p)}: "
            f"{'; '.join(shown)}{' ...' if bad.size > 5 else ''}"
        )
    return p


def classify_probabilities(probabilities, policy="keras_sdss") -> np.ndarray:
    """Label each galaxy ``disk``, ``indeterminate`` or ``bulge``.

    Parameters
    ----------
    probabilities : array_like, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per galaxy, as returned by the
        predict functions: finite, in [0, 1], each row summing to 1 (see
        :func:`check_probabilities`).
    policy : str, ThresholdPolicy, tuple or mapping
        ``"keras_sdss"``, ``"keras_candels"``, ``"tflearn_sdss"``,
        ``"tflearn_candels"`` or user thresholds (see :func:`get_policy`).

    Returns
    -------
    numpy.ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        For rows that are not probabilities (NaN, outside [0, 1], not summing
        to 1), naming them.
    """
    rule = get_policy(policy)
    p = check_probabilities(probabilities)
    disk, indet, bulge = p[:, 0], p[:, 1], p[:, 2]
    is_bulge = bulge >= rule.bulge_min
    if rule.bulge_argmax:
        is_bulge &= (bulge > disk) & (bulge > indet)
    is_disk = disk > rule.disk_min if rule.disk_strict else disk >= rule.disk_min
    if rule.disk_argmax:
        is_disk &= (disk > indet) & (disk > bulge)
    labels = np.full(p.shape[0], CLASS_NAMES[1], dtype="<U13")
    labels[is_disk] = CLASS_NAMES[0]
    labels[is_bulge] = CLASS_NAMES[2]
    return labels
