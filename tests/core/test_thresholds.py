"""Probability thresholds: the published policies, user thresholds, policy files, and which rows are probabilities."""

import json

import numpy as np
import pytest

from gamornet.core.thresholds import (
    POLICIES,
    POLICY_FILE_FORMAT,
    ThresholdPolicy,
    classify_probabilities,
    get_policy,
    load_policy,
    policy_from_meta,
    policy_meta,
    save_policy,
)


def test_published_policies_at_their_boundaries():
    p = np.array([
        [0.70, 0.20, 0.10],  # disk for keras_sdss (>=), not for tflearn_sdss
        [0.10, 0.20, 0.70],  # bulge for keras_sdss
        [0.69, 0.30, 0.01],
        [0.80, 0.10, 0.10],
        [0.37, 0.33, 0.30],  # disk by argmax for CANDELS policies
        [0.36, 0.34, 0.30],  # keras_candels disk; tflearn_candels needs > 0.36
        [0.30, 0.15, 0.55],  # tflearn_candels bulge (>= 0.55), keras_candels needs 0.60
        [0.30, 0.40, 0.30],
    ])
    expect = {
        "keras_sdss": ["disk", "bulge", "indeterminate", "disk", "indeterminate", "indeterminate", "indeterminate",
                       "indeterminate"],
        "tflearn_sdss": ["indeterminate", "indeterminate", "indeterminate", "disk"] + ["indeterminate"] * 4,
        "keras_candels": ["disk", "bulge", "disk", "disk", "disk", "disk", "indeterminate", "indeterminate"],
        "tflearn_candels": ["disk", "bulge", "disk", "disk", "disk", "indeterminate", "bulge", "indeterminate"],
    }
    for name, labels in expect.items():
        assert list(classify_probabilities(p, name)) == labels, name


def test_user_thresholds():
    p = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.45, 0.1, 0.45]])
    assert list(classify_probabilities(p, (0.6, 0.6))) == ["disk", "bulge", "indeterminate"]
    assert list(classify_probabilities(p, {"disk_min": 0.4, "bulge_min": 0.9})) == ["disk", "indeterminate", "disk"]
    assert get_policy(ThresholdPolicy(0.5, 0.5)).disk_min == 0.5


@pytest.mark.parametrize("bad", ["keras_hst", (1.2, 0.5), {"disk": 0.5}, 3])
def test_bad_policy(bad):
    with pytest.raises(ValueError, match=r"Received: "):
        classify_probabilities(np.full((1, 3), 1 / 3), bad)


def test_probabilities_shape_checked():
    with pytest.raises(ValueError, match=r"`probabilities` must have shape \(N, 3\)"):
        classify_probabilities(np.zeros((3, 2)))


def _bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (8 significant bits, ties to even), as float32."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def test_model_outputs_are_accepted_as_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 8.0, size=(2000, 3)).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax32 = e / e.sum(axis=1, keepdims=True)  # float32 arithmetic
    reciprocal = e * (np.float32(1) / e.sum(axis=1, keepdims=True))  # normalised by a rounded reciprocal
    eb = _bf16(np.exp(_bf16(logits - logits.max(axis=1, keepdims=True))))
    softmax16 = _bf16(eb / _bf16(eb.sum(axis=1, keepdims=True)))  # a model computing in bfloat16
    passes = logits + rng.normal(0.0, 2.0, size=(10, *logits.shape)).astype(np.float32)  # dropout-like passes
    e_passes = np.exp(passes - passes.max(axis=2, keepdims=True))
    mc_mean = (e_passes / e_passes.sum(axis=2, keepdims=True)).astype(np.float64).mean(axis=0).astype(np.float32)
    for p in (softmax32, reciprocal, softmax16, mc_mean):
        assert classify_probabilities(p).shape == (2000,)
    assert np.abs(softmax16.sum(axis=1) - 1).max() > 1e-3  # bfloat16 rows are further from 1 than float32 ones
    above_one = np.nextafter(np.float32(1), np.float32(2))  # 1.0000001, one float32 step above 1
    edge = np.array([[above_one, 0.0, 0.0], [0.0, 0.0, above_one]], np.float32)
    assert list(classify_probabilities(edge)) == ["disk", "bulge"]


@pytest.mark.parametrize(
    "row, why",
    [
        ([np.nan, 0.5, 0.5], "not finite"),
        ([np.inf, 0.0, 0.0], "not finite"),
        ([-1.0, 0.5, 1.5], r"outside \[0, 1\]"),
        ([0.0, 0.0, 1.001], r"outside \[0, 1\]"),
        ([0.5, 0.5, 0.5], "sums to 1.5"),
        ([0.2, 0.2, 0.2], "sums to 0.6"),
    ],
)
def test_rows_that_are_not_probabilities_are_refused(row, why):
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], row, [0.2, 0.6, 0.2]])
    pattern = rf"`probabilities` rows must be probabilities.*1 bad row\(s\) of 4: row 2 = .*{why}"
    with pytest.raises(ValueError, match=pattern):
        classify_probabilities(p)


# --------------------------------------------------------------------------- policy files


def test_policy_file_round_trip(tmp_path):
    rule = ThresholdPolicy(0.6123456789012345, 0.7700000001, disk_argmax=True, name="purity_0.9")
    path = save_policy(rule, tmp_path / "policy.json", target_purity=np.float64(0.9), n_galaxies=np.int64(40),
                       achieved={"disk": {"purity": np.float32(0.95), "completeness": np.nan}})
    assert path == tmp_path / "policy.json" and load_policy(path) == rule  # thresholds kept to the last bit
    record = json.loads(path.read_text())
    assert record["format"] == POLICY_FILE_FORMAT and record["name"] == "purity_0.9"
    assert record["provenance"] == {"target_purity": 0.9, "n_galaxies": 40,
                                    "achieved": {"disk": {"purity": float(np.float32(0.95)), "completeness": None}}}
    assert get_policy(str(path)) == get_policy(path) == rule  # a str ending in .json or any os.PathLike
    below_disk, below_bulge = np.nextafter(rule.disk_min, 0), np.nextafter(rule.bulge_min, 0)  # one step lower
    p = np.array([[0.62, 0.3, 0.08], [rule.disk_min, 0.38, 0.0076], [below_disk, 0.38, 0.0076],
                  [0.1, 0.13, rule.bulge_min], [0.1, 0.13, below_bulge], [0.40, 0.2, 0.40]])
    expect = ["disk", "disk", "indeterminate", "bulge", "indeterminate", "indeterminate"]
    assert list(classify_probabilities(p, rule)) == expect
    assert list(classify_probabilities(p, str(path))) == list(classify_probabilities(p, path)) == expect
    assert list(classify_probabilities(p, "keras_sdss")) == ["indeterminate"] * 3 + ["bulge"] * 2 + ["indeterminate"]
    (tmp_path / "no_name.json").write_text('{"disk_min": 0.6, "bulge_min": 0.7}')  # fields of the rule suffice
    assert load_policy(tmp_path / "no_name.json") == ThresholdPolicy(0.6, 0.7, name="no_name")
    with pytest.raises(ValueError, match=r"`path` must be a file path ending in \.json. Received: path="):
        save_policy(rule, tmp_path / "policy.txt")


@pytest.mark.parametrize("text", ["keras_hst", "chosen/policy.json", "policy.yaml"])
def test_neither_a_name_nor_a_policy_file(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text('{"disk_min": 0.6, "bulge_min": 0.7}')  # not a .json name
    pattern = (r"`policy` must be one of \['keras_candels', 'keras_sdss', 'tflearn_candels', 'tflearn_sdss'\] "
               r"\(the published policies\) or the path of an existing \.json policy file.*"
               rf"Received: policy='{text}'")
    with pytest.raises(ValueError, match=pattern):
        get_policy(text)
    with pytest.raises(FileNotFoundError, match="no such policy file"):
        get_policy(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "Expecting property name"),
        ("[0.6, 0.7]", "a JSON list, not an object"),
        ('{"disk_min": 0.6}', r"missing field\(s\) \['bulge_min'\]"),
        ('{"disk_min": 0.6, "bulge_min": 0.7, "disk_max": 1}', r"unknown field\(s\) \['disk_max'\]"),
        ('{"disk_min": "0.6", "bulge_min": 0.7}', "disk_min must be a number"),
        ('{"disk_min": 0.6, "bulge_min": 0.7, "disk_strict": "yes"}', "disk_strict must be true or false"),
        ('{"disk_min": 0.6, "bulge_min": 1.7}', r"`bulge_min` must be a probability in \[0, 1\]"),
        ('{"format": "other 2", "disk_min": 0.6, "bulge_min": 0.7}', "format is 'other 2'"),
    ],
)
def test_malformed_policy_file_is_named(tmp_path, content, why):
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"`policy` file {path} is not a threshold policy file \(.*{why}.*"
                                         rf"Received: policy='{path}'"):
        classify_probabilities(np.full((1, 3), 1 / 3), str(path))


def test_policy_recorded_in_table_metadata():
    rule = ThresholdPolicy(0.8123, 0.6, disk_strict=True, name="completeness_0.8")
    meta = policy_meta(rule)
    assert meta["policy"] == "completeness_0.8" and json.loads(meta["policy_thresholds"])["disk_min"] == 0.8123
    assert policy_from_meta(meta) == rule
    assert policy_from_meta({k.upper(): v for k, v in meta.items()}) == rule  # FITS headers: upper-case keys
    assert policy_from_meta({"policy": "tflearn_sdss"}) == POLICIES["tflearn_sdss"]  # tables of earlier versions
    assert policy_from_meta({"policy": "custom"}) is None and policy_from_meta({}) is None
    with pytest.raises(ValueError, match=r"policy_thresholds is not a policy's thresholds .*Received: "):
        policy_from_meta({"policy": "x", "policy_thresholds": '{"disk_min": 0.5}'})
