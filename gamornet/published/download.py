"""A generic fetcher of remote files into a local cache: mirrors, retries, checks, all or nothing.

It knows nothing of what it fetches: the caller names the files (paths
relative to each base URL), the cache folder, the sources, and how to check
the content (a ``validate`` callback, as a processor in other fetchers);
:mod:`gamornet.published.models` uses it for the published models.

- Sources are tried in order: ``ftp://`` (:mod:`ftplib`), ``http(s)://``
  (:mod:`requests`) and ``file://`` URLs, each with a timeout and a bounded
  number of retries (doubling back-off).
- Files of one group are written to a temporary folder next to their final
  place, checked (size, SHA-256 where known, ``validate``) and only then
  moved in with :func:`os.replace`, all together.  A lock file serialises
  processes fetching the same files.
- A cached group is used without network access after a check for damage on
  its first use in a process (no file empty, ``recheck``); ``verify=True``
  checks it as a fresh download is checked.  A damaged cached group is
  fetched again (offline: an error naming the cache paths).
"""

from __future__ import annotations

import contextlib
import ftplib
import functools
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from gamornet.core.progress import CURRENT_STDERR

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
    "DEFAULT_BACKOFF",
    "DownloadError",
    "CacheDirError",
    "check_transfer_options",
    "check_relative_path",
    "parse_urls",
    "fetch_group",
    "download_action",
    "group_signature",
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


class DownloadError(RuntimeError):
    """Files could not be fetched from any source, or offline mode forbids fetching them."""


class CacheDirError(DownloadError):
    """The cache directory cannot be created or written."""


class _Failure(Exception):
    """One source failed; ``permanent`` failures are not retried."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.permanent = permanent


class _LocalWriteError(Exception):
    """Writing into the cache failed (disk full, ...): not the source's fault."""


# --------------------------------------------------------------------------- configuration


def parse_urls(base_urls: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Base URLs as a list: a string may hold several separated by whitespace or commas; paths become ``file://``.

    Raises
    ------
    ValueError
        If no URL is given.
    """
    if isinstance(base_urls, (str, os.PathLike)):
        base_urls = [base_urls]
    urls = []
    for item in base_urls:
        parts = [os.fspath(item)] if isinstance(item, os.PathLike) else re.split(r"[\s,]+", item)
        for part in filter(None, parts):
            scheme = urllib.parse.urlsplit(part).scheme
            urls.append(part if len(scheme) > 1 else Path(part).expanduser().resolve().as_uri())
    if not urls:
        raise ValueError(f"`base_urls` must name at least one URL. Received: base_urls={base_urls!r}")
    return urls


def check_transfer_options(timeout, retries, backoff) -> tuple[float, int, float]:
    """Check the network settings of a fetch.

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


def check_relative_path(relative_path: str) -> str:
    """A path inside the remote tree (no absolute path, no ``..``), in POSIX form."""
    parts = Path(relative_path).parts
    if not parts or Path(relative_path).is_absolute() or ".." in parts:
        raise ValueError(f"`relative_path` must be a path inside the published tree. Received: {relative_path!r}")
    return Path(relative_path).as_posix()


def _writable(root: Path, folder: Path, hint: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (root / ".locks").mkdir(exist_ok=True)
    except OSError as exc:
        raise CacheDirError(f"The cache directory {folder} cannot be created ({exc}). {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CacheDirError(f"The cache directory {folder} is not writable. {hint}")
    if not os.access(root / ".locks", os.W_OK | os.X_OK):
        raise CacheDirError(f"The cache directory {root / '.locks'} is not writable. {hint}")


def _failure_message(label: str, failures: list[tuple[str, str]], dests: list[Path], help: str) -> str:
    tried = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
    paths = "\n".join(f"  {d}" for d in dests)
    return f"Could not download {label} from any source.\nTried:\n{tried}\nCache path(s):\n{paths}\n{help}".rstrip()


def fetch_group(
    label: str,
    relative_paths: list[str],
    *,
    root: Path,
    urls: list[str],
    sha256: Mapping[str, str] | None = None,
    validate: Callable[[dict[str, Path]], None] | None = None,
    recheck: Callable[[dict[str, Path]], None] | None = None,
    verify: bool = False,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    offline: bool = False,
    offline_note: str = "offline mode is on",
    help: str = "",
    cache_hint: str = "Choose a writable cache directory.",
    display: str | None = None,
) -> list[Path]:
    """Fetch files of one folder into the cache ``root``, all or none; return their cache paths.

    :func:`download_action` first decides what to do with the cache (use
    it, download, repair); then, under a lock, each source is tried in turn
    until one gives every file: a download per file with retries, its SHA-256
    and ``validate`` checks passed to it as callbacks.

    Parameters
    ----------
    label : str
        What the files are, for messages.
    relative_paths : list of str
        Paths under each base URL and under ``root`` (one folder).
    root : pathlib.Path
        The cache root.
    urls : list of str
        Base URLs, tried in order (see :func:`parse_urls`).
    sha256 : mapping, optional
        Expected SHA-256 hex digests by relative path.
    validate : callable, optional
        Called with ``{relative path: temporary file}`` of a download;
        raises ``ValueError`` to reject it (the next source is tried).
    recheck : callable, optional
        Called likewise with the cached files before their first use in a
        process; a ``ValueError`` marks them damaged.
    verify : bool
        Check cached files as a download is checked (SHA-256, ``validate``).
    progress : bool
        Progress bars and messages on standard error.
    timeout, retries, backoff
        See :func:`check_transfer_options` (checked by the caller).
    offline : bool
        Forbid network access; ``offline_note`` says why, in messages.
    help : str
        Added to the message of a failure: what else the user can do.
    cache_hint : str
        Added to the message of an unwritable cache.
    display : str, optional
        The relative path named in messages (default the first).

    Raises
    ------
    DownloadError
        If every source fails, or offline mode forbids fetching.
    CacheDirError
        If the cache cannot be written.
    """
    sha256 = dict(sha256 or {})
    dests = [root / rel for rel in relative_paths]
    folder = dests[0].parent
    if any(d.parent != folder for d in dests):
        raise ValueError(f"`relative_paths` must share one folder. Received: relative_paths={relative_paths!r}")

    def cached_problem() -> str | None:
        return _cached_problem(relative_paths, dests, sha256, validate, recheck, verify)

    action, damage = download_action(label, dests, cached_problem, offline=offline, offline_note=offline_note,
                                     help=help, progress=progress)
    if action == "use":
        return dests
    _writable(root, folder, cache_hint)
    with _cache_lock(root, relative_paths[0], label, progress=progress, cache_hint=cache_hint):
        if all(d.is_file() for d in dests) and (action == "download" or cached_problem() is None):
            return dests  # another process fetched (or repaired) them meanwhile
        stem = dests[0].name.split(".")[0] or dests[0].name
        for stale in folder.glob(f".{glob.escape(stem)}.*{_TEMP_SUFFIX}"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        check_digest = functools.partial(_check_digest, sha256)
        failures: list[tuple[str, str]] = []
        for base in urls:
            failure = _fetch_from(base, dict(zip(relative_paths, dests)), check_digest=check_digest,
                                  validate=validate, display=display or relative_paths[0], stem=stem,
                                  transfer={"timeout": timeout, "retries": retries, "backoff": backoff,
                                            "progress": progress}, cache_hint=cache_hint)
            if failure is None:
                return dests
            failures.append(failure)
            _say(progress, f"  failed: {failure[1]}")
    message = _failure_message(label, failures, dests, help)
    if damage is not None:
        message = f"{message}\nThe cached copy there is damaged ({damage}) and was left as it was."
    raise DownloadError(message)


def download_action(label: str, dests: list[Path], cached_problem: Callable[[], str | None], *, offline: bool,
                    offline_note: str, help: str, progress: bool) -> tuple[str, str | None]:
    """What to do with the cached copy of a group of files, before any lock or network access.

    Parameters
    ----------
    label : str
        What the files are, for messages.
    dests : list of pathlib.Path
        The cache paths of the files.
    cached_problem : callable
        Called without arguments when every file is in the cache: why they
        cannot be used, or ``None`` when they are sound.
    offline, offline_note, help, progress
        As for :func:`fetch_group`.

    Returns
    -------
    tuple
        ``(action, damage)``: action ``"use"`` (the cached files are sound),
        ``"download"`` (some are missing) or ``"repair"`` (the cached copy is
        damaged; ``damage`` says how, else ``None``).

    Raises
    ------
    DownloadError
        If the files would have to be fetched while ``offline`` is on.
    """
    if not all(d.is_file() for d in dests):
        if offline:
            missing = "\n".join(f"  {d}" for d in dests if not d.is_file())
            raise DownloadError(
                f"{label} is not in the cache and {offline_note}, so nothing was downloaded. Missing:\n"
                f"{missing}\nAllow network access to download it. {help}".rstrip()
            )
        return "download", None
    damage = cached_problem()
    if damage is None:
        return "use", None
    if offline:
        where = "\n".join(f"  {d}" for d in dests)
        raise DownloadError(
            f"The cached copy of {label} is damaged ({damage}) and {offline_note}, so it was not "
            f"downloaded again. Cache path(s):\n{where}\nAllow network access to download it again, or "
            f"replace the file(s) with good copies. {help}".rstrip()
        )
    log.warning("The cached copy of %s is damaged (%s); downloading it again.", label, damage)
    if progress:
        print(f"The cached copy of {label} is damaged ({damage}); downloading it again.", file=sys.stderr, flush=True)
    return "repair", damage


@contextlib.contextmanager
def _cache_lock(root: Path, name: str, label: str, *, progress: bool, cache_hint: str) -> Iterator[None]:
    """Hold the lock of the files named ``name`` in the cache ``root`` (waiting for another process)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / ".locks" / (name.replace("/", "--") + ".lock")))
    try:
        try:
            lock.acquire(timeout=1)
        except Timeout:
            _say(progress, f"Waiting for another process fetching {label} ...")
            lock.acquire()
    except OSError as exc:
        raise CacheDirError(f"Cannot lock the cache {root} ({exc}). {cache_hint}") from None
    try:
        yield
    finally:
        lock.release()


def _check_digest(sha256: Mapping[str, str], relative_path: str, digest: str) -> None:
    """Reject a downloaded file whose SHA-256 ``digest`` is not the expected one (where one is known)."""
    expected = sha256.get(relative_path)
    if expected and digest != expected.lower():
        raise _Failure(f"SHA-256 mismatch: expected {expected.lower()}, got {digest}")


def _fetch_from(base: str, dests: dict[str, Path], *, check_digest: Callable[[str, str], None],
                validate: Callable[[dict[str, Path]], None] | None, display: str, stem: str,
                transfer: dict, cache_hint: str) -> tuple[str, str] | None:
    """Fetch every file of ``dests`` (relative path -> cache path) from the source ``base``, all or none.

    Each file is downloaded into a temporary folder next to the cache paths
    and passed to ``check_digest(relative_path, sha256)``; then the group is
    passed to ``validate`` and only then moved in.  ``transfer`` holds the
    keyword arguments of :func:`_download` (timeout, retries, backoff, progress).

    Returns
    -------
    tuple or None
        ``None`` once the files are in place, else ``(url, reason)`` of the
        failure (the caller tries the next source).

    Raises
    ------
    CacheDirError
        If the cache cannot be written (no other source would help).
    """
    folder = next(iter(dests.values())).parent
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=_TEMP_SUFFIX, dir=folder))
    except OSError as exc:
        raise CacheDirError(f"Cannot write into the cache {folder} ({exc}). {cache_hint}") from None
    url = _join(base, display)
    try:
        tmp = {rel: tmpdir / dest.name for rel, dest in dests.items()}
        for rel in dests:
            url = _join(base, rel)
            _say(transfer["progress"], f"Downloading {url}")
            check_digest(rel, _download(url, tmp[rel], **transfer))
        if validate is not None:
            url = _join(base, display)
            validate(tmp)
        for rel, dest in dests.items():
            os.replace(tmp[rel], dest)
        _remember_checked(list(dests.values()))
        return None
    except _Failure as exc:
        return url, str(exc)
    except ValueError as exc:
        return url, f"content check failed: {exc}"
    except _LocalWriteError as exc:
        raise CacheDirError(f"{exc}. Free some space. {cache_hint}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


#: Cached files found sound in this process: tuple of paths -> their sizes, mtimes and inodes.
_CHECKED: dict[tuple[str, ...], tuple] = {}


def group_signature(dests: list[Path]) -> tuple:
    """Size, modification time and inode of each file: what tells that cached files changed."""
    return tuple((st.st_size, st.st_mtime_ns, st.st_ino) for st in (os.stat(d) for d in dests))


def _remember_checked(dests: list[Path]) -> None:
    with contextlib.suppress(OSError):
        _CHECKED[tuple(map(str, dests))] = group_signature(dests)


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
        signature = group_signature(dests)
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
