"""Published results beside your own: import other benchmarks' per-trial logs into a store.

Two formats (one module each; their docstrings give the columns and fields read):

* AlgoPerf's ``<submission>/[study_<k>/]<workload>_<framework>/trial_<n>/
  eval_measurements.csv`` with ``hparams.json`` beside it (:mod:`.algoperf`);
* DeepOBS / Crowded Valley run files, ``*.json`` (:mod:`.deepobs`).

:func:`import_paths` reads files or folders (a folder is searched recursively: every
``eval_measurements.csv``, and every ``*.json`` that is a DeepOBS run; AlgoPerf's own JSON
files in a trial folder and JSON files without DeepOBS's fields are skipped and listed),
then writes every trial into the store in **one transaction**: a malformed file is an error
naming it and its line or field, and nothing of that invocation is imported. Imported
trials are rows of the ``trials`` table with ``origin`` ``'import:algoperf'`` or
``'import:deepobs'`` and ``source`` naming the file; their ids are hashed from the files'
contents, so importing a file again imports nothing new. Their tasks and methods need not be
registered: the report shows them apart from the user's own trials, never selects or ranks
them with those (``docs/report.md``).

>>> from demon_optim.study.imports import import_paths
>>> import_paths("runs/quick.sqlite", ["published/algoperf-logs"])  # doctest: +SKIP
ImportSummary(files=12, trials=12, new=12, ...)
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from demon_optim.errors import ConfigError
from demon_optim.study.imports import algoperf, deepobs
from demon_optim.study.imports._records import ImportedTrial, store_row, where

__all__ = [
    "FORMATS",
    "ImportSummary",
    "ImportedTrial",
    "import_paths",
    "read_paths",
    "store_row",
]

FORMATS = (algoperf.FORMAT, deepobs.FORMAT)
_ALLOWED = "an AlgoPerf eval_measurements.csv, a DeepOBS run .json, or a folder holding them"


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_paths` did."""

    store: pathlib.Path
    files: int  # files read
    trials: int  # distinct trials in them
    new: int  # written now
    by_format: dict[str, int]  # trials per format
    skipped: tuple[pathlib.Path, ...] = ()  # JSON files in folders that are not DeepOBS runs

    @property
    def already(self) -> int:
        """Trials that were in the store before (the same file imported again)."""
        return self.trials - self.new

    def message(self) -> str:
        """One line for the command line."""
        formats = ", ".join(f"{k} {n}" for k, n in self.by_format.items() if n)
        text = (
            f"import: {self.trials} trial(s) from {self.files} file(s) ({formats}) into "
            f"'{self.store}': "
        )
        if self.new == 0:
            text += f"nothing new (all {self.trials} were already in the store)"
        else:
            text += f"{self.new} new" + (f", {self.already} already there" if self.already else "")
        if self.skipped:
            shown = ", ".join(str(p) for p in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            text += f"; skipped {len(self.skipped)} JSON file(s) that are not DeepOBS runs: "
            text += shown + more
        return text


def _walk(folder: pathlib.Path) -> Iterable[pathlib.Path]:
    """Every file under ``folder``, in a stable order (sorted names, symlinks not followed)."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for file_name in sorted(names):
            yield pathlib.Path(root) / file_name


def _find(
    paths: Sequence[str | pathlib.Path],
) -> tuple[list[tuple[str, pathlib.Path]], list[pathlib.Path]]:
    """(format, file) for every file to read, and the JSON files skipped in folders."""
    found: list[tuple[str, pathlib.Path]] = []
    skipped: list[pathlib.Path] = []
    seen: set[pathlib.Path] = set()

    def add(kind: str, file: pathlib.Path) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            found.append((kind, file))

    for given in paths:
        path = pathlib.Path(given)
        if path.is_dir():
            before = len(found)
            for file in _walk(path):
                if file.name == algoperf.FILE_NAME:
                    add(algoperf.FORMAT, file)
                elif file.suffix.lower() == ".json":
                    if (file.parent / algoperf.FILE_NAME).exists():
                        continue  # AlgoPerf's hparams.json, meta_data_*.json, flags_*.json
                    raw, _ = deepobs.load(file)
                    if deepobs.looks_like_run(raw):
                        add(deepobs.FORMAT, file)
                    else:
                        skipped.append(file)
            if len(found) == before:
                raise ConfigError(
                    f"{where(path)}: got a folder with no AlgoPerf {algoperf.FILE_NAME} and no "
                    f"DeepOBS run .json under it; allowed: {_ALLOWED}"
                )
        elif path.is_file():
            if path.name == algoperf.FILE_NAME or path.suffix.lower() == ".csv":
                add(algoperf.FORMAT, path)
            elif path.suffix.lower() == ".json":
                add(deepobs.FORMAT, path)
            else:
                raise ConfigError(
                    f"{where(path)}: got a {path.suffix or 'bare'} file; allowed: {_ALLOWED}"
                )
        else:
            what = "nothing there" if not path.exists() else "not a file or folder"
            raise ConfigError(f"{where(path)}: got {what}; allowed: {_ALLOWED}")
    return found, skipped


def read_paths(
    paths: Sequence[str | pathlib.Path],
) -> tuple[list[ImportedTrial], int, list[pathlib.Path]]:
    """Parse every file under ``paths`` (nothing is written): the trials, how many files
    were read, and the JSON files skipped. Raises ConfigError at the first bad file."""
    if not paths:
        raise ConfigError(f"import: got no path; allowed: {_ALLOWED}")
    found, skipped = _find(paths)
    readers = {algoperf.FORMAT: algoperf.read, deepobs.FORMAT: deepobs.read}
    trials: list[ImportedTrial] = []
    for kind, file in found:
        trials.extend(readers[kind](file))
    return trials, len(found), skipped


def import_paths(store: str | pathlib.Path, paths: Sequence[str | pathlib.Path]) -> ImportSummary:
    """Import every trial under ``paths`` into the results store ``store`` (created, or
    migrated to the current schema after a backup, as opening it for writing does).

    All or nothing: every file is parsed before the store is opened, and the trials are
    written in one transaction. Raises ConfigError (a malformed file: its path and line or
    field) or EnvironmentFailure (the store could not be written); then nothing was
    imported.
    """
    from demon_optim.study.store import ResultStore

    trials, files, skipped = read_paths(paths)
    unique = {t.trial_id: t for t in trials}  # one file given twice: one trial
    rows = [store_row(t) for t in unique.values()]
    store = pathlib.Path(store)
    with ResultStore(store) as results:
        new = results.import_rows(rows)
    by_format = {f: sum(1 for t in unique.values() if t.format == f) for f in FORMATS}
    return ImportSummary(store, files, len(unique), new, by_format, tuple(skipped))
