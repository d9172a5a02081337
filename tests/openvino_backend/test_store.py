"""Converted models on disk: keys, whole folders or none, checksums, leftovers of killed runs, locks, pruning.

The folder logic needs no OpenVINO: ``save`` here writes the two files a
conversion writes (real conversions are tested in tests/test_engines.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings

import filelock
import pytest

from gamornet.openvino_backend import store


def description(source="/models/a.keras", mtime=1, shape=(32, 32, 1), lrn=None, openvino="2026.4.1", gamornet="1.0"):
    return {"source": source, "fingerprint": [[source, mtime, 1000]], "input_shape": list(shape), "lrn": lrn,
            "versions": {"gamornet": gamornet, "keras": "3.15.1", "openvino": openvino}}


def writer(xml_text="<net/>", weights=b"\0" * 64):
    def save(xml_path):
        with open(xml_path, "w") as f:
            f.write(xml_text)
        with open(xml_path[: -len(".xml")] + ".bin", "wb") as f:
            f.write(weights)

    return save


def set_age(path, seconds):
    """Set the modification time of ``path`` to ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_key_depends_on_every_part_of_the_description():
    base = store.entry_key(description())
    assert store.entry_key(description()) == base
    for changed in (dict(mtime=2), dict(shape=(83, 83, 1)), dict(lrn="tflearn"), dict(openvino="2026.5.0"),
                    dict(source="/models/b.keras")):
        assert store.entry_key(description(**changed)) != base, changed


def test_saved_entry_is_found_and_whole(tmp_path):
    d = description()
    assert store.find_entry(tmp_path, d) is None
    weights = bytes(range(256)) * 4
    xml = store.save_entry(tmp_path, d, writer(weights=weights))
    assert xml == tmp_path / store.entry_key(d) / store.MODEL_XML
    assert store.find_entry(tmp_path, d) == xml
    assert sorted(os.listdir(xml.parent)) == [store.MANIFEST, store.LAST_USED, store.MODEL_BIN, store.MODEL_XML]
    assert [p.name for p in tmp_path.iterdir()] == [xml.parent.name]  # no temporary folder left
    manifest = json.loads((xml.parent / store.MANIFEST).read_text())
    assert manifest["description"] == d and manifest["sizes"] == {"model.xml": 6, "model.bin": 1024}
    assert manifest["checksums"] == {"model.xml": hashlib.sha256(b"<net/>").hexdigest(),
                                     "model.bin": hashlib.sha256(weights).hexdigest()}
    assert store.file_checksum(xml.parent / store.MODEL_BIN) == hashlib.sha256(weights).hexdigest()
    assert store.find_entry(tmp_path, description(mtime=2)) is None


def test_folder_mode_is_that_of_a_plain_mkdir(tmp_path):
    xml = store.save_entry(tmp_path, description(), writer())
    plain = tmp_path / "plain"
    plain.mkdir()
    assert xml.parent.stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize("name", [store.MODEL_BIN, store.MODEL_XML])
def test_same_size_damage_warns_and_is_replaced(tmp_path, name):
    d = description()
    xml = store.save_entry(tmp_path, d, writer(xml_text="<net version='11'/>", weights=b"\7" * 4096))
    assert store.find_entry(tmp_path, d) == xml  # checked, and remembered as checked in this process
    damaged = xml.parent / name
    info = os.stat(damaged)
    with open(damaged, "r+b") as f:  # same size; then the same modification time as before
        f.seek(3)
        f.write(b"\0" * 10)
    os.utime(damaged, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.path.getsize(damaged) == info.st_size
    with pytest.warns(UserWarning, match=rf"conversion in {xml.parent}.* damaged: {name} does not match"):
        assert store.find_entry(tmp_path, d) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.find_entry(tmp_path, d, warn=False) is None
    assert store.save_entry(tmp_path, d, writer(xml_text="<net version='11'/>", weights=b"\7" * 4096)) == xml
    assert store.find_entry(tmp_path, d) == xml and (xml.parent / store.MODEL_BIN).read_bytes() == b"\7" * 4096


@pytest.mark.parametrize("damage", ["truncated bin", "missing xml", "missing manifest", "other description",
                                    "bad manifest", "earlier layout"])
def test_damaged_or_earlier_entry_is_not_found_and_is_replaced(tmp_path, damage):
    d = description()
    xml = store.save_entry(tmp_path, d, writer())
    manifest = json.loads((xml.parent / store.MANIFEST).read_text())
    if damage == "truncated bin":
        (xml.parent / store.MODEL_BIN).write_bytes(b"\0" * 10)
    elif damage == "missing xml":
        xml.unlink()
    elif damage == "missing manifest":
        (xml.parent / store.MANIFEST).unlink()
    elif damage == "bad manifest":
        (xml.parent / store.MANIFEST).write_text("{not json")
    elif damage == "other description":
        manifest["description"]["lrn"] = "tflearn"
        (xml.parent / store.MANIFEST).write_text(json.dumps(manifest))
    else:  # written before checksums were recorded: missing, silently
        del manifest["checksums"]
        (xml.parent / store.MANIFEST).write_text(json.dumps(manifest))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.find_entry(tmp_path, d) is None
    damaged = damage in ("truncated bin", "missing xml")
    assert [str(w.message) for w in caught if "damaged" in str(w.message)] == (
        [f"The stored OpenVINO conversion in {xml.parent} is damaged: " + (
            "model.bin has 10 bytes, not the 64 recorded when it was written" if damage == "truncated bin"
            else "model.xml is missing") + "; converting the model again."] if damaged else [])
    assert store.save_entry(tmp_path, d, writer(weights=b"\1" * 80)) == xml
    assert store.find_entry(tmp_path, d) == xml and (xml.parent / store.MODEL_BIN).read_bytes() == b"\1" * 80


def test_failed_save_leaves_nothing(tmp_path):
    def failing(xml_path):
        writer()(xml_path)
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        store.save_entry(tmp_path, description(), failing)
    assert list(tmp_path.iterdir()) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_abandoned_folders_of_any_key_are_removed_live_ones_kept(tmp_path):
    d = description()
    key, other = store.entry_key(d), store.entry_key(description(source="/models/b.keras"))
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())  # as the store names its folders
    names = {
        "dead here": f".{other}.{host}.{dead_pid()}.abcd1234.part",  # killed while saving, another key
        "live here": f".{other}.{host}.{os.getpid()}.abcd1235.part",  # being written now
        "other host": f".{other}.some-other-node.{dead_pid()}.abcd1236.part",  # its pid says nothing here
        "other host, old": f".{other}.some-other-node.1.abcd1237.part",
        "earlier layout": f".{key}.{dead_pid()}.abcd1238.part",  # no host: judged by age
        "earlier layout, old": f".{other}.{os.getpid()}.abcd1239.part",
        "removal": f".{other}.deadbeef.old",
    }
    for label, name in names.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(b"\0" * 8)
        if label.endswith("old"):
            set_age(tmp_path / name, store.STALE_SECONDS + 60)
    store.save_entry(tmp_path, d, writer())
    kept = [names[label] for label in ("live here", "other host", "earlier layout")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, *kept])


def test_lock_files_do_not_accumulate(tmp_path):
    fcntl = pytest.importorskip("fcntl")  # holds a lock file as another process would

    held_name = f"{store.entry_key(description(mtime=9))}.lock"  # of the earlier layout, held by a process
    fd = os.open(tmp_path / held_name, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    entry = store.save_entry(tmp_path, description(mtime=8), writer()).parent
    legacy = {"of an entry": f"{entry.name}.lock", "recent": f"{store.entry_key(description(mtime=7))}.lock",
              "old": f"{store.entry_key(description(mtime=6))}.lock"}
    for name in legacy.values():
        (tmp_path / name).touch()
    set_age(tmp_path / legacy["old"], 2 * 86400)
    set_age(tmp_path / held_name, 2 * 86400)  # old enough to go, but held
    try:
        for mtime in range(5):
            d = description(source=f"/models/{mtime}.keras")
            lock = store.conversion_lock(tmp_path)
            with lock:
                assert store.find_entry(tmp_path, d) is None
                store.save_entry(tmp_path, d, writer())
            assert lock.lock_file == str(tmp_path / store.LOCK_FILE)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == sorted([store.LOCK_FILE, held_name, legacy["recent"]])


def test_prune_keeps_other_versions_and_removes_earlier_model_files(tmp_path):
    old = store.save_entry(tmp_path, description(mtime=1), writer()).parent
    old_elsewhere = store.save_entry(tmp_path, description(mtime=1, openvino="2025.0"), writer()).parent
    other_shape = store.save_entry(tmp_path, description(mtime=1, shape=(83, 83, 1)), writer()).parent
    other_file = store.save_entry(tmp_path, description(source="/models/b.keras"), writer()).parent
    other_openvino = store.save_entry(tmp_path, description(mtime=2, openvino="2025.0"), writer()).parent
    other_gamornet = store.save_entry(tmp_path, description(mtime=2, gamornet="0.9"), writer()).parent
    newer_file = store.save_entry(tmp_path, description(mtime=3), writer()).parent  # seen by another host
    new = description(mtime=2)
    kept = store.save_entry(tmp_path, new, writer()).parent
    assert sorted(store.prune_entries(tmp_path, new)) == sorted([old, old_elsewhere])
    assert sorted(tmp_path.iterdir()) == sorted([other_shape, other_file, other_openvino, other_gamornet, newer_file,
                                                 kept])
    other_environment = description(mtime=2, openvino="2025.0")  # the other environment keeps ours too
    assert store.prune_entries(tmp_path, other_environment) == []
    assert store.find_entry(tmp_path, new) == kept / store.MODEL_XML


def test_find_records_the_last_use(tmp_path):
    d = description()
    xml = store.save_entry(tmp_path, d, writer())
    used = xml.parent / store.LAST_USED
    set_age(used, 10 * 86400)
    assert store.find_entry(tmp_path, d) == xml
    assert time.time() - used.stat().st_mtime < 60
    set_age(used, 60)  # recorded at most once an hour
    store.find_entry(tmp_path, d)
    assert 50 < time.time() - used.stat().st_mtime < 120


def test_prune_by_age(tmp_path):
    current = description()
    stale = store.save_entry(tmp_path, description(source="/models/b.keras"), writer()).parent
    recent = store.save_entry(tmp_path, description(source="/models/c.keras"), writer()).parent
    now = store.save_entry(tmp_path, current, writer()).parent
    set_age(stale / store.LAST_USED, 11 * 86400)
    set_age(recent / store.LAST_USED, 9 * 86400)
    set_age(now / store.LAST_USED, 20 * 86400)  # the conversion in use is never pruned
    assert store.prune_entries(tmp_path, current, max_age_days=10) == [stale]
    assert sorted(tmp_path.iterdir()) == sorted([recent, now])


def test_prune_by_total_size_removes_the_least_recently_used(tmp_path):
    current = description()
    folders = [store.save_entry(tmp_path, description(source=f"/models/{i}.keras"), writer(weights=b"\0" * 1000)
                                ).parent for i in range(4)]
    now = store.save_entry(tmp_path, current, writer(weights=b"\0" * 1000)).parent
    for age, folder in zip((40, 10, 30, 20), folders):
        set_age(folder / store.LAST_USED, age * 3600)
    set_age(now / store.LAST_USED, 50 * 3600)  # least recently used, but the one in use
    size = sum(f.stat().st_size for f in now.iterdir())
    assert all(sum(f.stat().st_size for f in folder.iterdir()) == size for folder in folders)
    removed = store.prune_entries(tmp_path, current, max_bytes=3 * size)  # room for three of the five
    assert removed == [folders[0], folders[2]]  # used 40 and 30 hours ago
    assert sorted(tmp_path.iterdir()) == sorted([folders[1], folders[3], now])
    assert store.prune_entries(tmp_path, current, max_bytes=0) == [folders[3], folders[1]]
    assert list(tmp_path.iterdir()) == [now]


def test_conversion_lock_is_one_file_beside_the_folders(tmp_path):
    lock = store.conversion_lock(tmp_path / "new")
    with lock:
        assert os.path.exists(lock.lock_file)
        assert lock.lock_file == str(tmp_path / "new" / store.LOCK_FILE)
        with pytest.raises(filelock.Timeout):  # another process (or object) waits for it
            filelock.FileLock(str(tmp_path / "new" / store.LOCK_FILE), timeout=0.1).acquire()
