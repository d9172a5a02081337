"""Probability-threshold classification: probabilities -> disk / indeterminate / bulge.

The four published policies (Ghosh et al. 2020 prediction tables) are known
by name; any user thresholds can be given as a :class:`ThresholdPolicy`, a
``(disk, bulge)`` pair, a mapping, or the path of a policy file.

A policy file (``policy.json``, written by :func:`save_policy`, e.g. by
``gamornet evaluate --target-purity``) is a JSON object with the fields of
:class:`ThresholdPolicy` (``name``, ``disk_min``, ``bulge_min``,
``disk_strict``, ``disk_argmax``, ``bulge_argmax``), ``format``
(:data:`POLICY_FILE_FORMAT`) and ``provenance``: how the thresholds were
chosen (target, the purity and completeness reached per class, the number
of galaxies, the digests of the tables).  :func:`load_policy` reads it, and
:func:`get_policy` / :func:`classify_probabilities` accept its path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gamornet.core.files import atomic_path
from gamornet.core.network import CLASS_NAMES

__all__ = ["ThresholdPolicy", "POLICIES", "POLICY_FILE", "POLICY_FILE_FORMAT", "get_policy", "save_policy",
           "load_policy", "policy_meta", "policy_from_meta", "classify_probabilities", "check_probabilities"]


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


#: File name of a policy in a folder (``gamornet evaluate --target-purity`` writes ``OUTPUT/policy.json``).
POLICY_FILE = "policy.json"
#: The ``format`` field of a policy file.
POLICY_FILE_FORMAT = "gamornet threshold policy 1"
#: The fields of a policy file that describe the rule (those of :class:`ThresholdPolicy`).
_FIELDS = tuple(f.name for f in dataclasses.fields(ThresholdPolicy))


def _is_policy_file(policy) -> bool:
    """Whether ``policy`` names a policy file: any os.PathLike, or a str ending in .json that is a file."""
    if isinstance(policy, os.PathLike):
        return True
    return isinstance(policy, str) and policy.lower().endswith(".json") and os.path.isfile(policy)


def get_policy(policy: str | os.PathLike | ThresholdPolicy | tuple | Mapping) -> ThresholdPolicy:
    """Turn a policy name, a policy file, a ``(disk_min, bulge_min)`` pair or a mapping into a policy.

    A string is a published policy name (:data:`POLICIES`) or the path of an
    existing ``.json`` policy file (:func:`load_policy`); an
    :class:`os.PathLike` is always a policy file.

    Raises
    ------
    ValueError
        For a string that is neither a published name nor an existing
        ``.json`` file, a malformed policy file (naming it) or a malformed
        value.
    FileNotFoundError
        For an :class:`os.PathLike` that is not a file.
    """
    if isinstance(policy, ThresholdPolicy):
        return policy
    if isinstance(policy, str) and policy in POLICIES:
        return POLICIES[policy]
    if _is_policy_file(policy):
        return load_policy(policy)
    if isinstance(policy, str):
        missing = " (no such file)" if policy.lower().endswith(".json") else ""
        raise ValueError(f"`policy` must be one of {sorted(POLICIES)} (the published policies) or the path of an "
                         f"existing .json policy file{missing}, as gamornet evaluate --target-purity writes. "
                         f"Received: policy={policy!r}")
    if isinstance(policy, Mapping):
        try:
            return ThresholdPolicy(**policy)
        except TypeError as exc:
            raise ValueError(f"`policy` mapping has unknown keys ({exc}). Received: policy={policy!r}") from None
    if isinstance(policy, (tuple, list)) and len(policy) == 2:
        return ThresholdPolicy(float(policy[0]), float(policy[1]))
    raise ValueError(
        "`policy` must be a policy name, a policy file, a ThresholdPolicy, a (disk_min, bulge_min) pair or a mapping. "
        f"Received: policy={policy!r}"
    )


def _json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made Python values and NaN / inf made None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _rule_fields(policy: ThresholdPolicy) -> dict:
    """The fields of a policy as JSON values (thresholds as Python floats, written exactly by ``repr``)."""
    fields = dataclasses.asdict(policy)
    return {k: (float(v) if k in ("disk_min", "bulge_min") else v) for k, v in fields.items()}


def save_policy(policy, path: str | os.PathLike, **provenance) -> Path:
    """Write a threshold policy as a JSON policy file, atomically.

    Parameters
    ----------
    policy : str, ThresholdPolicy, tuple or mapping
        Anything :func:`get_policy` accepts.
    path : str or os.PathLike
        The file to write; its name must end in ``.json``.
    **provenance
        How the policy was chosen (JSON-able values; numpy values are
        converted, NaN is written as null), stored under ``provenance``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    rule = get_policy(policy)
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).lower().endswith(".json"):
        raise ValueError(f"`path` must be a file path ending in .json. Received: path={path!r}")
    record = {"format": POLICY_FILE_FORMAT, "name": rule.name, **_rule_fields(rule),
              "provenance": _json_ready(provenance)}
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w", encoding="utf8") as f:
        f.write(text)
    return Path(path)


def _policy_from_fields(fields: Mapping, default_name: str) -> ThresholdPolicy:
    """A policy from the JSON fields of a policy file or of table metadata; ValueError saying what is wrong."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; expected {list(_FIELDS)}")
    missing = [k for k in ("disk_min", "bulge_min") if k not in fields]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    for key in ("disk_min", "bulge_min"):
        if isinstance(fields[key], bool) or not isinstance(fields[key], (int, float)):
            raise ValueError(f"{key} must be a number, not {fields[key]!r}")
    for key in ("disk_strict", "disk_argmax", "bulge_argmax"):
        if not isinstance(fields.get(key, False), bool):
            raise ValueError(f"{key} must be true or false, not {fields[key]!r}")
    name = fields.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    return ThresholdPolicy(**{**fields, "name": name, "disk_min": float(fields["disk_min"]),
                              "bulge_min": float(fields["bulge_min"])})


def load_policy(path: str | os.PathLike, name: str = "policy") -> ThresholdPolicy:
    """Read a policy file written by :func:`save_policy` (its ``provenance`` is not needed to use it).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.json`` policy file.
    name : str
        Argument name used in error messages.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a policy file (not JSON, another format, missing
        or malformed fields), naming the file and what is wrong.
    """
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"`{name}`: no such policy file. Received: {name}={file!r}")
    try:
        with open(file, encoding="utf8") as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        if record.get("format", POLICY_FILE_FORMAT) != POLICY_FILE_FORMAT:
            raise ValueError(f"format is {record['format']!r}, not {POLICY_FILE_FORMAT!r}")
        fields = {k: v for k, v in record.items() if k not in ("format", "provenance")}
        return _policy_from_fields(fields, Path(file).stem)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"`{name}` file {file} is not a threshold policy file ({exc}). Received: "
                         f"{name}={file!r}") from None


def policy_meta(policy) -> dict[str, str]:
    """Table metadata recording a policy: ``policy`` (its name) and ``policy_thresholds`` (its rule as JSON text).

    Both are strings, so they keep in every table format (FITS headers
    included) and compare equal between the shards of one run.
    """
    rule = get_policy(policy)
    fields = {k: v for k, v in _rule_fields(rule).items() if k != "name"}
    return {"policy": rule.name, "policy_thresholds": json.dumps(fields)}


def policy_from_meta(meta: Mapping) -> ThresholdPolicy | None:
    """The policy a table's metadata records (:func:`policy_meta`), or None when it records none that can be used.

    A ``policy_thresholds`` entry gives the rule (named by ``policy``); without
    it, ``policy`` must be a published name.  Keys are matched in any case
    (FITS headers give them in upper case).

    Raises
    ------
    ValueError
        If ``policy_thresholds`` is not a policy's thresholds.
    """
    lower = {str(k).lower(): v for k, v in meta.items()}
    name, text = lower.get("policy"), lower.get("policy_thresholds")
    if text is None:
        return POLICIES.get(str(name)) if name is not None else None
    try:
        fields = json.loads(str(text))
        if not isinstance(fields, dict):
            raise ValueError(f"a JSON {type(fields).__name__}, not an object")
        return _policy_from_fields({**fields, "name": str(name) if name is not None else "custom"}, "custom")
    except ValueError as exc:
        raise ValueError(f"table metadata policy_thresholds is not a policy's thresholds ({exc}). Received: "
                         f"policy_thresholds={text!r}") from None


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
    policy : str, os.PathLike, ThresholdPolicy, tuple or mapping
        ``"keras_sdss"``, ``"keras_candels"``, ``"tflearn_sdss"``,
        ``"tflearn_candels"``, the path of a policy file (``.json``, see
        :func:`save_policy`) or user thresholds (see :func:`get_policy`).

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
