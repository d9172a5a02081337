"""Fetching remote files (the published models) into a local cache.

Every remote file goes through :func:`fetch_file` / :func:`fetch_model`:

- Sources: ``GAMORNET_MODELS_URL`` (one or more base URLs separated by
  whitespace or commas) or an explicit ``base_urls`` list, else
  :data:`gamornet.registry.MIRRORS`.  ``ftp://`` (:mod:`ftplib`),
  ``http(s)://`` (:mod:`requests`) and ``file://`` URLs (or plain directories)
  are tried in order, each with a timeout and a bounded number of retries.
- Cache: ``GAMORNET_HOME`` if set, else the per-user cache directory; files keep
  their published relative paths.  A cached file is used without any network
  access, after a check for damage on its first use in a process (not empty;
  a model's content readable and complete); ``verify=True`` (``gamornet
  download``) checks it as a fresh download is checked.  A damaged cached file
  is downloaded again.  ``GAMORNET_OFFLINE=1`` forbids network access
  altogether (a damaged cached file is then an error naming its path).
- Safety: files are written to a temporary folder next to their final place,
  checked (size, SHA-256 where known, content) and only then moved in with
  :func:`os.replace`, all files of a checkpoint together.  A lock file in the
  cache serialises processes fetching the same model.
"""

from __future__ import annotations

import contextlib
import ftplib
import glob
import hashlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from gamornet.batching import CURRENT_STDERR
from gamornet.registry import CHECKPOINT_SUFFIXES, MANUAL_DOWNLOAD_HELP, MIRRORS, get_model_info

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
    "ModelDownloadError",
    "check_transfer_options",
    "CacheDirError",
    "cache_dir",
    "mirror_urls",
    "is_offline",
    "fetch_file",
    "fetch_model",
    "repair_model",
    "cached_path",
    "is_cached",
    "validate_keras_file",
    "validate_tflearn_checkpoint",
]

log = logging.getLogger(__name__)

#: Seconds to wait for a connection or for the next block of data.
DEFAULT_TIMEOUT = 60.0
#: Extra attempts per URL after a transient failure (so 3 attempts in all).
DEFAULT_RETRIES = 2
#: Seconds before the first retry; doubled before each further one.
DEFAULT_BACKOFF = 1.0

_CHUNK = 1 << 20
_TEMP_SUFFIX = ".part"


class ModelDownloadError(RuntimeError):
    """A file or model could not be fetched from any source, or offline mode forbids fetching it."""


class CacheDirError(ModelDownloadError):
    """The cache directory cannot be created or written."""


class _Failure(Exception):
    """One source failed; ``permanent`` failures are not retried."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.permanent = permanent


class _LocalWriteError(Exception):
    """Writing into the cache failed (disk full, ...): not the source's fault."""


# --------------------------------------------------------------------------- configuration


def cache_dir() -> Path:
    """The cache root: ``GAMORNET_HOME`` if set, else the per-user cache directory."""
    home = os.environ.get("GAMORNET_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("gamornet", appauthor=False))


def _root(directory: str | os.PathLike | None) -> Path:
    return Path(directory).expanduser() if directory is not None else cache_dir()


def mirror_urls(base_urls: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> list[str]:
    """The base URLs to try, in order.

    Parameters
    ----------
    base_urls : str, path or iterable, optional
        Base URLs (or local directories).  A string may hold several URLs
        separated by whitespace or commas.  Default: ``GAMORNET_MODELS_URL`` if
        set, else :data:`gamornet.registry.MIRRORS`.
    """
    if base_urls is None:
        base_urls = os.environ.get("GAMORNET_MODELS_URL", "").strip() or MIRRORS
    if isinstance(base_urls, (str, os.PathLike)):
        base_urls = [base_urls]
    urls = []
    for item in base_urls:
        parts = [os.fspath(item)] if isinstance(item, os.PathLike) else re.split(r"[\s,]+", item)
        for part in filter(None, parts):
            scheme = urllib.parse.urlsplit(part).scheme
            urls.append(part if len(scheme) > 1 else Path(part).expanduser().resolve().as_uri())
    if not urls:
        raise ValueError("No base URL given: set GAMORNET_MODELS_URL or pass `base_urls`.")
    return urls


def is_offline(offline: bool | None = None) -> bool:
    """Whether network access is forbidden (``offline`` if given, else ``GAMORNET_OFFLINE``)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("GAMORNET_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_transfer_options(timeout, retries, backoff) -> tuple[float, int, float]:
    """Check the network settings shared by :func:`fetch_file` and :func:`fetch_model`.

    Returns
    -------
    tuple
        ``(timeout, retries, backoff)`` as float, int, float.

    Raises
    ------
    ValueError
        For a timeout that is not a finite number > 0, retries that are not an
        integer >= 0, or a backoff that is not a finite number >= 0.
    """
    def number(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if not number(timeout) or timeout <= 0:
        raise ValueError(f"`timeout` must be a finite number of seconds > 0. Received: timeout={timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"`retries` must be an integer >= 0 (extra attempts per URL). Received: retries={retries!r}")
    if not number(backoff) or backoff < 0:
        raise ValueError(f"`backoff` must be a finite number of seconds >= 0. Received: backoff={backoff!r}")
    return float(timeout), int(retries), float(backoff)


def _join(base: str, relative_path: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(relative_path)


def _say(progress: bool, message: str) -> None:
    log.info(message)
    if progress:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- transports


class _Sink:
    """The temporary file being written, with its SHA-256, byte count and progress bar."""

    def __init__(self, path: Path, progress: bool):
        self.path, self.progress, self.nbytes, self.bar, self.expected = path, progress, 0, None, None
        self.sha256 = hashlib.sha256()
        try:
            self.file = open(path, "wb")
        except OSError as exc:
            raise _LocalWriteError(f"cannot write {path}: {exc}") from exc

    def start(self, size: int | None) -> None:
        self.expected = size
        if self.progress:
            import progressbar

            self.bar = progressbar.DataTransferBar(
                max_value=size or progressbar.UnknownLength, fd=CURRENT_STDERR, max_error=False
            )
            self.bar.start()

    def write(self, chunk: bytes) -> None:
        try:
            self.file.write(chunk)
        except OSError as exc:
            raise _LocalWriteError(f"cannot write {self.path}: {exc}") from exc
        self.sha256.update(chunk)
        self.nbytes += len(chunk)
        if self.bar is not None:
            self.bar.update(self.nbytes)

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if exc_info[0] is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
        except OSError as exc:
            raise _LocalWriteError(f"cannot write {self.path}: {exc}") from exc
        finally:
            if self.bar is not None:
                self.bar.finish(dirty=exc_info[0] is not None)


def _get_http(url: str, sink: _Sink, timeout: float) -> int | None:
    import requests

    try:
        with requests.get(url, stream=True, timeout=(timeout, timeout), headers={"Accept-Encoding": "identity"}) as r:
            if r.status_code >= 400:
                permanent = r.status_code < 500 and r.status_code not in (408, 429)
                raise _Failure(f"HTTP {r.status_code} {r.reason}", permanent=permanent)
            length = r.headers.get("Content-Length", "")
            encoded = r.headers.get("Content-Encoding", "identity") != "identity"
            size = int(length) if length.isdigit() and not encoded else None
            sink.start(size)
            for chunk in r.iter_content(_CHUNK):
                sink.write(chunk)
            return size
    except requests.RequestException as exc:
        text = str(exc)
        if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
            reason = f"timed out (no answer within {timeout:g} s)"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
            announced = f"the {sink.expected} bytes announced" if sink.expected else "the end of the file"
            reason = f"transfer cut short: connection closed before {announced}"
        elif "refused" in text.lower():
            reason = "connection refused"
        else:
            reason = f"{type(exc).__name__}: {text}"
        raise _Failure(reason) from None


def _get_ftp(url: str, sink: _Sink, timeout: float) -> int | None:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise _Failure("no host name in the URL", permanent=True)
    user = urllib.parse.unquote(parts.username) if parts.username else "anonymous"
    password = urllib.parse.unquote(parts.password) if parts.password else "anonymous@"
    path = urllib.parse.unquote(parts.path).lstrip("/")  # RFC 1738: relative to the login directory
    try:
        with ftplib.FTP(timeout=timeout) as ftp:
            ftp.connect(parts.hostname, parts.port or 21)
            ftp.login(user, password)
            ftp.voidcmd("TYPE I")
            try:
                size = ftp.size(path)
            except ftplib.error_perm:
                size = None  # SIZE unsupported or file missing: RETR tells which
            sink.start(size)
            ftp.retrbinary(f"RETR {path}", sink.write, blocksize=_CHUNK)
            return size
    except ftplib.error_perm as exc:
        raise _Failure(f"FTP error {exc}", permanent=True) from None
    except TimeoutError:
        raise _Failure(f"timed out (no answer within {timeout:g} s)") from None
    except ConnectionRefusedError:
        raise _Failure("connection refused") from None
    except (ftplib.Error, OSError, EOFError) as exc:
        raise _Failure(f"FTP transfer failed: {type(exc).__name__}: {exc}") from None


def _get_file(url: str, sink: _Sink, timeout: float) -> int | None:
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    try:
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            sink.start(size)
            while chunk := source.read(_CHUNK):
                sink.write(chunk)
            return size
    except FileNotFoundError:
        raise _Failure(f"no such file: {path}", permanent=True) from None
    except OSError as exc:
        raise _Failure(f"cannot read {path}: {exc}", permanent=True) from None


_TRANSPORTS = {"http": _get_http, "https": _get_http, "ftp": _get_ftp, "file": _get_file}


def _download(url: str, target: Path, *, timeout: float, retries: int, backoff: float, progress: bool) -> str:
    """Fetch ``url`` into ``target`` with retries; return the SHA-256 hex digest."""
    transport = _TRANSPORTS.get(urllib.parse.urlsplit(url).scheme.lower())
    if transport is None:
        raise _Failure("unsupported URL scheme (use ftp://, http://, https:// or file://)", permanent=True)
    for attempt in range(retries + 1):
        try:
            with _Sink(target, progress) as sink:
                size = transport(url, sink, timeout)
            if size is not None and sink.nbytes != size:
                raise _Failure(f"transfer cut short: received {sink.nbytes} of {size} bytes")
            return sink.sha256.hexdigest()
        except _Failure as exc:
            if exc.permanent or attempt == retries:
                if attempt:
                    raise _Failure(f"{exc} ({attempt + 1} attempts)", exc.permanent) from None
                raise
            delay = backoff * 2**attempt
            _say(progress, f"  {url}: {exc}; retrying in {delay:g} s")
            time.sleep(delay)
    raise ValueError(f"`retries` must be an integer >= 0. Received: retries={retries!r}")


# --------------------------------------------------------------------------- the cache


def _check_relative(relative_path: str) -> str:
    parts = Path(relative_path).parts
    if not parts or Path(relative_path).is_absolute() or ".." in parts:
        raise ValueError(f"`relative_path` must be a path inside the published tree. Received: {relative_path!r}")
    return Path(relative_path).as_posix()


def _writable(root: Path, folder: Path) -> None:
    hint = "Set GAMORNET_HOME to a writable directory (or pass `cache_dir`)."
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (root / ".locks").mkdir(exist_ok=True)
    except OSError as exc:
        raise CacheDirError(f"The GaMorNet cache directory {folder} cannot be created ({exc}). {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CacheDirError(f"The GaMorNet cache directory {folder} is not writable. {hint}")
    if not os.access(root / ".locks", os.W_OK | os.X_OK):
        raise CacheDirError(f"The GaMorNet cache directory {root / '.locks'} is not writable. {hint}")


def _failure_message(label: str, failures: list[tuple[str, str]], dests: list[Path]) -> str:
    tried = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
    paths = "\n".join(f"  {d}" for d in dests)
    return (
        f"Could not download {label} from any source.\nTried:\n{tried}\nCache path(s):\n{paths}\n"
        f"{MANUAL_DOWNLOAD_HELP} GAMORNET_MODELS_URL may name other servers holding the same tree "
        "(ftp://, http(s)://, file://)."
    )


def _fetch_group(
    label: str,
    relative_paths: list[str],
    *,
    display: str | None = None,
    root: Path,
    base_urls,
    sha256: Mapping[str, str],
    validate: Callable[[dict[str, Path]], None] | None,
    progress: bool,
    timeout: float,
    retries: int,
    backoff: float,
    offline: bool | None,
    recheck: Callable[[dict[str, Path]], None] | None = None,
    verify: bool = False,
) -> list[Path]:
    """Fetch files of one folder into the cache, all or none; return their cache paths.

    Cached files are checked (:func:`_cached_problem`) before they are
    returned; damaged ones are downloaded again.
    """
    dests = [root / rel for rel in relative_paths]
    damage = None
    if all(d.is_file() for d in dests):
        damage = _cached_problem(relative_paths, dests, sha256, validate, recheck, verify)
        if damage is None:
            return dests
        where = "\n".join(f"  {d}" for d in dests)
        if is_offline(offline):
            raise ModelDownloadError(
                f"The cached copy of {label} is damaged ({damage}) and GAMORNET_OFFLINE is set, so it was not "
                f"downloaded again. Cache path(s):\n{where}\nUnset GAMORNET_OFFLINE to download it again, or "
                f"replace the file(s) with good copies. {MANUAL_DOWNLOAD_HELP}"
            )
        log.warning("The cached copy of %s is damaged (%s); downloading it again.", label, damage)
        if progress:
            print(f"The cached copy of {label} is damaged ({damage}); downloading it again.", file=sys.stderr,
                  flush=True)
    elif is_offline(offline):
        missing = "\n".join(f"  {d}" for d in dests if not d.is_file())
        raise ModelDownloadError(
            f"{label} is not in the cache and GAMORNET_OFFLINE is set, so nothing was downloaded. Missing:\n"
            f"{missing}\nUnset GAMORNET_OFFLINE to download it. {MANUAL_DOWNLOAD_HELP}"
        )
    bases = mirror_urls(base_urls)
    folder = dests[0].parent
    if any(d.parent != folder for d in dests):
        raise ValueError("files fetched together must share one folder")
    _writable(root, folder)
    stem = dests[0].name.split(".")[0] or dests[0].name
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / ".locks" / (relative_paths[0].replace("/", "--") + ".lock")))
    try:
        try:
            lock.acquire(timeout=1)
        except Timeout:
            _say(progress, f"Waiting for another process fetching {label} ...")
            lock.acquire()
    except OSError as exc:
        raise CacheDirError(f"Cannot lock the GaMorNet cache {root} ({exc}). Set GAMORNET_HOME.") from None
    try:
        if all(d.is_file() for d in dests) and (  # another process finished (or repaired) it meanwhile
            damage is None or _cached_problem(relative_paths, dests, sha256, validate, recheck, verify) is None
        ):
            return dests
        for stale in folder.glob(f".{glob.escape(stem)}.*{_TEMP_SUFFIX}"):  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        failures: list[tuple[str, str]] = []
        for base in bases:
            try:
                tmpdir = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=_TEMP_SUFFIX, dir=folder))
            except OSError as exc:
                raise CacheDirError(f"Cannot write into the GaMorNet cache {folder} ({exc}). Set GAMORNET_HOME.")
            url = _join(base, display or relative_paths[0])
            try:
                tmp = {rel: tmpdir / d.name for rel, d in zip(relative_paths, dests)}
                for rel in relative_paths:
                    url = _join(base, rel)
                    _say(progress, f"Downloading {url}")
                    digest = _download(
                        url, tmp[rel], timeout=timeout, retries=retries, backoff=backoff, progress=progress
                    )
                    expected = sha256.get(rel)
                    if expected and digest != expected.lower():
                        raise _Failure(f"SHA-256 mismatch: expected {expected.lower()}, got {digest}")
                if validate is not None:
                    url = _join(base, display or relative_paths[0])
                    validate(tmp)
                for rel, dest in zip(relative_paths, dests):
                    os.replace(tmp[rel], dest)
                _remember_checked(dests)
                return dests
            except _Failure as exc:
                failures.append((url, str(exc)))
            except ValueError as exc:
                failures.append((url, f"content check failed: {exc}"))
            except _LocalWriteError as exc:
                raise CacheDirError(f"{exc}. Free some space or set GAMORNET_HOME to another directory.") from None
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
            _say(progress, f"  failed: {failures[-1][1]}")
        message = _failure_message(label, failures, dests)
        if damage is not None:
            message = f"{message}\nThe cached copy there is damaged ({damage}) and was left as it was."
        raise ModelDownloadError(message)
    finally:
        lock.release()


#: Cached files found sound in this process: tuple of paths -> their sizes, mtimes and inodes.
_CHECKED: dict[tuple[str, ...], tuple] = {}


def _signature(dests: list[Path]) -> tuple:
    return tuple((st.st_size, st.st_mtime_ns, st.st_ino) for st in (os.stat(d) for d in dests))


def _remember_checked(dests: list[Path]) -> None:
    with contextlib.suppress(OSError):
        _CHECKED[tuple(map(str, dests))] = _signature(dests)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_problem(relative_paths: list[str], dests: list[Path], sha256: Mapping[str, str],
                    validate: Callable[[dict[str, Path]], None] | None,
                    recheck: Callable[[dict[str, Path]], None] | None, verify: bool) -> str | None:
    """Why cached files cannot be used, or ``None`` when they are sound.

    The first use in a process checks that no file is empty and runs
    ``recheck`` (readable, complete); later uses rely on that while the files
    keep their size, mtime and inode.  ``verify`` always runs the checks of a
    fresh download instead (SHA-256 where known and ``validate``).
    """
    try:
        signature = _signature(dests)
    except OSError as exc:
        return f"cannot read {exc.filename}: {exc.strerror}"
    known = _CHECKED.get(tuple(map(str, dests)))
    if known == signature and not verify:
        return None
    empty = [str(d) for d, (size, _, _) in zip(dests, signature) if size == 0]
    if empty:
        return f"empty file {', '.join(empty)}"
    mapping = dict(zip(relative_paths, dests))
    try:
        if verify:
            for rel, dest in mapping.items():
                expected = sha256.get(rel)
                if expected and _file_sha256(dest) != expected.lower():
                    return f"SHA-256 of {dest} differs from the published {expected.lower()}"
            if validate is not None:
                validate(mapping)
        elif recheck is not None:
            recheck(mapping)
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {exc.filename}: {exc.strerror}"
    _remember_checked(dests)
    return None


# --------------------------------------------------------------------------- public API


def fetch_file(
    relative_path: str,
    *,
    base_urls=None,
    cache_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    validate: Callable[[Path], None] | None = None,
    offline: bool | None = None,
    verify: bool = False,
) -> Path:
    """Local copy of one file of the published tree, downloaded on first use.

    A cached file is used without network access after checking that it is
    not empty; with ``verify=True`` it is checked as a fresh download is
    (``sha256``, ``validate``), and downloaded again if it fails.

    Parameters
    ----------
    relative_path : str
        Path under the base URL, e.g. ``"gamornet/pred_tables/pred_table_sdss.txt"``.
    base_urls : str or list of str, optional
        Sources tried in order (see :func:`mirror_urls`).
    cache_dir : path, optional
        Cache root; default :func:`cache_dir`.
    sha256 : str, optional
        Expected SHA-256 hex digest.
    progress : bool
        Show a progress bar and messages on stderr.
    timeout : float
        Seconds to wait for a connection or for more data.
    retries : int
        Extra attempts per URL after a transient failure.
    backoff : float
        Seconds before the first retry, doubled each time.
    validate : callable, optional
        Called with the downloaded temporary file; raises ``ValueError`` to reject it.
    offline : bool, optional
        Forbid network access; default ``GAMORNET_OFFLINE``.
    verify : bool
        Check a cached file as thoroughly as a download.

    Returns
    -------
    pathlib.Path
        The cached file.

    Raises
    ------
    ValueError
        For a bad ``timeout``, ``retries`` or ``backoff`` (see
        :func:`check_transfer_options`) or path.
    ModelDownloadError
        If every source fails (or offline mode forbids downloading, or a
        damaged cached file cannot be replaced offline).
    CacheDirError
        If the cache directory cannot be written.
    """
    timeout, retries, backoff = check_transfer_options(timeout, retries, backoff)
    rel = _check_relative(relative_path)
    check = None if validate is None else (lambda tmp: validate(tmp[rel]))
    return _fetch_group(
        repr(rel),
        [rel],
        root=_root(cache_dir),
        base_urls=base_urls,
        sha256={rel: sha256} if sha256 else {},
        validate=check,
        progress=progress,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        offline=offline,
        verify=bool(verify),
    )[0]


def cached_path(name: str, flavor: str = "keras", *, cache_dir: str | os.PathLike | None = None) -> str:
    """Where a published model lives in the cache (Keras file or TFLearn checkpoint prefix), present or not."""
    return str(_root(cache_dir) / get_model_info(name, flavor).path)


def is_cached(name: str, flavor: str = "keras", *, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether every file of a published model is in the cache."""
    root = _root(cache_dir)
    return all((root / f).is_file() for f in get_model_info(name, flavor).files)


def fetch_model(
    name: str,
    flavor: str = "keras",
    *,
    base_urls=None,
    cache_dir: str | os.PathLike | None = None,
    input_shape=None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    offline: bool | None = None,
    verify: bool = False,
) -> str:
    """Local path of a published model, downloaded and checked on first use.

    A cached model is checked before its first use in a process: no file
    empty, and the content readable and complete (the HDF5 file opens and
    lists its datasets; every GaMorNet variable of a checkpoint reads back
    with a valid checksum; shapes are not compared).  ``verify=True`` (as
    ``gamornet download`` does) checks it as a fresh download is: SHA-256
    where known and the weight shapes for ``input_shape``.  A damaged cached
    model is downloaded again (offline: an error naming its cache path).

    Parameters
    ----------
    name : str
        ``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim`` or ``CANDELS_tl``.
    flavor : {"keras", "tflearn"}
        Keras HDF5 file or TFLearn checkpoint (3 files).
    input_shape : str or tuple, optional
        Input shape the weights must fit; default the model's own (SDSS / CANDELS).
    base_urls, cache_dir, progress, timeout, retries, backoff, offline, verify
        As for :func:`fetch_file`.

    Returns
    -------
    str
        The Keras file, or the TFLearn checkpoint prefix.

    Raises
    ------
    ValueError
        For an unknown name or flavour, or a bad ``timeout``, ``retries`` or ``backoff``.
    ModelDownloadError
        If every source fails (or offline mode forbids downloading, or a
        damaged cached model cannot be replaced offline).
    CacheDirError
        If the cache directory cannot be written.
    """
    info = get_model_info(name, flavor)
    timeout, retries, backoff = check_transfer_options(timeout, retries, backoff)
    from gamornet.utils import check_input_shape

    shape = check_input_shape(info.input_shape if input_shape is None else input_shape)
    prefix_name = Path(info.path).name

    def check(files: dict[str, Path], at_shape) -> None:
        if flavor == "keras":
            validate_keras_file(files[info.path], at_shape)
        else:
            validate_tflearn_checkpoint(files[info.files[0]].parent / prefix_name, at_shape)

    def validate(tmp: dict[str, Path]) -> None:
        check(tmp, shape)

    def recheck(cached: dict[str, Path]) -> None:
        check(cached, None)

    root = _root(cache_dir)
    _fetch_group(
        f"the published model {name!r} ({flavor})",
        list(info.files),
        display=info.path,
        root=root,
        base_urls=base_urls,
        sha256=dict(info.sha256),
        validate=validate,
        progress=progress,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        offline=offline,
        recheck=recheck,
        verify=bool(verify),
    )
    return str(root / info.path)


def repair_model(name: str, flavor: str = "keras", **kwargs) -> bool:
    """Check a cached published model as a download is checked, fetching it again if damaged.

    For code whose loading of a cached model failed: ``True`` means the
    files were replaced (load again), ``False`` that they are sound (the
    failure lies elsewhere).

    Parameters
    ----------
    name, flavor
        As for :func:`fetch_model`.
    **kwargs
        Other arguments of :func:`fetch_model` (``cache_dir``, ``progress``...).

    Raises
    ------
    ModelDownloadError
        If a damaged model cannot be fetched again (offline, or no source answers).
    """
    root = _root(kwargs.get("cache_dir"))
    files = [root / rel for rel in get_model_info(name, flavor).files]

    def state():
        try:
            return _signature(files)
        except OSError:
            return None

    before = state()
    fetch_model(name, flavor, **{**kwargs, "verify": True})
    return state() != before


# --------------------------------------------------------------------------- content checks


def _expected_shapes(input_shape) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    from gamornet.network import weight_shapes

    return weight_shapes(tuple(int(v) for v in input_shape))


def validate_keras_file(path: str | os.PathLike, input_shape=None) -> None:
    """Check that ``path`` is an HDF5 file holding the 8 kernels and biases of GaMorNet.

    Datasets are matched by shape anywhere in the file (Keras 2 full-model
    files, weight files of Keras 2 or 3), optimiser state excluded.  With
    ``input_shape=None`` only a readable, complete HDF5 file holding datasets
    is required (HDF5 refuses a truncated file when opening it).

    Raises
    ------
    ValueError
        If the file is not HDF5 or lacks a weight of the expected shape.
    """
    import h5py

    shapes: list[tuple[int, ...]] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and not name.split("/")[0].startswith("optimizer"):
            shapes.append(tuple(obj.shape))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on damaged files
        raise ValueError(f"{os.fspath(path)} is not a readable HDF5 file ({exc})") from None
    if input_shape is None:
        if not shapes:
            raise ValueError(f"{os.fspath(path)} holds no weights (an HDF5 file without datasets)")
        return
    available = Counter(shapes)
    missing = []
    for shape in (s for pair in _expected_shapes(input_shape) for s in pair):
        if available[shape] > 0:
            available[shape] -= 1
        else:
            missing.append(shape)
    if missing:
        raise ValueError(
            f"{os.fspath(path)} is not a GaMorNet Keras model for input shape {tuple(input_shape)}: "
            f"no weight dataset of shape {', '.join(map(str, missing))}"
        )


def validate_tflearn_checkpoint(prefix: str | os.PathLike, input_shape=None) -> None:
    """Check that a TFLearn checkpoint is complete and holds GaMorNet's weights.

    The 3 files must be present; the checkpoint must open with
    ``tf.train.load_checkpoint`` and hold ``Conv2D/W`` ... ``FullyConnected_2/b``
    with the expected shapes (any shapes for ``input_shape=None``), each
    readable (TensorFlow verifies its checksum).

    Raises
    ------
    ValueError
        If a file is missing or empty, or the checkpoint is unreadable or does not fit.
    """
    prefix = os.fspath(prefix)
    missing = [p for p in (prefix + s for s in CHECKPOINT_SUFFIXES) if not os.path.isfile(p) or not os.path.getsize(p)]
    if missing:
        raise ValueError(f"incomplete TFLearn checkpoint: missing or empty {', '.join(missing)}")
    import tensorflow as tf

    from gamornet.network import tflearn_variable_prefixes

    try:
        reader = tf.train.load_checkpoint(prefix)
        found = reader.get_variable_to_shape_map()
        problems = []
        scopes = tflearn_variable_prefixes()
        expected_shapes = _expected_shapes(input_shape) if input_shape is not None else [(None, None)] * len(scopes)
        for scope, shapes in zip(scopes, expected_shapes):
            for var, expected in zip((f"{scope}/W", f"{scope}/b"), shapes):
                if var not in found:
                    problems.append(f"{var} is missing")
                elif expected is not None and tuple(found[var]) != expected:
                    problems.append(f"{var} has shape {tuple(found[var])}, expected {expected}")
                else:
                    reader.get_tensor(var)
    except Exception as exc:  # tf.errors.* (DataLossError, NotFoundError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{prefix} is not a readable TensorFlow checkpoint ({first})") from None
    if problems:
        fit = f" for input shape {tuple(input_shape)}" if input_shape is not None else ""
        raise ValueError(f"{prefix} is not a GaMorNet TFLearn checkpoint{fit}: {'; '.join(problems)}")
