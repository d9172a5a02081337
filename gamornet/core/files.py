"""Writing outputs safely: atomic replacement, the mode of a plain ``open()``, one writer at a time.

- :func:`atomic_path` yields a temporary name beside an output and renames
  it into place only when the block succeeds; the file ends with the mode a
  plain ``open()`` would give it (``0o666`` less the umask).  Its temporary
  names follow :data:`TEMPORARY_NAME`, so :func:`remove_temporaries` can
  clear those of a killed run, and only those.
- :func:`output_lock` holds ``<output>.lock`` (for a directory,
  ``<dir>/.lock``) while an output is written: a second writer, in this or
  another process, fails at once with :class:`OutputLockedError`.
- Errors of the file system name the output the user asked for, never a
  temporary name (:func:`output_error`), so the command line can report
  ``cannot write PATH: CAUSE`` in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator

import filelock

__all__ = [
    "OUTPUT_ERROR_FLAG",
    "TEMPORARY_NAME",
    "OutputLockedError",
    "atomic_path",
    "make_output_dir",
    "resolve_save_dir",
    "output_error",
    "output_lock",
    "remove_temporaries",
]

#: Attribute set to ``True`` on an :class:`OSError` raised because an output could not be written.
OUTPUT_ERROR_FLAG = "gamornet_output"
#: Temporary names of :func:`atomic_path`: ``.{name}.{8 hex digits}.part{suffix}``.
TEMPORARY_NAME = ".{name}.{token}.part{suffix}"
#: Name of the lock file of a directory output.
_DIRECTORY_LOCK = ".lock"


class OutputLockedError(RuntimeError):
    """Another run (in this or another process) is writing the same output."""


def output_error(exc: OSError, path) -> OSError:
    """``exc`` re-addressed to the output ``path`` (same errno, hence same subclass), marked as an output error.

    The command line reports such errors as ``cannot write PATH: CAUSE``.
    """
    new = OSError(exc.errno, exc.strerror or str(exc), os.fspath(path))
    setattr(new, OUTPUT_ERROR_FLAG, True)
    return new


def make_output_dir(path) -> str:
    """Create the output directory ``path`` (and its parents) if needed; errors name it as an output.

    Raises
    ------
    OSError
        If it cannot be created (a parent is a file, no permission...), marked
        like the errors of :func:`atomic_path`.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, exc.filename if exc.filename is not None else path) from exc
    return path


def resolve_save_dir(files_save_path, create: bool = True) -> str | None:
    """Directory for training outputs (created with ``create``); ``None`` for ``/dev/null`` (save nothing).

    The path is joined with file names as a path, so a trailing slash is
    optional.

    Raises
    ------
    ValueError
        If ``files_save_path`` is not a path or names a file.
    """
    if not isinstance(files_save_path, (str, os.PathLike)) or not os.fspath(files_save_path):
        raise ValueError(f"`files_save_path` must be a directory path. Received: files_save_path={files_save_path!r}")
    path = os.fspath(files_save_path)
    if os.path.abspath(path) == os.path.abspath(os.devnull):
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`files_save_path` must be a directory. Received: files_save_path={path!r} (a file)")
    if create:
        make_output_dir(path)
    return path


def _create_temporary(directory: str, base: str, suffix: str) -> tuple[str, int]:
    """Create an empty, unused temporary file; return its path and mode.

    The file is created with mode ``0o666``, so the kernel applies the
    process umask (or the directory's default ACL) exactly as for a plain
    ``open(path, "w")``.  The umask itself is never read: it is process-wide
    state, and reading it with :func:`os.umask` means setting it, which races
    with other threads creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = TEMPORARY_NAME.format(name=base, token=secrets.token_hex(4), suffix=suffix)
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return path, mode
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", os.path.join(directory, f".{base}.*.part"))


@contextlib.contextmanager
def atomic_path(final_path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``final_path``; rename it into place only on success.

    The temporary file exists (empty) when the block starts and ends with
    the mode a plain ``open()`` would give a new file (``0o666`` less the
    umask, e.g. ``0o644`` under umask ``022``), even if the writer replaced
    it.  On failure it is removed and ``final_path`` is left untouched.

    Parameters
    ----------
    final_path : str or os.PathLike
        Where the file should end up.
    suffix : str
        Ending the temporary name must keep (e.g. ``".keras"``, which Keras
        requires of the files it saves).

    Raises
    ------
    OSError
        When the file cannot be created, written or renamed (no space, no
        permission, a missing directory...): the error names ``final_path``
        (not the temporary name) and has its ``gamornet_output`` attribute set.
    """
    final_path = os.fspath(final_path)
    directory, base = os.path.split(os.path.abspath(final_path))
    try:
        tmp, mode = _create_temporary(directory, base, suffix)
    except OSError as exc:
        raise output_error(exc, final_path) from exc
    try:
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # the writer replaced the file with its own
            os.chmod(tmp, mode)
        os.replace(tmp, final_path)
    except OSError as exc:
        if exc.filename not in (None, tmp) or getattr(exc, OUTPUT_ERROR_FLAG, False):
            raise  # about another file (e.g. an input read inside the block)
        raise output_error(exc, final_path) from exc
    finally:
        if os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def remove_temporaries(directory, names: Iterable[str]) -> list[str]:
    """Remove the temporary files :func:`atomic_path` left in ``directory`` for the outputs ``names``.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the outputs are written.
    names : iterable of str
        Output file names, each a literal name or a regular expression of
        names (e.g. ``model_\\d{4}\\.keras``); only temporaries of these are
        touched.

    Returns
    -------
    list of str
        The paths removed.
    """
    alternatives = "|".join(f"(?:{name})" for name in names)
    pattern = re.compile(r"\.(?:" + alternatives + r")\.[A-Za-z0-9_]+\.part(?:\.[A-Za-z0-9]+)*")
    removed = []
    with os.scandir(os.fspath(directory)) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed.append(entry.path)
    return removed


@contextlib.contextmanager
def output_lock(output, name: str = "output", directory: bool = False) -> Iterator[None]:
    """Hold the lock of ``output`` for the duration of the block; fail at once if another run holds it.

    The lock is a :class:`filelock.FileLock` (an advisory ``flock`` that the
    kernel drops when the process ends, however it ends) on ``<output>.lock``,
    or for a ``directory`` output on ``<output>/.lock``.  The lock file is
    removed while still held, just before the lock is released, so a
    finished run leaves nothing behind (filelock 4 refuses a lock taken on a
    file removed meanwhile).

    Parameters
    ----------
    output : str or None
        The output being written (None: nothing to lock).
    name : str
        Argument name used in the error message.
    directory : bool
        ``output`` is a directory (created if missing).

    Raises
    ------
    OutputLockedError
        If another run holds the lock.
    """
    if output is None:
        yield
        return
    output = os.fspath(output)
    if directory:
        make_output_dir(output)
    path = os.path.join(output, _DIRECTORY_LOCK) if directory else output + ".lock"
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OutputLockedError(f"`{name}` is being written by another run, which holds the lock {path}; wait for "
                                f"it to finish or choose another {name}. Received: {name}={output!r}") from None
    except OSError as exc:
        raise output_error(exc, path) from exc
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        lock.release()
