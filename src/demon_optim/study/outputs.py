"""Output files that never destroy what they replace: the CSV export and the run's table.

Two rules, so that a mistyped path or a full disk costs nothing:

* **What may be replaced.** :func:`check_target` refuses (ConfigError, one line naming the
  file, why, and how to proceed) a directory, something that is not a regular file, and an
  existing file that is not a previous output of the same kind (an export's first line is the
  export header; a study table's is ``# Study <name>``) unless ``force``. The results store
  being read, and its ``-wal``/``-shm``/``-journal`` files, are refused even with ``force``:
  paths are compared after resolving symbolic links and relative parts, and by inode
  (``os.path.samefile``), so ``./s.sqlite``, a link to it and a hard link are all it.
  An empty file holds nothing and may be replaced.
* **How it is written.** :func:`replace_atomically` writes a temporary file beside the
  target, flushes it to disk and renames it over the target (``os.replace``, atomic on POSIX
  file systems), so the target is either the old file or the whole new one: a full disk or a
  crash mid-write leaves the previous export intact. An operating-system error becomes
  :class:`~demon_optim.errors.EnvironmentFailure` naming the target and the cause.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import pathlib
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator

from demon_optim.errors import ConfigError, EnvironmentFailure

# The columns every export starts and ends with (``ResultStore.export_csv``); the
# hyperparameter columns found in the store are between them.
EXPORT_HEAD = ("trial_id", "task", "method", "seed", "epochs", "batch_size")
EXPORT_TAIL = ("status", "val_metric", "test_metric", "epochs_run", "wall_time_s", "error")
STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")  # SQLite's files of a store
_SQLITE_HEADER = b"SQLite format 3\x00"
_FIRST_LINE_MAX = 1 << 16  # bytes read to recognise a file


def environment_failure(error: OSError, what: str) -> EnvironmentFailure:
    """One-line :class:`EnvironmentFailure` ``cannot <what>: <cause>`` keeping ``errno``.

    The cause is the operating system's own words (``No space left on device``) from the
    innermost OSError in the chain, so an EnvironmentFailure raised by the store while it
    wrote our temporary file is told as the failure to write the user's file.
    """
    inner = _innermost_os_error(error)
    cause = inner.strerror if inner is not None else str(error) or type(error).__name__
    failure = EnvironmentFailure(f"cannot {what}: {cause}")
    failure.errno = error.errno if inner is None else inner.errno
    return failure


def _innermost_os_error(error: BaseException) -> OSError | None:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__  # set even by `raise ... from None`
    for candidate in reversed(chain):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate
    return None


def first_line(path: pathlib.Path) -> str | None:
    """The first line of ``path`` (UTF-8, without a byte-order mark), or None if unreadable."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_FIRST_LINE_MAX)
    except OSError:
        return None
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def is_export(path: pathlib.Path) -> bool:
    """True if the first line of ``path`` is an export header (see ``EXPORT_HEAD``/``TAIL``)."""
    line = first_line(path)
    if line is None:
        return False
    try:
        (columns,) = list(csv.reader([line]))
    except (csv.Error, ValueError):
        return False
    middle = columns[len(EXPORT_HEAD) : len(columns) - len(EXPORT_TAIL)]
    return (
        len(columns) >= len(EXPORT_HEAD) + len(EXPORT_TAIL)
        and tuple(columns[: len(EXPORT_HEAD)]) == EXPORT_HEAD
        and tuple(columns[len(columns) - len(EXPORT_TAIL) :]) == EXPORT_TAIL
        and all(middle)
        and len(set(middle)) == len(middle)
    )


def _is_sqlite(path: pathlib.Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be looked at)
        return False


def check_target(
    path: pathlib.Path,
    *,
    kind: str,
    recognise: Callable[[pathlib.Path], bool],
    force: bool = False,
    protected: Iterable[pathlib.Path] = (),
    field: str | None = "--out",
    how: str = "choose another file, or pass --force to replace it",
    how_protected: str = "choose another file (a store is never replaced, even with --force)",
) -> pathlib.Path:
    """The real path to write ``path`` to, after refusing what must not be replaced.

    ``kind`` names the output in messages (``"an export"``); ``recognise(real_path)`` says
    whether an existing file is a previous one. ``protected``: results stores, never replaced
    (with their SQLite side files). ``field`` starts the message; ``how`` ends the refusal of
    a file that is not a previous output, ``how_protected`` that of a store. Raises
    ConfigError, having changed nothing.
    """
    real = pathlib.Path(os.path.realpath(path))  # follows links; never raises on loops

    def refuse(why: str, what_to_do: str) -> ConfigError:
        prefix = "" if field is None else f"{field}: "
        return ConfigError(f"{prefix}'{path}' {why}; not written: {what_to_do}")

    for store in protected:
        store_real = os.path.realpath(store)
        for suffix in STORE_SUFFIXES:
            if str(real) == store_real + suffix or _same_file(real, store_real + suffix):
                what = "the results store" if not suffix else f"the results store's {suffix} file"
                raise refuse(f"is {what} ('{store}')", how_protected)
    if os.path.islink(real):  # realpath stopped at a link: a loop
        raise refuse("is a symbolic link that leads nowhere (a loop)", "choose another file")
    if not os.path.lexists(real):
        return real
    if real.is_dir():
        raise refuse("is a directory", f"give a file path, e.g. '{path / 'results.csv'}'")
    mode = real.stat().st_mode
    if not stat.S_ISREG(mode):
        raise refuse("is not a regular file (a device, pipe or socket)", "choose a file")
    if force or real.stat().st_size == 0 or recognise(real):
        return real
    if _is_sqlite(real):
        why = "exists and is an SQLite database (a results store?), not " + kind
    else:
        why = f"exists and is not {kind}"
    raise refuse(why, how)


@contextlib.contextmanager
def replace_atomically(target: pathlib.Path, shown: pathlib.Path | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``target`` to write; on success rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is untouched; an OSError
    becomes EnvironmentFailure naming ``shown`` (the path as the user gave it; default
    ``target``). The new file gets the old one's permissions, else the umask's.
    """
    shown = target if shown is None else shown
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a folder should be
        failure = EnvironmentFailure(
            f"cannot create the folder of '{shown}': a part of that path is a file, not a folder"
        )
        failure.errno = errno.ENOTDIR
        raise failure from None
    except OSError as error:
        raise environment_failure(error, f"create the folder of '{shown}'") from None
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name[:64]}.", suffix=".tmp"
        )
    except OSError as error:
        raise environment_failure(error, f"write '{shown}'") from None
    os.close(descriptor)
    try:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(temporary, mode)
        yield temporary
        with open(temporary, "rb+") as handle:  # on disk before it replaces anything
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        raise environment_failure(error, f"write '{shown}'") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_folder(target.parent)


def write_text(target: pathlib.Path, text: str, shown: pathlib.Path | None = None) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically (see :func:`replace_atomically`)."""
    with (
        replace_atomically(target, shown) as temporary,
        open(temporary, "w", encoding="utf-8") as handle,
    ):
        handle.write(text)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: pathlib.Path) -> None:
    """Make the rename durable (best effort: not every file system can sync a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
