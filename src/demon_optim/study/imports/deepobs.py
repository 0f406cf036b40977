"""DeepOBS (and Crowded Valley, which ran on it) per-run JSON files as imported trials.

DeepOBS's runner writes one JSON object per run, to
``<output_dir>/<testproblem>/<optimizer>/<settings>/random_seed__<seed>__<date>.json``::

    {"testproblem": "cifar10_3c3d", "optimizer_name": "SGD", "batch_size": 128,
     "num_epochs": 100, "random_seed": 42, "weight_decay": null,
     "optimizer_hyperparams": {"lr": 0.01, "momentum": 0.9},
     "training_params": {...},                       # optional
     "train_losses": [...], "valid_losses": [...], "test_losses": [...],
     "train_accuracies": [...], "valid_accuracies": [...], "test_accuracies": [...],
     "minibatch_train_losses": [...]}                # optional

Every per-epoch list has ``num_epochs + 1`` entries: the model is evaluated before training
(entry 0) and after each epoch. ``train_*`` are measured on a training-evaluation subset,
``valid_*`` on the validation set (DeepOBS 1.2 and later; an older file without it cannot
be selected on and is refused), ``test_*`` on the test set; the ``*_accuracies`` lists are
absent for problems without an accuracy (the quadratic and 2-D problems).

Mapping: **task** = ``testproblem``, **method** = ``optimizer_name``, **hyperparameters** =
``optimizer_hyperparams`` (a JSON null, "the default", is left out), plus ``weight_decay``
(the test problem's regulariser) and the ``training_params`` when given (under those names;
``training_<name>`` where a name is taken), **seed** = ``random_seed``, ``epochs`` and
``batch_size`` as given. The selection metric is accuracy when the run has accuracies,
else the loss. History: one record per epoch 1..E (``epoch``, ``train_loss``,
``val_metric``, ``val_metrics``, ``test_metrics``, ``train_metrics``); entry 0 is left out,
as the harness records no epoch 0; DeepOBS records no time.

DeepOBS stops a run whose training loss became NaN or infinite and fills the remaining
epochs with the values of entry 0; an import recognises that filling (the trailing
entries of every loss list equal to entry 0) and marks the trial ``diverged`` after the
last real epoch, as a non-finite value in the lists does.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

from demon_optim.study.imports._records import (
    ImportedTrial,
    hyperparameter,
    name,
    problem,
    read_json,
    sha256,
)

FORMAT = "deepobs"

#: Fields a run file must have (the per-epoch lists: see :data:`LOSSES`).
REQUIRED = (
    "testproblem",
    "optimizer_name",
    "optimizer_hyperparams",
    "random_seed",
    "num_epochs",
    "batch_size",
)
LOSSES = ("train_losses", "valid_losses", "test_losses")
ACCURACIES = ("train_accuracies", "valid_accuracies", "test_accuracies")
#: What makes a JSON file found in a folder a DeepOBS run (else it is skipped).
SIGNATURE = ("testproblem", "optimizer_name")
_SPLITS = (("train", "train_metrics"), ("valid", "val_metrics"), ("test", "test_metrics"))


def looks_like_run(data: Any) -> bool:
    """True for a JSON object with any of :data:`SIGNATURE`'s fields (then it must be one)."""
    return isinstance(data, dict) and any(key in data for key in SIGNATURE)


def load(path: pathlib.Path) -> tuple[Any, bytes]:
    """The parsed JSON of ``path`` and its bytes; ConfigError naming the file otherwise."""
    return read_json(path)


def _integer(path: pathlib.Path, raw: dict, key: str, minimum: int) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise problem(path, f"field {key!r}", value, f"an integer >= {minimum}")
    return value


def _series(path: pathlib.Path, raw: dict, key: str, length: int) -> list[float]:
    """A per-epoch list of numbers (null or NaN: a non-finite value), ``length`` long."""
    values = raw[key]
    if not isinstance(values, list):
        raise problem(path, f"field {key!r}", type(values).__name__, "a list of numbers")
    if len(values) != length:
        raise problem(
            path,
            f"field {key!r}",
            f"{len(values)} entries",
            f"{length} (num_epochs + 1: before training and after each epoch)",
        )
    out = []
    for i, value in enumerate(values):
        if value is None:
            value = math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise problem(path, f"field {key!r}[{i}]", value, "a number")
        out.append(float(value))
    return out


def _filled_from(lists: list[list[float]]) -> int | None:
    """The first index of DeepOBS's filling after an aborted run (every list equal to its
    entry 0 from there on), or None if the run was not filled."""
    length = len(lists[0])
    start = length
    while start > 1 and all(values[start - 1] == values[0] for values in lists):
        start -= 1
    return start if start < length else None


def read(path: str | pathlib.Path) -> list[ImportedTrial]:
    """The run in the DeepOBS JSON file ``path`` (one per file)."""
    path = pathlib.Path(path).absolute()
    raw, data = load(path)
    return [from_json(path, raw, data)]


def from_json(path: pathlib.Path, raw: Any, data: bytes) -> ImportedTrial:
    """The trial of an already parsed run file (``data``: its bytes, for the id)."""
    if not isinstance(raw, dict):
        raise problem(path, "the file", type(raw).__name__, "a JSON object (a DeepOBS run)")
    for key in (*REQUIRED, *LOSSES):
        if key not in raw:
            raise problem(path, f"field {key!r}", "nothing (it is missing)", _allowed(key))
    task = name(path, "field 'testproblem'", raw["testproblem"])
    method = name(path, "field 'optimizer_name'", raw["optimizer_name"])
    seed = _integer(path, raw, "random_seed", 0)
    epochs = _integer(path, raw, "num_epochs", 1)
    batch_size = _integer(path, raw, "batch_size", 1)
    hyper_raw = raw["optimizer_hyperparams"]
    if not isinstance(hyper_raw, dict):
        raise problem(
            path, "field 'optimizer_hyperparams'", hyper_raw, "an object of hyperparameters"
        )
    hyper: dict[str, Any] = {}
    for key, value in hyper_raw.items():
        converted = hyperparameter(path, f"field 'optimizer_hyperparams.{key}'", value)
        if converted is not None:
            hyper[key] = converted
    extra: dict[str, Any] = {}
    if raw.get("weight_decay") is not None:
        extra["weight_decay"] = hyperparameter(path, "field 'weight_decay'", raw["weight_decay"])
    training = raw.get("training_params")
    if training is not None and not isinstance(training, dict):
        raise problem(path, "field 'training_params'", training, "an object")
    for key, value in (training or {}).items():
        converted = hyperparameter(path, f"field 'training_params.{key}'", value)
        if converted is not None:
            extra[key] = converted
    for key, value in extra.items():
        hyper[key if key not in hyper else f"training_{key}"] = value

    length = epochs + 1
    losses = {key: _series(path, raw, key, length) for key in LOSSES}
    present = [key for key in ACCURACIES if key in raw]
    if present and len(present) != len(ACCURACIES):
        absent = next(key for key in ACCURACIES if key not in raw)
        raise problem(
            path,
            f"field {absent!r}",
            "nothing (it is missing)",
            f"all of {', '.join(ACCURACIES)} or none of them",
        )
    accuracies = {key: _series(path, raw, key, length) for key in present}
    if "minibatch_train_losses" in raw:
        _check_numbers(path, raw["minibatch_train_losses"], "minibatch_train_losses")

    metric, higher = ("accuracy", True) if accuracies else ("loss", False)
    selection = accuracies["valid_accuracies"] if accuracies else losses["valid_losses"]
    last = epochs  # the last real epoch
    status, note = "done", None
    filled = _filled_from(list(losses.values()))
    if filled is not None:
        last = filled - 1
        status = "diverged"
        note = (
            f"training stopped in epoch {filled} (a non-finite training loss; DeepOBS filled "
            f"epochs {filled}-{epochs} with the initial values)"
        )
    for epoch in range(1, last + 1):
        if not math.isfinite(selection[epoch]):
            last, status = epoch - 1, "diverged"
            note = f"non-finite validation {metric} ({selection[epoch]}) after epoch {epoch}"
            break

    history = []
    for epoch in range(1, last + 1):
        record: dict[str, Any] = {"epoch": epoch, "val_metric": selection[epoch]}
        record["train_loss"] = losses["train_losses"][epoch]
        for split, key in _SPLITS:
            found = {"loss": losses[f"{split}_losses"][epoch]}
            if accuracies:
                found["accuracy"] = accuracies[f"{split}_accuracies"][epoch]
            record[key] = found
        history.append(record)
    done = status == "done"
    final = history[-1] if done else {}
    test = final.get("test_metrics", {}).get(metric) if done else None
    return ImportedTrial(
        format=FORMAT,
        file=path,
        files={"run": sha256(data)},
        record="",
        task=task,
        method=method,
        hyperparameters=tuple(hyper.items()),
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        metric=metric,
        higher_is_better=higher,
        status=status,
        val_metric=final.get("val_metric") if done else None,
        test_metric=test if test is not None and math.isfinite(test) else None,
        history=tuple(history),
        metrics={"val": dict(final["val_metrics"]), "test": dict(final["test_metrics"])}
        if done
        else {},
        error=note,
    )


def _allowed(key: str) -> str:
    if key in LOSSES:
        return "a list of num_epochs + 1 numbers (DeepOBS 1.2 or later writes valid_losses)"
    if key == "optimizer_hyperparams":
        return "an object of hyperparameters"
    if key in ("testproblem", "optimizer_name"):
        return "a non-empty string"
    return "an integer"


def _check_numbers(path: pathlib.Path, values: Any, key: str) -> None:
    if not isinstance(values, list):
        raise problem(path, f"field {key!r}", type(values).__name__, "a list of numbers")
    for i, value in enumerate(values):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise problem(path, f"field {key!r}[{i}]", value, "a number")
