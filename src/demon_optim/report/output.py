"""Write a report's files into its folder: never over someone else's files, never half-done.

* **Ownership.** The report records what it wrote in a manifest, :data:`MANIFEST`, in the
  folder. A later report may replace and remove those files freely; anything else in the
  folder (a user's own ``report.md``, a notes folder) makes it refuse, with a ConfigError
  naming the folder and the first such file, unless ``force`` (then it writes beside them,
  replacing only the files of the same names, and still never records them as its own).
* **Atomic.** Every file is first written into a staging folder inside the report folder,
  then moved into place with :func:`os.replace` (a rename: no partial file, no space
  needed). A failure while writing (full disk, read-only file system) leaves the earlier
  report untouched. ``index.html`` is moved last, after the earlier one was removed, so a
  folder with an ``index.html`` holds one complete report.
* **One at a time.** A writer holds an exclusive lock on the folder (``flock`` on the folder
  itself, where the platform has it) from its check to its last rename, so two reports
  into one folder (two drivers of one store finishing together) take turns.
* **Errors.** The environment failing comes out as :class:`~demon_optim.errors.
  EnvironmentFailure` (an OSError) naming the path and the cause; an output path that
  exists and is not a folder is a ConfigError.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping

from demon_optim.errors import ConfigError, EnvironmentFailure, invalid

MANIFEST = ".demon-optim-report.json"
"""The file in a report folder listing the files the report wrote there."""
STAGING_PREFIX = ".demon-optim-report-staging-"
SUBFOLDERS = ("tables", "figures", "targets", "budgets")
LAST = "index.html"  # written last: its presence means the report is whole

# A manifest entry the report may own: its own layout, one safe name per level (so a
# tampered manifest cannot make it remove anything outside its own files).
_OWNABLE = re.compile(
    r"^(index\.html|report\.md|topk\.csv|glue\.csv|profiles\.csv|success\.csv"
    r"|(tables|figures|targets|budgets)/[A-Za-z0-9][A-Za-z0-9._+-]*)$"
)


def _failure(path: pathlib.Path, error: OSError) -> EnvironmentFailure:
    cause = error.strerror or str(error)
    return EnvironmentFailure(f"report: cannot write '{path}': {cause}")


def _manifest(out: pathlib.Path) -> set[str]:
    """The files an earlier report recorded in ``out`` (empty if none or unreadable)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return set()
    return {f for f in files if isinstance(f, str) and _OWNABLE.match(f)}


def _foreign(out: pathlib.Path, owned: set[str]) -> str | None:
    """The first entry of ``out`` (sorted, relative) that no report wrote; None if none."""
    try:
        for entry in sorted(os.scandir(out), key=lambda e: e.name):
            name = entry.name
            if name == MANIFEST or (
                name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False)
            ):
                continue
            if name in SUBFOLDERS and entry.is_dir(follow_symlinks=False):
                for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                    rel = f"{name}/{inner.name}"
                    if rel not in owned or inner.is_dir(follow_symlinks=False):
                        return rel
                continue
            if name not in owned or entry.is_dir(follow_symlinks=False):
                return name
    except OSError as error:
        raise EnvironmentFailure(
            f"report: cannot read '{out}': {error.strerror or error}"
        ) from None
    return None


def _prepare(out: pathlib.Path) -> None:
    """Make ``out`` a folder (ConfigError if it, or a parent, exists as something else)."""
    if out.exists() and not out.is_dir():
        raise invalid(
            "out", str(out), "a folder (new, empty, or an earlier report's); it is not a folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        parent = next((p for p in out.parents if p.exists() and not p.is_dir()), out)
        raise invalid(
            "out", str(out), f"a folder path; '{parent}' exists and is not a folder"
        ) from None
    except OSError as error:
        raise _failure(out, error) from None


@contextlib.contextmanager
def _locked(out: pathlib.Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``out`` (no lock file: the folder is locked)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, one writer at a time is up to the user
        yield
        return
    try:
        descriptor = os.open(out, os.O_RDONLY)
    except OSError as error:
        raise EnvironmentFailure(f"report: cannot open '{out}': {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def write_files(
    out_dir: str | pathlib.Path, files: Mapping[str, bytes], force: bool = False
) -> pathlib.Path:
    """Write ``files`` (relative path -> bytes; paths as :data:`_OWNABLE` allows) into
    ``out_dir``; returns the folder. See the module docstring for the rules."""
    out = pathlib.Path(out_dir)
    bad = [rel for rel in files if not _OWNABLE.match(rel)]
    if bad:  # a bug, not a user's mistake: names reach here through naming.file_stems
        raise ValueError(f"report: not a report file name: {bad[0]!r}")
    _prepare(out)
    with _locked(out):
        owned = _check(out, files, force)
        _stage_and_commit(out, files, owned)
    return out


def _check(out: pathlib.Path, files: Mapping[str, bytes], force: bool) -> set[str]:
    """The files an earlier report owns in ``out``; ConfigError if anything else is there
    (unless ``force``) or in the way of a file or subfolder the report writes."""
    owned = _manifest(out)
    foreign = _foreign(out, owned)
    if foreign is not None and not force:
        raise ConfigError(
            f"out: '{out}' holds '{foreign}', which no demon-optim report wrote there; "
            "allowed: a new or empty folder, or one holding only an earlier report "
            "(pass --force, force=True in Python, to write into it anyway)"
        )
    for rel in files:  # only with force: what is in the way is not the report's
        if (out / rel).is_dir() and not (out / rel).is_symlink():
            raise invalid("out", str(out), f"a folder without a folder named '{rel}'")
    for sub in SUBFOLDERS:
        if (out / sub).exists() and not (out / sub).is_dir():
            raise invalid("out", str(out), f"a folder without a file named '{sub}'")
    for entry in out.iterdir():  # staging folders of a killed earlier report (we hold the lock)
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
    return owned


def _stage_and_commit(out: pathlib.Path, files: Mapping[str, bytes], owned: set[str]) -> None:
    """Write everything into a staging folder, then rename it into place, index.html last."""
    names = [rel for rel in files if rel != LAST] + [rel for rel in files if rel == LAST]
    subfolders = [sub for sub in SUBFOLDERS if any(rel.startswith(sub + "/") for rel in files)]
    staging = out / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
    manifests = {
        "interim": sorted(owned | set(files)),  # in place while files move: all are ours
        "final": sorted(files),
    }
    target = out  # what the error names
    try:
        staging.mkdir()
        for sub in subfolders:
            (staging / sub).mkdir()
        for rel in names:
            target = out / rel
            (staging / rel).write_bytes(files[rel])
        target = out / MANIFEST
        for which, listed in manifests.items():
            text = json.dumps({"written_by": "demon-optim report", "files": listed}, indent=1)
            (staging / f"{which}.json").write_text(text + "\n", encoding="utf-8")
        # Commit: renames only (no space needed); index.html last, the old one gone first.
        for sub in subfolders:
            target = out / sub
            (out / sub).mkdir(exist_ok=True)
        target = out / MANIFEST
        os.replace(staging / "interim.json", out / MANIFEST)
        target = out / LAST
        (out / LAST).unlink(missing_ok=True)
        for rel in names:
            target = out / rel
            os.replace(staging / rel, out / rel)
        for rel in sorted(owned - set(files)):  # an earlier report's files this one lacks
            target = out / rel
            if (out / rel).is_file() or (out / rel).is_symlink():
                (out / rel).unlink()
        target = out / MANIFEST
        os.replace(staging / "final.json", out / MANIFEST)
    except OSError as error:
        raise _failure(target, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
