"""Converted models on disk: one folder per (model file, input shape, LRN flavour, versions).

Layout, under ``<cache>/openvino/`` (``<cache>`` being
:func:`gamornet.published.models.cache_dir`)::

    <key>/model.xml        the graph (OpenVINO IR)
    <key>/model.bin        the weights, float32 (saved with compress_to_fp16=False)
    <key>/gamornet.json    what it was converted from (the description below), and the size
                           and SHA-256 checksum of model.xml and model.bin
    <key>/last-used        empty; its modification time is the entry's last use
    gamornet.lock          held while a conversion is stored and while the store is tidied
    .<key>.<host>.<pid>.<random>.part    a folder being written by process <pid> on <host>
    .<key>.<random>.old                  a folder being deleted

Keys
    ``<key>`` is a digest of the *description*, a JSON-able dict naming the
    model file (its path, modification time and size), the input shape, the
    LRN flavour asked for and the versions of gamornet, Keras and OpenVINO:
    any change gives another folder, so a folder never changes once written.

Whole folders or none
    A folder is written into a ``.part`` folder beside it and renamed into
    place; it is removed by renaming it aside (``.old``) and then deleting
    it.  Readers see a whole folder or none.

Checked on every load
    :func:`find_entry` compares the size and SHA-256 checksum of both files
    with those recorded when the folder was written.  A difference means
    damage: it warns, naming the folder and the file, and answers None, so
    the caller converts the model again (which replaces the folder).  The
    check reads both files once per process; a file checked before is not
    read again while its size, modification and change times and inode stay
    the same.
    Folders written without checksums (an earlier layout) count as missing:
    they are converted again, without a warning.

Locking
    One lock file per store, ``gamornet.lock``, held by a process while it
    converts a model (after checking that no other process stored it in the
    meantime), stores the folder and tidies the store.  It is never deleted,
    so every process locks the same file: no process can hold a lock file
    that another has just deleted and replaced.  Conversions into one store
    therefore take turns, even of different models.  Loading a stored
    conversion takes no lock.  The lock files of an earlier layout (one
    ``<key>.lock`` per conversion ever tried) are deleted by
    :func:`remove_leftovers` while it holds them itself, acquired without
    waiting (so no process holds one), and only where their folder exists
    (a process that locks such a file finds the conversion and does not
    convert) or the file is over a day old.

Leftovers (:func:`remove_leftovers`, when a conversion is stored)
    - ``.part`` folders written on this host by a process that is no longer
      running, and those of any host older than :data:`STALE_SECONDS`
      (a conversion is saved in seconds); a ``.part`` folder of another
      host is never judged by its process id, so a conversion running on
      another machine sharing the cache is left alone;
    - ``.old`` folders (nothing reads them);
    - lock files of the earlier layout, as above.

Pruning (:func:`prune_entries`, after a conversion is stored)
    Conversions made with other versions of gamornet, Keras or OpenVINO are
    kept: another environment may share the cache and use them.  Removed
    are, whatever versions made them:

    - conversions of earlier versions of the same model file (same path,
      input shape and LRN flavour; every file recorded older than the
      current model file's newest);
    - conversions not used for :data:`MAX_AGE_DAYS` days;
    - the least recently used conversions while all of them together hold
      more than :data:`MAX_BYTES`.

    The conversion just stored is never removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path

import filelock

__all__ = ["FORMAT", "MODEL_XML", "MODEL_BIN", "MANIFEST", "LAST_USED", "LOCK_FILE", "STALE_SECONDS",
           "MAX_AGE_DAYS", "MAX_BYTES", "entry_key", "file_checksum", "find_entry", "conversion_lock", "save_entry",
           "remove_entry", "remove_leftovers", "prune_entries"]

#: Version of the folder layout (part of every key).
FORMAT = 1
MODEL_XML, MODEL_BIN, MANIFEST, LAST_USED = "model.xml", "model.bin", "gamornet.json", "last-used"
#: The store's one lock file.
LOCK_FILE = "gamornet.lock"
#: Age (seconds since its last change) after which a ``.part`` folder of any host counts as abandoned.
STALE_SECONDS = 6 * 3600
#: Conversions not used for this many days are pruned.
MAX_AGE_DAYS = 90
#: All conversions together may hold this many bytes; beyond it the least recently used are pruned.
MAX_BYTES = 4 * 2**30

_FILES = (MODEL_XML, MODEL_BIN)
_KEY = re.compile(r"[0-9a-f]{24}")
_PART = re.compile(r"\.(?P<key>[0-9a-f]{24})\.(?:(?P<host>[A-Za-z0-9-]+)\.)?(?P<pid>\d+)\.[0-9a-f]{8}\.part")
_OLD = re.compile(r"\.[0-9a-f]{24}\.[0-9a-f]{8}\.old")
_LEGACY_LOCK = re.compile(r"(?P<key>[0-9a-f]{24})\.lock")
_BLOCK = 2**20
_TOUCH_SECONDS = 3600  # the last use is recorded at most once an hour per folder
_LEGACY_LOCK_SECONDS = 86400

#: Files whose checksum was verified in this process: (path, size, mtime_ns, ctime_ns, inode) -> SHA-256.
_VERIFIED: dict[tuple, str] = {}
_VERIFIED_LOCK = threading.Lock()


def entry_key(description: dict) -> str:
    """Folder name of a description: the first 24 hex digits of the SHA-256 of its sorted JSON."""
    text = json.dumps({**description, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_checksum(path) -> str:
    """The SHA-256 of a file (hex), read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _read_manifest(directory: Path) -> dict | None:
    try:
        with open(directory / MANIFEST, encoding="utf8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _stat_key(path: Path) -> tuple:
    info = os.stat(path)
    return str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def _damage(directory: Path, manifest: dict) -> str | None:
    """What is wrong with the files of a folder whose manifest records checksums (None: nothing)."""
    sizes, checksums = manifest.get("sizes"), manifest["checksums"]
    sizes = sizes if isinstance(sizes, dict) else {}
    for name in _FILES:
        try:
            key = _stat_key(directory / name)
        except OSError:
            return f"{name} is missing"
        if key[1] != sizes.get(name):
            return f"{name} has {key[1]} bytes, not the {sizes.get(name)} recorded when it was written"
        expected = checksums.get(name)
        if not isinstance(expected, str):
            return f"no checksum of {name} is recorded"
        if _VERIFIED.get(key) == expected:
            continue
        try:
            checksum = file_checksum(directory / name)
        except OSError as exc:
            return f"{name} cannot be read ({exc})"
        if checksum != expected:
            return f"{name} does not match the SHA-256 checksum recorded when it was written"
        with _VERIFIED_LOCK:
            if len(_VERIFIED) > 256:
                _VERIFIED.clear()
            _VERIFIED[key] = checksum
    return None


def _touch(path: Path) -> None:
    """Record a use: set the modification time of ``path`` to now, at most once an hour (never fails)."""
    with contextlib.suppress(OSError):
        if time.time() - os.stat(path).st_mtime > _TOUCH_SECONDS:
            os.utime(path)


def find_entry(root, description: dict, *, warn: bool = True) -> Path | None:
    """The ``model.xml`` of the stored conversion of ``description``, or None.

    A folder counts only if its manifest records the same description and
    both files have the sizes and SHA-256 checksums it records (checked
    once per process while a file stays unchanged).  A found folder's last
    use is recorded (see :func:`prune_entries`).

    Parameters
    ----------
    root : str or os.PathLike
        ``<cache>/openvino``.
    description : dict
        What was converted (see the module docstring).
    warn : bool
        Warn when the folder of ``description`` is damaged (a file missing,
        of another size or with another checksum than recorded).

    Returns
    -------
    pathlib.Path or None
    """
    directory = Path(root) / entry_key(description)
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("description") != json.loads(json.dumps(description)):
        return None
    if not isinstance(manifest.get("checksums"), dict):  # written by an earlier layout: convert again
        return None
    problem = _damage(directory, manifest)
    if problem is not None:
        if warn:
            warnings.warn(f"The stored OpenVINO conversion in {directory} is damaged: {problem}; converting the "
                          "model again.", UserWarning, stacklevel=2)
        return None
    _touch(directory / LAST_USED)
    return directory / MODEL_XML


def conversion_lock(root) -> filelock.FileLock:
    """The store's lock: hold it while converting and storing a model (blocks while another process does)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(Path(root) / LOCK_FILE))


def remove_entry(directory) -> None:
    """Remove a folder: renamed aside first (one atomic step), then deleted."""
    directory = Path(directory)
    aside = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.old")
    with contextlib.suppress(FileNotFoundError):
        os.rename(directory, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (True where that cannot be told)."""
    if os.name == "nt" or pid <= 0:  # os.kill would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _abandoned_part(path: Path, match: re.Match, now: float) -> bool:
    """Whether a ``.part`` folder is no longer being written (see the module docstring)."""
    try:
        age = now - os.stat(path).st_mtime
    except OSError:
        return False
    if age > STALE_SECONDS:
        return True
    return match["host"] == _host() and not _pid_alive(int(match["pid"]))


def _remove_legacy_lock(root: Path, lock: Path, now: float) -> bool:
    """Delete a ``<key>.lock`` of the earlier layout while holding it (see the module docstring)."""
    try:
        old = now - os.stat(lock).st_mtime > _LEGACY_LOCK_SECONDS
    except OSError:
        return False
    if not (old or (root / lock.stem / MANIFEST).exists()):
        return False
    held = filelock.FileLock(str(lock), timeout=0)
    try:
        held.acquire()
    except (filelock.Timeout, OSError):
        return False
    try:
        os.unlink(lock)
    except OSError:
        return False
    finally:
        held.release()
    return True


def remove_leftovers(root, now: float | None = None) -> list[Path]:
    """Remove what killed or earlier runs left in the store: abandoned folders, lock files of the earlier layout.

    Call it holding :func:`conversion_lock` (:func:`save_entry` does).
    See the module docstring for what counts as left over.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    root = Path(root)
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError):
        for path in list(root.iterdir()):
            part = _PART.fullmatch(path.name)
            if (part and _abandoned_part(path, part, now)) or _OLD.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif _LEGACY_LOCK.fullmatch(path.name) and _remove_legacy_lock(root, path, now):
                removed.append(path)
    return removed


def save_entry(root, description: dict, save) -> Path:
    """Store a conversion: ``save(xml_path)`` writes the model, then the folder is renamed into place.

    Call it holding :func:`conversion_lock`: it first removes what killed
    processes left (:func:`remove_leftovers`).

    Parameters
    ----------
    root : str or os.PathLike
        ``<cache>/openvino``.
    description : dict
        What was converted (see the module docstring).
    save : callable
        ``save(xml_path)`` writes ``xml_path`` and the ``.bin`` beside it
        (``openvino.save_model(model, xml_path, compress_to_fp16=False)``).

    Returns
    -------
    pathlib.Path
        The stored ``model.xml``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = entry_key(description)
    final = root / key
    remove_leftovers(root)
    staging = root / f".{key}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    os.mkdir(staging)  # the mode a plain mkdir gives (0o777 less the umask)
    try:
        save(str(staging / MODEL_XML))
        manifest = {"description": description, "format": FORMAT,
                    "sizes": {name: os.path.getsize(staging / name) for name in _FILES},
                    "checksums": {name: file_checksum(staging / name) for name in _FILES}}
        with open(staging / MANIFEST, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        (staging / LAST_USED).touch()
        if final.exists():  # an incomplete, damaged or unreadable folder, found by the caller under the lock
            remove_entry(final)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final / MODEL_XML


def _newest_file(description: dict) -> int | None:
    """The newest modification time (ns) among the files a description's fingerprint records."""
    times = [item[1] for item in description.get("fingerprint") or () if isinstance(item, list) and len(item) == 3]
    return max(times) if times and all(isinstance(t, int) for t in times) else None


def _earlier_version(other, description: dict) -> bool:
    """Whether ``other`` describes a conversion of an earlier version of the model file of ``description``."""
    if not isinstance(other, dict) or other.get("fingerprint") == description.get("fingerprint"):
        return False
    if any(other.get(k) != description.get(k) for k in ("source", "input_shape", "lrn")):
        return False
    then, now = _newest_file(other), _newest_file(description)
    return then is not None and now is not None and then < now


def _entry(directory: Path) -> tuple[Path, dict | None, float, int] | None:
    """(folder, description, last use, bytes) of a stored conversion; None if it is gone."""
    try:
        try:
            used = os.stat(directory / LAST_USED).st_mtime
        except OSError:
            used = os.stat(directory).st_mtime
        with os.scandir(directory) as files:
            size = sum(f.stat().st_size for f in files if f.is_file())
    except OSError:
        return None
    other = (_read_manifest(directory) or {}).get("description")
    return directory, other if isinstance(other, dict) else None, used, size


def _entries(root: Path) -> list[tuple[Path, dict | None, float, int]]:
    """(folder, description, last use, bytes) of every stored conversion."""
    try:
        folders = [path for path in root.iterdir() if _KEY.fullmatch(path.name) and path.is_dir()]
    except OSError:
        return []
    return [entry for entry in map(_entry, folders) if entry is not None]


def prune_entries(root, description: dict, *, max_age_days: float = MAX_AGE_DAYS, max_bytes: int = MAX_BYTES,
                  now: float | None = None) -> list[Path]:
    """Remove conversions of earlier versions of the model file, unused ones and the least recently used.

    Conversions made with other versions of gamornet, Keras or OpenVINO are
    kept as such (see the module docstring); the conversion of
    ``description`` is never removed.  Call it holding
    :func:`conversion_lock`.

    Parameters
    ----------
    root : str or os.PathLike
        ``<cache>/openvino``.
    description : dict
        The conversion just stored or used.
    max_age_days : float
        Conversions not used for longer are removed.
    max_bytes : int
        Beyond this total size, the least recently used conversions are removed.
    now : float, optional
        The time (``time.time()``) ages are measured from.

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    root, key = Path(root), entry_key(description)
    now = time.time() if now is None else now
    removed, kept, total = [], [], 0
    for directory, other, used, size in _entries(root):
        if directory.name != key and (_earlier_version(other, description) or now - used > max_age_days * 86400):
            remove_entry(directory)
            removed.append(directory)
            continue
        total += size
        if directory.name != key:
            kept.append((used, directory.name, directory, size))
    for _, _, directory, size in sorted(kept):  # least recently used first
        if total <= max_bytes:
            break
        remove_entry(directory)
        removed.append(directory)
        total -= size
    return removed
