"""Probability-threshold classification: probabilities -> disk / indeterminate / bulge.

The four published policies (Ghosh et al. 2020 prediction tables) are known
by name; any user thresholds can be given as a :class:`ThresholdPolicy`, a
``(disk, bulge)`` pair or a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gamornet.network import CLASS_NAMES

__all__ = ["ThresholdPolicy", "POLICIES", "get_policy", "classify_probabilities"]


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


def classify_probabilities(probabilities, policy="keras_sdss") -> np.ndarray:
    """Label each galaxy ``disk``, ``indeterminate`` or ``bulge``.

    Parameters
    ----------
    probabilities : array_like, shape (N, 3)
        ``[P_disk, P_indeterminate, P_bulge]`` per galaxy, as returned by the
        predict functions.
    policy : str, ThresholdPolicy, tuple or mapping
        ``"keras_sdss"``, ``"keras_candels"``, ``"tflearn_sdss"``,
        ``"tflearn_candels"`` or user thresholds (see :func:`get_policy`).

    Returns
    -------
    numpy.ndarray of str, shape (N,)
    """
    rule = get_policy(policy)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"`probabilities` must have shape (N, 3). Received: shape={p.shape}")
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
