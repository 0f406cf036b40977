"""What every importer produces, and the checks they share.

An importer turns one published log file into :class:`ImportedTrial` records; this module
turns a record into a store row (:func:`store_row`) and gives the importers one way to say
what is wrong with a file: a :class:`~demon_optim.errors.ConfigError` whose message starts
``import 'PATH'`` and names the line (CSV) or the field (JSON), the value and what is
allowed.

A record's trial id is the SHA-256 of the canonical JSON of ``{"import": format, "files":
{role: sha256 of its bytes}, "record": which record of the file}``: the content decides it,
not the path, so importing the same file twice (from anywhere) finds it already stored.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.methods import Value
from demon_optim.study.methods.hyperparameters import jsonable
from demon_optim.study.store import IMPORT_PREFIX

#: ``protocol`` of an imported trial's spec: not one of this harness's training protocols.
IMPORTED_PROTOCOL = 0

# A number as the logs write it: decimal, exponent, nan / inf (pandas and json write those);
# stricter than float(), which also takes "1_000" and surrounding white space.
_NUMBER = re.compile(
    r"[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf|infinity)",
    re.IGNORECASE,
)


def where(path: pathlib.Path, line: int | None = None) -> str:
    """``import 'PATH'`` or ``import 'PATH' line N``: the start of every import error."""
    return f"import {str(path)!r}" + ("" if line is None else f" line {line}")


def read_json(path: pathlib.Path) -> tuple[Any, bytes]:
    """The parsed JSON of ``path`` and its bytes; a ConfigError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{where(path)}: cannot read it: {error.strerror or error}") from None
    try:
        return json.loads(data.decode("utf-8-sig")), data
    except (UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{where(path)}: not valid JSON: {error}") from None


def problem(
    path: pathlib.Path, what: str, got: object, allowed: str, line: int | None = None
) -> ConfigError:
    """``import 'PATH' [line N]: WHAT: got GOT; allowed: ALLOWED`` as a ConfigError."""
    return ConfigError(f"{where(path, line)}: {what}: got {got!r}; allowed: {allowed}")


def parse_number(text: str) -> float | None:
    """A CSV cell as a float (``nan``/``inf`` included); None for an empty cell; raises
    ValueError for anything else."""
    if text == "":
        return None
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    return float(text)


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def hyperparameter(path: pathlib.Path, what: str, raw: object) -> Value | None:
    """A published hyperparameter as a study Value: a number, bool or string, or a list of
    them (a tuple); None (JSON null, "the optimizer's default") is left out by the caller."""
    scalar = (bool, int, float, str)
    if raw is None:
        return None
    if isinstance(raw, scalar):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise problem(path, what, raw, "a finite number, true/false, a string, or a list")
        return raw
    if isinstance(raw, list) and all(isinstance(v, scalar) for v in raw):
        return tuple(raw)
    raise problem(path, what, raw, "a number, true/false, a string, or a list of them")


def name(path: pathlib.Path, what: str, raw: object, line: int | None = None) -> str:
    """A task or method name: any non-empty text (shown escaped, never interpreted)."""
    if not isinstance(raw, str) or not raw.strip():
        raise problem(path, what, raw, "a non-empty string", line)
    return raw.strip()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImportedTrial:
    """One published trial, read from its file, ready to become a store row.

    ``history``: one dict per evaluation after training began, with the keys the source has
    (``epoch`` for per-epoch logs, ``step`` and ``elapsed_s`` for AlgoPerf's timed ones,
    ``val_metric``, ``val_metrics``, ``test_metrics``, ``train_loss``, ...). ``epochs`` and
    ``batch_size`` are 0 where the source does not say them.
    """

    format: str  # "algoperf" | "deepobs"
    file: pathlib.Path  # the main file, absolute
    files: Mapping[str, str]  # role -> sha256 of the bytes read (the main file and sides)
    record: str  # which record of the file ("" for a file holding one trial)
    task: str
    method: str
    hyperparameters: tuple[tuple[str, Value], ...]
    seed: int
    epochs: int
    batch_size: int
    metric: str
    higher_is_better: bool
    status: str  # "done" | "diverged"
    val_metric: float | None
    test_metric: float | None
    history: tuple[dict[str, Any], ...]
    metrics: dict[str, dict[str, float | None]]
    wall_time_s: float = 0.0
    error: str | None = None  # diverged: where
    versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # kept in `source`

    @property
    def trial_id(self) -> str:
        identity = {"import": self.format, "files": dict(self.files), "record": self.record}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return sha256(canonical.encode())


def store_row(trial: ImportedTrial, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The ``trials`` row of an imported trial (JSON columns as Python values), for
    :meth:`~demon_optim.study.store.ResultStore.import_rows`.

    Its spec carries ``about`` (metric, direction; family = the format, a reference outside
    any ranking, schedule = the method's name), so a report reads it without any registry;
    ``started_at`` and ``finished_at`` are when it was imported (the logs do not say reliably
    when the run happened).
    """
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
    hyper = {k: jsonable(v) for k, v in trial.hyperparameters}
    spec = {
        "protocol": IMPORTED_PROTOCOL,
        "task": trial.task,
        "method": trial.method,
        "hyperparameters": hyper,
        "seed": trial.seed,
        "epochs": trial.epochs,
        "batch_size": trial.batch_size,
        "data_dir": None,
        "about": {
            "metric": trial.metric,
            "higher_is_better": trial.higher_is_better,
            "family": trial.format,
            "reference": True,
            "schedule": trial.method,
        },
    }
    done = trial.status == "done"
    return {
        "trial_id": trial.trial_id,
        "task": trial.task,
        "method": trial.method,
        "seed": trial.seed,
        "epochs": trial.epochs,
        "batch_size": trial.batch_size,
        "hyperparameters": hyper,
        "spec": spec,
        "status": trial.status,
        "val_metric": trial.val_metric if done else None,
        "test_metric": trial.test_metric if done else None,
        "epochs_run": len(trial.history),
        "history": list(trial.history),
        "wall_time_s": trial.wall_time_s,
        "versions": dict(trial.versions),
        "error": trial.error,
        "traceback": None,
        "started_at": stamp,
        "finished_at": stamp,
        "owner": None,
        "metrics": trial.metrics,
        "samples": None,
        "origin": IMPORT_PREFIX + trial.format,
        "source": {
            "format": trial.format,
            "file": str(trial.file),
            "sha256": dict(trial.files),
            "record": trial.record,
            **trial.details,
        },
        "execution": None,  # not trained here
    }
