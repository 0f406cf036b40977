"""AlgoPerf (MLCommons algorithmic-efficiency) per-trial logs as imported trials.

AlgoPerf's submission runner writes, per tuning trial::

    <experiment_dir>/<experiment_name>/<workload>_<framework>/trial_<n>/
        eval_measurements.csv     one row per evaluation
        hparams.json              the trial's hyperparameters (external tuning; absent for
                                  self-tuning submissions)
        meta_data_0.json          machine and workload facts; ``rng_seed`` in recent versions

and the scoring code reads submissions as ``<submission>/study_<k>/<workload>_<framework>/
trial_<n>/``. So the **task** is the workload (``imagenet_resnet``; the framework, ``jax`` or
``pytorch``, is kept in the trial's versions), the **method** the folder above the workload
folder (the experiment or submission name; a ``study_<k>`` folder between them is skipped,
and ``k`` is the seed when the metadata has no ``rng_seed``), the **hyperparameters**
``hparams.json``.

``eval_measurements.csv`` (pandas' ``to_csv``: a header of column names, one line per
evaluation, an empty cell where a value is missing or NaN). Columns read:

* ``global_step`` (required): the step of the evaluation;
* ``accumulated_submission_time`` (required): training time so far in seconds, evaluation
  excluded (AlgoPerf's score); it is the history's ``elapsed_s``;
* ``validation/<metric>`` (at least the selection metric): ``val_metrics``; ``test/<metric>``
  and ``train/<metric>``: ``test_metrics`` and ``train_metrics`` (``train/loss`` also as
  ``train_loss``); ``*/num_examples`` are counts, not metrics, and are skipped;
* ``total_duration``: wall time since the start (the trial's ``wall_time_s``);
* others (``score``, ``accumulated_eval_time``, ``preemption_count``, ...) are checked to be
  numbers and not kept.

The selection metric is the workload's target metric as AlgoPerf defines it
(:data:`TARGET_METRICS`; a variant such as ``imagenet_resnet_silu`` is its base workload's);
for another workload, the first of :data:`FALLBACK_METRICS` among its validation columns.
Its direction is AlgoPerf's (:data:`LOWER_IS_BETTER`: losses, error rates, WER,
perplexity). The trial's validation and test metrics are those of the last evaluation; an
empty or non-finite selection metric marks the trial ``diverged`` from that evaluation on.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib
import re
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.imports._records import (
    ImportedTrial,
    finite,
    hyperparameter,
    parse_number,
    problem,
    read_json,
    sha256,
    where,
)

FORMAT = "algoperf"
FILE_NAME = "eval_measurements.csv"

#: AlgoPerf's workloads and their target metrics (``Workload.target_metric_name``).
TARGET_METRICS = {
    "criteo1tb": "loss",
    "fastmri": "ssim",
    "imagenet_resnet": "accuracy",
    "imagenet_vit": "accuracy",
    "librispeech_conformer": "wer",
    "librispeech_deepspeech": "wer",
    "ogbg": "mean_average_precision",
    "wmt": "bleu",
    "finewebedu_lm": "ppl",
    "cifar": "accuracy",
    "mnist": "accuracy",
}
#: For a workload not in :data:`TARGET_METRICS`: the first of these it has.
FALLBACK_METRICS = (
    "accuracy",
    "mean_average_precision",
    "ssim",
    "bleu",
    "wer",
    "error_rate",
    "ppl",
    "loss",
)
#: Metrics where lower is better (AlgoPerf's scoring lists them so); any other, higher.
LOWER_IS_BETTER = frozenset({"loss", "ce_loss", "error_rate", "ctc_loss", "wer", "l1_loss", "ppl"})

REQUIRED = ("global_step", "accumulated_submission_time")
_TRIAL = re.compile(r"trial_([0-9]+)")
_STUDY = re.compile(r"study_([0-9]+)")
_FRAMEWORKS = ("jax", "pytorch")
_SPLITS = {"validation": "val_metrics", "test": "test_metrics", "train": "train_metrics"}
_LAYOUT = "<submission>/[study_<k>/]<workload>_<jax|pytorch>/trial_<n>/eval_measurements.csv"


def _layout(path: pathlib.Path) -> tuple[str, str, str, int | None, int]:
    """(workload, framework, submission, study index or None, trial index) from the path."""
    trial_dir = path.parent
    workload_dir = trial_dir.parent
    trial = _TRIAL.fullmatch(trial_dir.name)
    workload, _, framework = workload_dir.name.rpartition("_")
    above = workload_dir.parent
    study = _STUDY.fullmatch(above.name)
    submission_dir = above.parent if study else above
    if not trial or framework not in _FRAMEWORKS or not workload or not submission_dir.name:
        raise problem(path, "folder layout", str(path), _LAYOUT)
    study_index = int(study.group(1)) if study else None
    return workload, framework, submission_dir.name, study_index, int(trial.group(1))


def target_metric(workload: str, available: list[str]) -> str | None:
    """The selection metric of ``workload`` (None if its validation columns lack it)."""
    base = max((w for w in TARGET_METRICS if workload.startswith(w)), key=len, default=None)
    if base is not None:
        metric = TARGET_METRICS[base]
        return metric if metric in available else None
    return next((m for m in FALLBACK_METRICS if m in available), None)


def _hyperparameters(path: pathlib.Path) -> tuple[tuple[tuple[str, Any], ...], bytes | None]:
    """``hparams.json`` beside the log, as (name, value) pairs in the file's order."""
    if not path.exists():
        return (), None
    raw, data = read_json(path)
    if not isinstance(raw, dict):
        raise problem(path, "the file", type(raw).__name__, "a JSON object of hyperparameters")
    pairs = []
    for key, value in raw.items():
        converted = hyperparameter(path, f"field {key!r}", value)
        if converted is not None:
            pairs.append((key, converted))
    return tuple(pairs), data


def _seed(path: pathlib.Path, study: int | None) -> tuple[int, bytes | None]:
    """``rng_seed`` of ``meta_data_0.json`` if it has one, else the study index, else 0."""
    if path.exists():
        raw, data = read_json(path)
        seed = raw.get("rng_seed") if isinstance(raw, dict) else None
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise problem(path, "field 'rng_seed'", seed, "a non-negative integer")
            return seed, data
        return (study or 0), data
    return (study or 0), None


def _rows(path: pathlib.Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise problem(path, "header", "", f"the column names ({', '.join(REQUIRED)}, ...)", 1)
    columns = [cell.strip() for cell in header]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated or "" in columns:
        raise problem(path, "header", ",".join(columns), "distinct, non-empty column names", 1)
    rows = []
    for cells in reader:
        line = reader.line_num
        if not cells:
            continue  # a blank line
        if len(cells) != len(columns):
            raise problem(
                path, "row", f"{len(cells)} cells", f"{len(columns)} (the header's)", line
            )
        rows.append((line, [cell.strip() for cell in cells]))
    return columns, rows


def read(path: str | pathlib.Path) -> list[ImportedTrial]:
    """The trial logged in ``.../trial_<n>/eval_measurements.csv`` (one per file)."""
    path = pathlib.Path(path).absolute()
    workload, framework, submission, study, trial_index = _layout(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(f"{where(path)}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where(path)}: not UTF-8 text: {error}") from None
    try:
        columns, rows = _rows(path, text)
    except csv.Error as error:
        raise ConfigError(f"{where(path)}: not a readable CSV file: {error}") from None
    missing = [c for c in REQUIRED if c not in columns]
    validation = [c.split("/", 1)[1] for c in columns if c.startswith("validation/")]
    validation = [m for m in validation if m != "num_examples"]
    metric = target_metric(workload, validation)
    if metric is None:
        base = next((w for w in TARGET_METRICS if workload.startswith(w)), None)
        wanted = (
            f"validation/{TARGET_METRICS[base]} (the target metric of AlgoPerf's {base})"
            if base
            else "a validation/<metric> column, one of " + ", ".join(FALLBACK_METRICS)
        )
        missing.append(wanted)
    if missing:
        raise ConfigError(
            f"{where(path, 1)}: header: missing column(s) {'; '.join(missing)}; allowed: "
            f"AlgoPerf's columns ({', '.join(REQUIRED)}, validation/<metric>, test/<metric>, "
            "train/<metric>, ...)"
        )
    if not rows:
        raise problem(path, "evaluations", "none", "at least one row after the header", 2)

    history: list[dict[str, Any]] = []
    status, note = "done", None
    last_values: dict[str, float | None] = {}
    for number, (line, cells) in enumerate(rows, start=1):
        values: dict[str, float | None] = {}
        for column, cell in zip(columns, cells, strict=True):
            try:
                values[column] = parse_number(cell)
            except ValueError:
                raise problem(path, column, cell, "a number (or an empty cell)", line) from None
        step, elapsed = values["global_step"], values["accumulated_submission_time"]
        if step is None or not math.isfinite(step) or step < 0 or step != int(step):
            raise problem(
                path,
                "global_step",
                cells[columns.index("global_step")],
                "a non-negative integer",
                line,
            )
        if not finite(elapsed) or elapsed < 0:  # type: ignore[operator]
            text = cells[columns.index("accumulated_submission_time")]
            raise problem(path, "accumulated_submission_time", text, "seconds >= 0", line)
        val = values[f"validation/{metric}"]
        if not finite(val):
            status = "diverged"
            note = (
                f"non-finite validation {metric} ({'an empty cell' if val is None else val}) "
                f"at global step {int(step)} "
                f"(line {line} of {path.name})"
            )
            break
        record: dict[str, Any] = {"eval": number, "step": int(step), "elapsed_s": elapsed}
        record["val_metric"] = val
        for split, key in _SPLITS.items():
            found = {
                c.split("/", 1)[1]: v
                for c, v in values.items()
                if c.startswith(f"{split}/") and not c.endswith("/num_examples") and v is not None
            }
            if found:
                record[key] = found
        if "loss" in record.get("train_metrics", {}):
            record["train_loss"] = record["train_metrics"]["loss"]
        history.append(record)
        last_values = values

    done = status == "done"
    final_val = dict(history[-1]["val_metrics"]) if done else {}
    final_test = dict(history[-1].get("test_metrics", {})) if done else {}
    test = final_test.get(metric)
    # wall time: AlgoPerf's total_duration (training and evaluation) at the last evaluation
    wall = last_values.get("total_duration")
    if not finite(wall):
        wall = history[-1]["elapsed_s"] if history else 0.0
    hparams, hparams_bytes = _hyperparameters(path.parent / "hparams.json")
    seed, meta_bytes = _seed(path.parent / "meta_data_0.json", study)
    files = {FILE_NAME: sha256(data)}
    if hparams_bytes is not None:
        files["hparams.json"] = sha256(hparams_bytes)
    if meta_bytes is not None:
        files["meta_data_0.json"] = sha256(meta_bytes)
    return [
        ImportedTrial(
            format=FORMAT,
            file=path,
            files=files,
            record="",
            task=workload,
            method=submission,
            hyperparameters=hparams,
            seed=seed,
            epochs=0,  # AlgoPerf budgets time and steps, not epochs
            batch_size=0,  # the submission's code chooses it; the logs do not say
            metric=metric,
            higher_is_better=metric not in LOWER_IS_BETTER,
            status=status,
            val_metric=history[-1]["val_metric"] if done else None,
            test_metric=test if done and finite(test) else None,
            history=tuple(history),
            metrics={"val": final_val, "test": final_test} if done else {},
            wall_time_s=float(wall),  # type: ignore[arg-type]
            error=note,
            versions={"framework": framework},
            details={
                "workload": f"{workload}_{framework}",
                "study": study,
                "trial": trial_index,
            },
        )
    ]
