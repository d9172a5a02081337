"""The published GaMorNet models: the local cache, fetched on first use, checked, repaired.

- Cache: ``GAMORNET_HOME`` if set, else the per-user cache directory; files
  keep their published relative paths (:data:`gamornet.published.registry.MODELS`).
- Sources: ``GAMORNET_MODELS_URL`` (one or more base URLs separated by
  whitespace or commas) or an explicit ``base_urls`` list, else
  :data:`gamornet.published.registry.MIRRORS`.  ``GAMORNET_OFFLINE=1``
  forbids network access altogether.
- Checks: a download is checked by SHA-256 where known and by reading its
  weights (:func:`gamornet.weights.validate_hdf5`,
  :func:`gamornet.weights.validate_checkpoint`), passed to the generic
  fetcher (:mod:`gamornet.published.download`) as callbacks.  A cached model
  is checked for damage before its first use in a process; ``verify=True``
  (``gamornet download``) checks it as a download is.  A damaged copy is
  fetched again.
- :func:`resolve_model_path` turns a ``model_load_path`` into a local path:
  a published model's name is fetched, anything else is a path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from gamornet.core.validation import check_input_shape
from gamornet.published.download import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    CacheDirError,
    DownloadError,
    check_relative_path,
    check_transfer_options,
    fetch_group,
    group_signature,
    parse_urls,
)
from gamornet.published.registry import MANUAL_DOWNLOAD_HELP, MIRRORS, MODELS, get_model_info
from gamornet.weights import validate_checkpoint, validate_hdf5

__all__ = [
    "ModelDownloadError",
    "CacheDirError",
    "cache_dir",
    "mirror_urls",
    "is_offline",
    "fetch_file",
    "fetch_model",
    "repair_model",
    "cached_path",
    "is_cached",
    "is_published_model",
    "resolve_model_path",
]

#: A published file or model could not be fetched (or offline mode forbids fetching it).
ModelDownloadError = DownloadError

#: What to do when no source answers.
_HELP = (f"{MANUAL_DOWNLOAD_HELP} GAMORNET_MODELS_URL may name other servers holding the same tree "
         "(ftp://, http(s)://, file://).")
_OFFLINE_NOTE = "GAMORNET_OFFLINE is set (unset it to download)"
_CACHE_HINT = "Set GAMORNET_HOME to a writable directory (or pass `cache_dir`)."


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
    base_urls : str, os.PathLike or iterable, optional
        Base URLs (or local directories).  A string may hold several URLs
        separated by whitespace or commas.  Default: ``GAMORNET_MODELS_URL`` if
        set, else :data:`gamornet.published.registry.MIRRORS`.
    """
    if base_urls is None:
        base_urls = os.environ.get("GAMORNET_MODELS_URL", "").strip() or MIRRORS
    return parse_urls(base_urls)


def is_offline(offline: bool | None = None) -> bool:
    """Whether network access is forbidden (``offline`` if given, else ``GAMORNET_OFFLINE``)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("GAMORNET_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")

def _fetch(label: str, relative_paths: list[str], *, base_urls, cache_dir, offline, **kwargs) -> list[Path]:
    return fetch_group(label, relative_paths, root=_root(cache_dir), urls=mirror_urls(base_urls),
                       offline=is_offline(offline), offline_note=_OFFLINE_NOTE, help=_HELP, cache_hint=_CACHE_HINT,
                       **kwargs)


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
    cache_dir : str or os.PathLike, optional
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
    rel = check_relative_path(relative_path)
    check = None if validate is None else (lambda tmp: validate(tmp[rel]))
    return _fetch(
        repr(rel),
        [rel],
        cache_dir=cache_dir,
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
    shape = check_input_shape(info.input_shape if input_shape is None else input_shape)
    prefix_name = Path(info.path).name

    def check(files: dict[str, Path], at_shape) -> None:
        if flavor == "keras":
            validate_hdf5(files[info.path], at_shape)
        else:
            validate_checkpoint(files[info.files[0]].parent / prefix_name, at_shape)

    def validate(tmp: dict[str, Path]) -> None:
        check(tmp, shape)

    def recheck(cached: dict[str, Path]) -> None:
        check(cached, None)

    _fetch(
        f"the published model {name!r} ({flavor})",
        list(info.files),
        display=info.path,
        cache_dir=cache_dir,
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
    return str(_root(cache_dir) / info.path)


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
            return group_signature(files)
        except OSError:
            return None

    before = state()
    fetch_model(name, flavor, **{**kwargs, "verify": True})
    return state() != before


def is_published_model(model_load_path) -> bool:
    """Whether ``model_load_path`` names a published model (e.g. ``"SDSS_tl"``)."""
    return isinstance(model_load_path, str) and any(model_load_path == name for name, _ in MODELS)


def resolve_model_path(model_load_path, flavor: str = "keras", progress: bool = True) -> str:
    """Local path of a model: a file path as given, or a published model fetched to the cache.

    Parameters
    ----------
    model_load_path : str or os.PathLike
        A path, or the name of a published model (``SDSS_sim``, ``SDSS_tl``,
        ``CANDELS_sim``, ``CANDELS_tl``).
    flavor : {"keras", "tflearn"}
        Which flavour of a published model.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    str
        For Keras, the model file; for TFLearn, the checkpoint prefix.
    """
    if isinstance(model_load_path, os.PathLike):
        return os.fspath(model_load_path)
    if not isinstance(model_load_path, str) or not model_load_path:
        raise ValueError(f"`model_load_path` must be a path or a published model name. "
                         f"Received: model_load_path={model_load_path!r}")
    if not is_published_model(model_load_path):
        return model_load_path
    return fetch_model(model_load_path, flavor, progress=progress)
