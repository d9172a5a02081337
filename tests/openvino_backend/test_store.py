"""Converted models on disk: keys, whole folders or none, leftovers of killed runs, pruning.

The folder logic needs no OpenVINO: ``save`` here writes the two files a
conversion writes (the conversion itself is tested in tests/test_engines.py).
"""

from __future__ import annotations

import json
import os

import pytest

from gamornet.openvino_backend import store


def description(source="/models/a.keras", mtime=1, shape=(32, 32, 1), lrn=None, openvino="2026.4.1"):
    return {"source": source, "fingerprint": [[source, mtime, 1000]], "input_shape": list(shape), "lrn": lrn,
            "versions": {"gamornet": "1.0", "keras": "3.15.1", "openvino": openvino}}


def writer(xml_text="<net/>", weights=b"\0" * 64):
    def save(xml_path):
        with open(xml_path, "w") as f:
            f.write(xml_text)
        with open(xml_path[: -len(".xml")] + ".bin", "wb") as f:
            f.write(weights)

    return save


def test_key_depends_on_every_part_of_the_description():
    base = store.entry_key(description())
    assert store.entry_key(description()) == base
    for changed in (dict(mtime=2), dict(shape=(83, 83, 1)), dict(lrn="tflearn"), dict(openvino="2026.5.0"),
                    dict(source="/models/b.keras")):
        assert store.entry_key(description(**changed)) != base, changed


def test_saved_entry_is_found_and_whole(tmp_path):
    d = description()
    assert store.find_entry(tmp_path, d) is None
    xml = store.save_entry(tmp_path, d, writer())
    assert xml == tmp_path / store.entry_key(d) / store.MODEL_XML
    assert store.find_entry(tmp_path, d) == xml
    assert sorted(os.listdir(xml.parent)) == [store.MANIFEST, store.MODEL_BIN, store.MODEL_XML]
    assert [p.name for p in tmp_path.iterdir()] == [xml.parent.name]  # no temporary folder left
    manifest = json.loads((xml.parent / store.MANIFEST).read_text())
    assert manifest["description"] == d and manifest["sizes"] == {"model.xml": 6, "model.bin": 64}
    assert store.find_entry(tmp_path, description(mtime=2)) is None


def test_folder_mode_is_that_of_a_plain_mkdir(tmp_path):
    xml = store.save_entry(tmp_path, description(), writer())
    plain = tmp_path / "plain"
    plain.mkdir()
    assert xml.parent.stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize("damage", ["truncated bin", "missing manifest", "other description", "bad manifest"])
def test_damaged_entry_is_not_found_and_is_replaced(tmp_path, damage):
    d = description()
    xml = store.save_entry(tmp_path, d, writer())
    if damage == "truncated bin":
        (xml.parent / store.MODEL_BIN).write_bytes(b"\0" * 10)
    elif damage == "missing manifest":
        (xml.parent / store.MANIFEST).unlink()
    elif damage == "bad manifest":
        (xml.parent / store.MANIFEST).write_text("{not json")
    else:
        manifest = json.loads((xml.parent / store.MANIFEST).read_text())
        manifest["description"]["lrn"] = "tflearn"
        (xml.parent / store.MANIFEST).write_text(json.dumps(manifest))
    assert store.find_entry(tmp_path, d) is None
    assert store.save_entry(tmp_path, d, writer(weights=b"\1" * 80)) == xml
    assert store.find_entry(tmp_path, d) == xml and (xml.parent / store.MODEL_BIN).read_bytes() == b"\1" * 80


def test_failed_save_leaves_nothing(tmp_path):
    def failing(xml_path):
        writer()(xml_path)
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        store.save_entry(tmp_path, description(), failing)
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_killed_runs_are_removed(tmp_path):
    d = description()
    key = store.entry_key(d)
    for name in (f".{key}.123.abcd1234.part", f".{key}.deadbeef.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(b"\0" * 8)
    other = tmp_path / ".0123456789abcdef01234567.99.abcd1234.part"  # another model, maybe being written now
    other.mkdir()
    store.save_entry(tmp_path, d, writer())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, other.name])


def test_prune_removes_older_conversions_of_the_same_file_only(tmp_path):
    old = store.save_entry(tmp_path, description(mtime=1), writer()).parent
    other_shape = store.save_entry(tmp_path, description(mtime=1, shape=(83, 83, 1)), writer()).parent
    other_file = store.save_entry(tmp_path, description(source="/models/b.keras"), writer()).parent
    older_openvino = store.save_entry(tmp_path, description(mtime=2, openvino="2025.0"), writer()).parent
    new = description(mtime=2)
    kept = store.save_entry(tmp_path, new, writer()).parent
    removed = store.prune_entries(tmp_path, new)
    assert sorted(removed) == sorted([old, older_openvino])
    assert sorted(p for p in tmp_path.iterdir()) == sorted([other_shape, other_file, kept])


def test_conversion_lock_is_beside_the_folders(tmp_path):
    lock = store.conversion_lock(tmp_path / "new", description())
    with lock:
        assert os.path.exists(lock.lock_file)
        assert os.path.dirname(lock.lock_file) == str(tmp_path / "new")
